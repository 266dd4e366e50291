using System.Text;
using MimeKit;
using MimeKit.Utils;
using SmtpGateway.Smtp;

namespace SmtpGateway.Mcp;

/// <param name="Message">The whole message, CRLF line endings only, every line at most 998 octets.</param>
/// <param name="SmtpUtf8">An address is not ASCII: the message has UTF-8 headers and needs SMTPUTF8 (RFC 6531).</param>
/// <param name="MessageId">The Message-ID field's value without angle brackets.</param>
public sealed record ComposedMessage(byte[] Message, SmtpPath MailFrom, IReadOnlyList<SmtpPath> Recipients, bool SmtpUtf8, string MessageId);

/// <summary>
/// Builds the message of a checked send_email call with MimeKit. The output is 7-bit apart from SMTPUTF8 addresses: text is
/// quoted-printable and attachments base64 whatever the agent sent, so no line is over-long and no bare CR or LF reaches
/// the wire, which a pipeline that signs and relays the bytes as they are depends on.
/// </summary>
public static class MessageComposer
{
    public static ComposedMessage Compose(EmailRequest request, DateTimeOffset date)
    {
        ArgumentNullException.ThrowIfNull(request);
        var mailFrom = ToPath(request.From);

        // Bcc is only here, in the envelope: a Bcc field would tell every recipient who else got the mail.
        var recipients = request.To.Concat(request.Cc).Concat(request.Bcc)
            .DistinctBy(m => m.Address, StringComparer.OrdinalIgnoreCase)
            .Select(ToPath)
            .ToList();
        var smtpUtf8 = !mailFrom.IsAscii || recipients.Any(r => !r.IsAscii) || request.ReplyTo.Any(m => !Ascii.IsValid(m.Address));

        var messageId = MimeUtils.GenerateMessageId(request.From.Domain);
        var message = new MimeMessage { Subject = request.Subject, Date = date, MessageId = messageId };
        message.From.Add(request.From);
        message.To.AddRange(request.To);
        message.Cc.AddRange(request.Cc);
        message.ReplyTo.AddRange(request.ReplyTo);
        foreach (var (name, value) in request.Headers)
        {
            message.Headers.Add(name, value);
        }

        message.Body = BuildBody(request);

        // Attachments are plain MimeParts, so the TextParts are the bodies; quoted-printable keeps them 7-bit and short-lined.
        foreach (var part in message.BodyParts.OfType<TextPart>())
        {
            part.ContentTransferEncoding = ContentEncoding.QuotedPrintable;
        }

        var options = FormatOptions.Default.Clone();
        options.NewLineFormat = NewLineFormat.Dos;
        options.International = smtpUtf8;
        using var output = new MemoryStream();
        message.WriteTo(options, output);
        return new ComposedMessage(output.ToArray(), mailFrom, recipients, smtpUtf8, messageId);
    }

    static MimeEntity BuildBody(EmailRequest request)
    {
        var builder = new BodyBuilder();
        if (request.Text is not null)
        {
            builder.TextBody = NormaliseNewLines(request.Text);
        }

        if (request.Html is not null)
        {
            builder.HtmlBody = NormaliseNewLines(request.Html);
        }

        foreach (var attachment in request.Attachments)
        {
            builder.Attachments.Add(new MimePart(ContentType.Parse(attachment.ContentType))
            {
                Content = new MimeContent(new MemoryStream(attachment.Content, writable: false)),
                ContentDisposition = new ContentDisposition(ContentDisposition.Attachment),
                ContentTransferEncoding = ContentEncoding.Base64,
                FileName = attachment.FileName,
            });
        }

        return builder.ToMessageBody();
    }

    /// <summary>
    /// One newline convention before MimeKit sees the text: it then writes every line break as CRLF, where a lone CR or LF
    /// left in the text could reach the output bare.
    /// </summary>
    static string NormaliseNewLines(string text) => text.Replace("\r\n", "\n", StringComparison.Ordinal).Replace('\r', '\n');

    static SmtpPath ToPath(MailboxAddress mailbox) =>
        EmailRequestParser.EnvelopePath(mailbox.Address)
        ?? throw new ArgumentException($"'{mailbox.Address}' is not an SMTP path; requests come from EmailRequestParser", nameof(mailbox));
}
