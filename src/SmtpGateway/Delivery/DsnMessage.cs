using System.Buffers;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery;

/// <summary>One recipient reported in a DSN.</summary>
/// <param name="Recipient">Envelope recipient (Final-Recipient).</param>
/// <param name="Reply">Last reply, e.g. "550 5.1.1 No such user" (Diagnostic-Code).</param>
/// <param name="RemoteHost">"mx.example.net[192.0.2.1]:25" or null (Remote-MTA).</param>
/// <param name="Expired">True when the recipient failed because the message outlived the retry period.</param>
internal sealed record DsnRecipient(string Recipient, string Reply, string? RemoteHost, bool Expired);

/// <summary>
/// Builds a delivery status notification (RFC 3464: multipart/report of RFC 6522 with a message/delivery-status part)
/// for recipients that failed, and queues it through the spool like any other message: envelope sender null
/// (RFC 5321 section 4.5.5, so it can never cause another DSN), recipient the original envelope sender, tenant the
/// original's (so it leaves through the same tenant's egress, and its bounces are attributed to that tenant).
/// Returns only the original's header section (text/rfc822-headers), never its body.
/// Every piece of remote text (replies, host names) is reduced to printable ASCII on one line, so a hostile
/// reply cannot add header fields or MIME parts to the report.
/// </summary>
internal sealed class DsnGenerator(IMessageSpool spool, string reportingMta, int maxHeaderBytes, TimeProvider time, ILogger logger)
{
    /// <summary>Longest text we copy from a remote reply into a field (RFC 5322 section 2.1.1 keeps lines under 998).</summary>
    const int MaxFieldText = 700;

    /// <summary>Queues a DSN for <paramref name="failed"/>; returns its queue id, or null when none is due (null sender). Throws when the spool cannot store it.</summary>
    public async Task<string?> QueueAsync(SpooledMessage original, IReadOnlyList<DsnRecipient> failed, CancellationToken cancellationToken)
    {
        if (failed.Count == 0)
        {
            return null;
        }

        var envelope = original.Envelope;
        if (envelope.MailFrom.Length == 0)
        {
            // RFC 5321 section 4.5.5 / RFC 3464 section 2: never a DSN about a message with the null reverse-path.
            DeliveryLog.DsnSuppressed(logger, envelope.Id);
            return null;
        }

        if (envelope.Inbound)
        {
            // Mail accepted unauthenticated for a tenant's domain: its reverse-path is unverified, so a DSN in the
            // tenant's name would be backscatter to whoever the sender claimed to be (ARCHITECTURE promise 6).
            DeliveryLog.DsnSuppressed(logger, envelope.Id);
            return null;
        }

        var headers = await ReadHeaderSectionAsync(original, maxHeaderBytes, cancellationToken).ConfigureAwait(false);
        var id = spool.NewId();
        var now = time.GetUtcNow();
        var bytes = Build(id, reportingMta, envelope, failed, headers, now);
        var dsnEnvelope = new SpoolEnvelope(id, envelope.TenantId, "", [envelope.MailFrom], now, "127.0.0.1", "dsn",
            SmtpUtf8: envelope.SmtpUtf8, EightBitMime: headers.AsSpan().IndexOfAnyInRange((byte)0x80, (byte)0xFF) >= 0);
        await spool.CommitAsync(dsnEnvelope, new ReadOnlySequence<byte>(bytes), cancellationToken).ConfigureAwait(false);
        DeliveryLog.DsnQueued(logger, envelope.Id, id, failed.Count);
        DeliveryMetrics.DsnQueued(envelope.TenantId ?? "default");
        return id;
    }

    /// <summary>The DSN message, CRLF line ends.</summary>
    internal static byte[] Build(string dsnId, string reportingMta, SpoolEnvelope original, IReadOnlyList<DsnRecipient> failed, byte[] originalHeaders, DateTimeOffset now)
    {
        var mta = Sanitize(reportingMta);
        var boundary = $"{dsnId}/{mta}";
        var sender = Sanitize(original.MailFrom);
        var text = new StringBuilder();
        void Line(string line = "") => text.Append(line).Append("\r\n");

        Line($"Date: {Rfc5322Date(now)}");
        Line($"From: Mail Delivery System <MAILER-DAEMON@{mta}>");
        Line($"To: <{sender}>");
        Line(failed.All(f => f.Expired) ? "Subject: Undelivered Mail Returned to Sender (delivery time expired)" : "Subject: Undelivered Mail Returned to Sender");
        Line($"Message-ID: <{dsnId}@{mta}>");
        Line("Auto-Submitted: auto-replied"); // RFC 3834 section 5: an automatic response, not to be answered automatically.
        Line("MIME-Version: 1.0");
        Line($"Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"");
        Line();
        Line("This is a MIME-encapsulated message.");
        Line();

        // Part 1: for people.
        Line($"--{boundary}");
        Line("Content-Description: Notification");
        Line("Content-Type: text/plain; charset=us-ascii");
        Line();
        Line($"This is the mail system at host {mta}.");
        Line();
        Line($"Your message (queue id {Sanitize(original.Id)}, received {Rfc5322Date(original.ReceivedAt)})");
        Line("could not be delivered to the following recipient(s):");
        Line();
        foreach (var f in failed)
        {
            Line($"<{Sanitize(f.Recipient)}>: {(f.Expired ? "delivery time expired; last reply" : "refused")}");
            Line($"    {Sanitize(f.Reply)}");
        }

        Line();

        // Part 2: RFC 3464 section 2.2 per-message fields, then section 2.3 per-recipient fields.
        Line($"--{boundary}");
        Line("Content-Description: Delivery report");
        Line("Content-Type: message/delivery-status");
        Line();
        Line($"Reporting-MTA: dns; {mta}");
        Line($"X-Queue-ID: {Sanitize(original.Id)}");
        Line($"Arrival-Date: {Rfc5322Date(original.ReceivedAt)}");
        foreach (var f in failed)
        {
            Line();
            Line($"Final-Recipient: rfc822; {Sanitize(f.Recipient)}");
            Line("Action: failed");
            Line($"Status: {Status(f)}");
            if (f.RemoteHost is { } host && HostName(host) is { Length: > 0 } name)
            {
                Line($"Remote-MTA: dns; {name}");
            }

            Line($"Diagnostic-Code: smtp; {Sanitize(f.Reply)}");
            Line($"Last-Attempt-Date: {Rfc5322Date(now)}");
        }

        Line();

        // Part 3: the original header section only (RFC 6522 section 3: text/rfc822-headers).
        Line($"--{boundary}");
        Line("Content-Description: Undelivered Message Headers");
        Line("Content-Type: text/rfc822-headers");
        Line();
        var head = Encoding.ASCII.GetBytes(text.ToString());
        var tail = Encoding.ASCII.GetBytes($"\r\n--{boundary}--\r\n");
        var result = new byte[head.Length + originalHeaders.Length + tail.Length];
        head.CopyTo(result, 0);
        originalHeaders.CopyTo(result, head.Length);
        tail.CopyTo(result, head.Length + originalHeaders.Length);
        return result;
    }

    /// <summary>
    /// RFC 3464 section 2.3.4 Status from the enhanced code in the reply (RFC 3463), else from the reply's class.
    /// Expiry is 4.4.7 (RFC 3463: delivery time expired), whatever the last transient reply was.
    /// </summary>
    internal static string Status(DsnRecipient f)
    {
        if (f.Expired)
        {
            return "4.4.7";
        }

        var parts = f.Reply.Split(' ', 3);
        if (parts.Length >= 2 && IsEnhancedCode(parts[1]))
        {
            return parts[1];
        }

        return parts[0].StartsWith('4') ? "4.0.0" : "5.0.0";
    }

    static bool IsEnhancedCode(string s)
    {
        var p = s.Split('.');
        return p.Length == 3 && p[0] is "2" or "4" or "5"
            && p[1].Length is >= 1 and <= 3 && p[1].All(char.IsAsciiDigit)
            && p[2].Length is >= 1 and <= 3 && p[2].All(char.IsAsciiDigit);
    }

    /// <summary>"mx.example.net[192.0.2.1]:25" → "mx.example.net".</summary>
    static string HostName(string peer)
    {
        var end = peer.IndexOfAny(['[', ':']);
        return Sanitize(end < 0 ? peer : peer[..end]);
    }

    /// <summary>
    /// Remote text made safe for one header field line: every control character (CR and LF included), DEL and non-ASCII
    /// becomes a space or '?', runs of spaces collapse, and the length is capped. Nothing survives that could end the
    /// line, start a header field or a MIME boundary on a line of its own.
    /// </summary>
    internal static string Sanitize(string? value)
    {
        if (string.IsNullOrEmpty(value))
        {
            return "";
        }

        var builder = new StringBuilder(Math.Min(value.Length, MaxFieldText));
        var space = false;
        foreach (var c in value)
        {
            if (builder.Length >= MaxFieldText)
            {
                break;
            }

            var ch = c is < ' ' or '\u007f' ? ' ' : c > '\u007e' ? '?' : c;
            if (ch == ' ')
            {
                if (space || builder.Length == 0)
                {
                    continue;
                }

                space = true;
            }
            else
            {
                space = false;
            }

            builder.Append(ch);
        }

        return builder.ToString().TrimEnd();
    }

    static string Rfc5322Date(DateTimeOffset time) => time.ToUniversalTime().ToString("ddd, d MMM yyyy HH:mm:ss '+0000'", CultureInfo.InvariantCulture);

    /// <summary>The original's header section up to its empty line, CRLF-terminated, at most <paramref name="max"/> bytes (cut at a line end).</summary>
    static async Task<byte[]> ReadHeaderSectionAsync(SpooledMessage message, int max, CancellationToken cancellationToken)
    {
        var stream = message.OpenContent();
        await using (stream.ConfigureAwait(false))
        {
            var buffer = new byte[Math.Max(0, max)];
            var read = 0;
            while (read < buffer.Length)
            {
                var n = await stream.ReadAsync(buffer.AsMemory(read), cancellationToken).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                read += n;
            }

            var data = buffer.AsSpan(0, read);
            var end = data.IndexOf("\r\n\r\n"u8);
            if (end >= 0)
            {
                return data[..(end + 2)].ToArray();
            }

            if (data.StartsWith("\r\n"u8))
            {
                return [];
            }

            // No empty line within the limit: keep whole lines only.
            var lastLine = data.LastIndexOf("\r\n"u8);
            return lastLine < 0 ? [] : data[..(lastLine + 2)].ToArray();
        }
    }
}
