using System.Text;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>
/// One message as Postfix smtp-sink dumped it (<c>smtp-sink -d template</c>, Postfix 3.7 smtpstone/smtp-sink.c):
/// <code>
/// X-Client-Addr: 127.0.0.1
/// X-Client-Proto: ESMTP
/// X-Helo-Args: &lt;EHLO argument&gt;          (only when the client sent HELO/EHLO)
/// X-Mail-Args: &lt;a@b&gt; BODY=8BITMIME      (everything after "MAIL FROM:")
/// X-Rcpt-Args: &lt;c@d&gt;                   (one per RCPT)
/// Received: from &lt;helo&gt; ([127.0.0.1])
/// 	by &lt;host&gt; (smtp-sink) with ESMTP id 1a2b3c4d;
/// 	&lt;RFC 2822 date&gt;
/// &lt;the message as received, dot-unstuffed, with every CR byte removed&gt;
/// &lt;one empty line&gt;
/// </code>
/// smtp-sink drops every '\r' it reads in DATA (so CRLF becomes LF and a bare CR disappears) and the first '.'
/// of each line (dot-unstuffing); everything else is written as received. It creates the file at MAIL, writes it
/// while DATA arrives, closes it before it answers the final dot with 250, and unlinks it when the transaction
/// is aborted (RSET, EHLO, disconnect).
/// </summary>
internal sealed class SinkMessage
{
    public required string Path { get; init; }

    /// <summary>The X-Mail-Args value (sender and MAIL parameters).</summary>
    public required string MailArgs { get; init; }

    /// <summary>
    /// The shape of a tenant's VERP return path in MailArgs (issue 7): the gateway never sends the client's MAIL FROM
    /// onwards, but <c>b+&lt;queue id&gt;.&lt;recipient hash&gt;.&lt;key&gt;&lt;mac&gt;@&lt;the tenant's bounce domain&gt;</c>.
    /// </summary>
    public static string VerpPattern(string bounceDomain) =>
        @"^<b\+[0-9a-f]{20}\.[0-9a-f]{8}\.[a-z0-9][a-z2-7]{16}@" + System.Text.RegularExpressions.Regex.Escape(bounceDomain) + ">";

    public required IReadOnlyList<string> RcptArgs { get; init; }

    public string? HeloArgs { get; init; }

    /// <summary>Whether a RCPT of this transaction was <paramref name="address"/> (Postfix's smtp client adds ORCPT=: the address is the first word).</summary>
    public bool HasRecipient(string address) => RcptArgs.Any(r => r.Split(' ')[0] == $"<{address}>");

    /// <summary>The message as the gateway sent it, as smtp-sink stored it (LF line ends), Latin-1 decoded (one char per byte).</summary>
    public required string Content { get; init; }

    /// <summary>
    /// Content split into the topmost header field (with its continuation lines, the one the gateway adds) and the
    /// rest; null when the content does not start with a Received field.
    /// </summary>
    public (string Received, string Body)? SplitTopReceived()
    {
        if (!Content.StartsWith("Received:", StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        var end = Content.IndexOf('\n', StringComparison.Ordinal);
        while (end >= 0 && end + 1 < Content.Length && Content[end + 1] is ' ' or '\t')
        {
            end = Content.IndexOf('\n', end + 1);
        }

        return end < 0 ? null : (Content[..(end + 1)], Content[(end + 1)..]);
    }

    /// <summary>A header value from the content's header section (first occurrence), or null.</summary>
    public string? Header(string name)
    {
        foreach (var line in Content.Split('\n'))
        {
            if (line.Length == 0)
            {
                return null;
            }

            if (line.StartsWith(name + ":", StringComparison.OrdinalIgnoreCase))
            {
                return line[(name.Length + 1)..].Trim();
            }
        }

        return null;
    }

    /// <summary>What the dump of <paramref name="message"/> looks like once smtp-sink has written it: CRs removed.</summary>
    public static string AsDumped(ReadOnlySpan<byte> message) => Encoding.Latin1.GetString(message).Replace("\r", "", StringComparison.Ordinal);

    /// <summary>Parses a closed dump file; null when it is not (yet) a complete dump.</summary>
    public static SinkMessage? TryParse(string path, byte[] bytes)
    {
        var text = Encoding.Latin1.GetString(bytes);
        if (!text.EndsWith("\n\n", StringComparison.Ordinal))
        {
            return null;
        }

        var pos = 0;
        string? helo = null, mail = null;
        var rcpts = new List<string>();
        while (true)
        {
            var nl = text.IndexOf('\n', pos);
            if (nl < 0)
            {
                return null;
            }

            var line = text[pos..nl];
            if (line.StartsWith("X-Client-Addr: ", StringComparison.Ordinal) || line.StartsWith("X-Client-Proto: ", StringComparison.Ordinal))
            {
            }
            else if (line.StartsWith("X-Helo-Args: ", StringComparison.Ordinal))
            {
                helo = line["X-Helo-Args: ".Length..];
            }
            else if (line.StartsWith("X-Mail-Args: ", StringComparison.Ordinal))
            {
                mail = line["X-Mail-Args: ".Length..];
            }
            else if (line.StartsWith("X-Rcpt-Args: ", StringComparison.Ordinal))
            {
                rcpts.Add(line["X-Rcpt-Args: ".Length..]);
            }
            else if (line.StartsWith("Received: ", StringComparison.Ordinal))
            {
                // smtp-sink's own three-line Received field ends its block.
                var by = text.IndexOf('\n', nl + 1);
                var date = by < 0 ? -1 : text.IndexOf('\n', by + 1);
                if (date < 0 || !text[(nl + 1)..by].Contains("(smtp-sink)", StringComparison.Ordinal))
                {
                    return null;
                }

                pos = date + 1;
                break;
            }
            else
            {
                return null;
            }

            pos = nl + 1;
        }

        if (mail is null)
        {
            return null;
        }

        return new SinkMessage
        {
            Path = path,
            HeloArgs = helo,
            MailArgs = mail,
            RcptArgs = rcpts,
            Content = text[pos..^1],
        };
    }
}
