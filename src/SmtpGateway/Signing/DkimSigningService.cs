using System.Buffers;
using System.Diagnostics.Metrics;
using System.Runtime.InteropServices;
using System.Text;
using MimeKit;
using SmtpGateway.Audit;
using SmtpGateway.Diagnostics;
using SmtpGateway.Identity;

namespace SmtpGateway.Signing;

/// <summary>What the Listener calls at end of DATA for a tenant's outbound message.</summary>
public interface IMessageSigner
{
    /// <summary>
    /// DKIM-Signature header lines (CRLF-terminated) to put in front of the message. Empty only when
    /// <paramref name="signingRequired"/> is false (the tenant's "Dkim:Unsigned") and the tenant has no active selector
    /// for the From domain. Throws <see cref="SigningException"/> (→ 451 4.3.0) when signing is required and there is no
    /// active selector, when the selector file is unreadable or corrupt, and when the HSM cannot sign.
    /// </summary>
    /// <param name="message">The message as it will be queued (without our Received field), or its first part when <paramref name="tail"/> is set.</param>
    /// <param name="tail">The rest of the message, read from its current position (a spilled body), or null.</param>
    byte[] Sign(string tenantId, string fromAddress, ReadOnlySequence<byte> message, Stream? tail, string sessionId, bool signingRequired);
}

/// <summary>
/// Chooses the keys from the session's tenant and the header From domain (which sender binding has already proven
/// the tenant owns): nothing in the message can select another tenant's key. Signs with every active selector of
/// the domain (Ed25519 and RSA side by side when both are active, RFC 8463 section 5).
/// </summary>
public sealed class DkimSigningService(DkimKeyStore store, IDkimKeySigner keys, IAuditLog audit, TimeProvider time, TimeSpan? signatureLifetime) : IMessageSigner
{
    /// <summary>Always signed, and over-signed (listed once more than present) so nobody can add another instance later.</summary>
    static readonly string[] AlwaysSigned = ["from", "to", "subject", "date", "message-id"];

    /// <summary>RFC 6376 section 5.4.1's recommended set (plus MIME headers): signed, and over-signed, when present.</summary>
    static readonly string[] SignedWhenPresent =
    [
        "reply-to", "cc", "sender", "in-reply-to", "references", "mime-version", "content-type", "content-transfer-encoding",
        "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-message-id",
        "list-id", "list-help", "list-unsubscribe", "list-unsubscribe-post", "list-subscribe", "list-post", "list-owner", "list-archive",
    ];

    readonly Counter<long> _signs = Telemetry.Meter.CreateCounter<long>(Telemetry.DkimSignatures, description: "DKIM signatures made, per tenant and algorithm");
    readonly Counter<long> _failures = Telemetry.Meter.CreateCounter<long>(Telemetry.DkimFailures, description: "DKIM signing failures, per tenant");

    /// <summary>A message wholly in memory.</summary>
    public byte[] Sign(string tenantId, string fromAddress, ReadOnlySequence<byte> message, string sessionId, bool signingRequired) =>
        Sign(tenantId, fromAddress, message, null, sessionId, signingRequired);

    public byte[] Sign(string tenantId, string fromAddress, ReadOnlySequence<byte> message, Stream? tail, string sessionId, bool signingRequired)
    {
        var domain = DomainName.OfAddress(fromAddress);
        try
        {
            // Every way of not finding keys is inside the try: a missing, unreadable or corrupt selector file is counted
            // and audited like an HSM failure, and reaches the session as SigningException (451), never as a crash.
            if (domain is null)
            {
                if (signingRequired)
                {
                    throw new SigningException("the header From address has no domain to sign for");
                }

                return [];
            }

            var selectors = store.ActiveFor(tenantId, domain);
            if (selectors.Count == 0)
            {
                if (signingRequired)
                {
                    // Fail closed: a tenant that has not opted out ("Dkim:Unsigned") never sends unsigned mail.
                    throw new SigningException($"tenant '{tenantId}' has no active DKIM selector for {domain}");
                }

                return [];
            }

            // Parsed in place: no copy of the message, and persistent, so MimeKit's body parts refer to ranges of
            // this stream instead of copying their content (the stream stays open until both signatures are made).
            using var stream = MessageStream(message, tail);
            var parsed = MimeMessage.Load(ParserOptions.Default, stream, persistent: true);
            var fields = HeadersToSign(parsed);

            // RSA first, Ed25519 on top: the order does not matter to verifiers; DKIM-Signature fields are not in h=.
            // Each header goes in front of the ones before it, so the output lists them in the reverse order.
            var headers = new List<byte[]>(selectors.Count);
            var length = 0;
            foreach (var ed25519Pass in (ReadOnlySpan<bool>)[false, true])
            {
                foreach (var selector in selectors)
                {
                    if ((selector.Algorithm == DkimAlgorithm.Ed25519) != ed25519Pass)
                    {
                        continue;
                    }

                    var signer = new HsmDkimSigner(keys, tenantId, selector, time, signatureLifetime);
                    signer.Sign(parsed, fields);
                    var header = RawHeader(parsed.Headers[0]);
                    headers.Add(header);
                    length += header.Length;
                    parsed.Headers.RemoveAt(0);
                    _signs.Add(1, new KeyValuePair<string, object?>("tenant", tenantId), new KeyValuePair<string, object?>("algorithm", AlgorithmTag(selector.Algorithm)));
                }
            }

            var output = new byte[length];
            var at = 0;
            for (var i = headers.Count - 1; i >= 0; i--)
            {
                headers[i].CopyTo(output, at);
                at += headers[i].Length;
            }

            return output;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            _failures.Add(1, new KeyValuePair<string, object?>("tenant", tenantId));
            audit.Write(new AuditEvent
            {
                Action = AuditActions.DkimSign,
                Result = "failed",
                Reason = ex is SigningException ? ex.Message : ex.GetType().Name,
                Tenant = tenantId,
                SessionId = sessionId,
                Subject = domain,
            });
            throw ex as SigningException ?? new SigningException("DKIM signing failed", ex);
        }
    }

    static List<string> HeadersToSign(MimeMessage message)
    {
        var counts = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        foreach (var header in message.Headers.Concat(message.Body?.Headers ?? []))
        {
            counts[header.Field] = counts.GetValueOrDefault(header.Field) + 1;
        }

        var fields = new List<string>();
        foreach (var name in AlwaysSigned)
        {
            fields.AddRange(Enumerable.Repeat(name, counts.GetValueOrDefault(name) + 1));
        }

        foreach (var name in SignedWhenPresent)
        {
            if (counts.GetValueOrDefault(name) is > 0 and var n)
            {
                fields.AddRange(Enumerable.Repeat(name, n + 1));
            }
        }

        return fields;
    }

    /// <summary>
    /// The header exactly as MimeKit folded it when it computed the signature (its relaxed form is what was signed;
    /// re-folding it ourselves could move a space inside h=), with every line ending made CRLF: MimeKit folds with the
    /// platform newline, and a bare LF must never reach the wire. Byte for byte what
    /// <c>$"{Field}:{ASCII(RawValue).Replace("\r\n", "\n").TrimEnd('\n').Replace("\n", "\r\n")}\r\n"</c> gives, without the strings.
    /// </summary>
    static byte[] RawHeader(Header header)
    {
        var raw = header.RawValue;

        // CRLF and LF both count as one line ending; line endings at the very end are dropped (the CRLF below ends it).
        var end = raw.Length;
        while (end > 0 && raw[end - 1] == (byte)'\n')
        {
            end -= end > 1 && raw[end - 2] == (byte)'\r' ? 2 : 1;
        }

        var field = Encoding.ASCII.GetBytes(header.Field);
        var output = new byte[field.Length + 1 + (2 * end) + 2];
        field.CopyTo(output, 0);
        var n = field.Length;
        output[n++] = (byte)':';
        for (var i = 0; i < end; i++)
        {
            var b = raw[i];
            if (b == (byte)'\r' && i + 1 < end && raw[i + 1] == (byte)'\n')
            {
                continue; // the LF that follows writes the CRLF
            }

            if (b == (byte)'\n')
            {
                output[n++] = (byte)'\r';
            }

            output[n++] = b > 0x7F ? (byte)'?' : b; // what Encoding.ASCII made of a non-ASCII byte
        }

        output[n++] = (byte)'\r';
        output[n++] = (byte)'\n';
        return output.AsSpan(0, n).ToArray();
    }

    static string AlgorithmTag(DkimAlgorithm algorithm) => algorithm switch
    {
        DkimAlgorithm.Rsa2048 => "rsa2048",
        DkimAlgorithm.Ed25519 => "ed25519",
        _ => algorithm.ToString().ToLowerInvariant(),
    };

    /// <summary>
    /// A read-only, seekable view of the message for MimeKit's persistent parse: the listener's buffer itself when the
    /// message is one array segment (a 4 KiB message is), else a stream over the segments; nothing is copied either way.
    /// </summary>
    static Stream MessageStream(in ReadOnlySequence<byte> message, Stream? tail)
    {
        Stream head = message.IsSingleSegment && MemoryMarshal.TryGetArray(message.First, out var segment)
            ? new MemoryStream(segment.Array!, segment.Offset, segment.Count, writable: false)
            : new ReadOnlySequenceStream(message);
        if (tail is null)
        {
            return head;
        }

        // A spilled body stays on disk: MimeKit's persistent parse reads ranges of it instead of loading it. The tail
        // belongs to the caller (the spool copies it next), so it is left open.
        var chained = new MimeKit.IO.ChainedStream();
        chained.Add(head, leaveOpen: false);
        chained.Add(tail, leaveOpen: true);
        return chained;
    }
}
