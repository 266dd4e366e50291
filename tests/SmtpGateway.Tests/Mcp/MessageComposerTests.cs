using System.Text;
using System.Text.Json.Nodes;
using MimeKit;
using SmtpGateway.Mcp;
using static SmtpGateway.Tests.Mcp.McpArguments;

namespace SmtpGateway.Tests.Mcp;

/// <summary>The message the send_email tool submits: what MimeKit reads back, and wire hygiene whatever the agent sent.</summary>
public sealed class MessageComposerTests
{
    static readonly DateTimeOffset Date = new(2030, 1, 2, 3, 4, 5, TimeSpan.FromHours(1));

    static ComposedMessage Compose(JsonObject arguments) => MessageComposer.Compose(ParseValid(arguments), Date);

    static MimeMessage Load(ComposedMessage composed) => MimeMessage.Load(new MemoryStream(composed.Message));

    /// <summary>RFC 5322 section 2.1.1 and 2.3: CRLF is the only line ending, and no line exceeds 998 octets.</summary>
    static void AssertWireClean(byte[] message)
    {
        var lineStart = 0;
        for (var i = 0; i < message.Length; i++)
        {
            if (message[i] == '\r')
            {
                Assert.True(i + 1 < message.Length && message[i + 1] == '\n', $"bare CR at offset {i}");
            }
            else if (message[i] == '\n')
            {
                Assert.True(i > 0 && message[i - 1] == '\r', $"bare LF at offset {i}");
                Assert.True(i - 1 - lineStart <= 998, $"line of {i - 1 - lineStart} octets at offset {lineStart}");
                lineStart = i + 1;
            }
        }

        Assert.True(message.Length - lineStart <= 998, "last line over 998 octets");
    }

    static string Headers(ComposedMessage composed)
    {
        var text = Encoding.UTF8.GetString(composed.Message);
        return text[..text.IndexOf("\r\n\r\n", StringComparison.Ordinal)];
    }

    [Fact]
    public void A_full_request_round_trips_through_mimekit()
    {
        var composed = Compose(Full());
        var message = Load(composed);

        Assert.Equal("\"Agent Smith\" <agent@tenant-a.example>", message.From.ToString());
        Assert.Equal(["alice@example.net", "bob@example.org"], message.To.Mailboxes.Select(m => m.Address));
        Assert.Equal("Alice", message.To.Mailboxes.First().Name);
        Assert.Equal("carol@example.net", Assert.Single(message.Cc.Mailboxes).Address);
        Assert.Empty(message.Bcc);
        Assert.Equal("support@tenant-a.example", Assert.Single(message.ReplyTo.Mailboxes).Address);
        Assert.Equal("Quarterly report", message.Subject);
        Assert.Equal(Date, message.Date);
        Assert.Equal(composed.MessageId, message.MessageId);
        Assert.EndsWith("@tenant-a.example", composed.MessageId, StringComparison.Ordinal);
        Assert.DoesNotContain('<', composed.MessageId);
        Assert.Equal("123@example.net", message.InReplyTo);
        Assert.Equal("ref-42", message.Headers["X-Entity-Ref-ID"]);
        Assert.Equal("Hello,\nthe report is attached.\n", message.TextBody!.ReplaceLineEndings("\n"));
        Assert.Equal("<p>Hello,</p><p>the report is attached.</p>", message.HtmlBody!.TrimEnd());
        Assert.All(message.BodyParts.OfType<TextPart>(), p => Assert.Equal(ContentEncoding.QuotedPrintable, p.ContentTransferEncoding));

        var attachment = Assert.IsType<MimePart>(Assert.Single(message.Attachments));
        Assert.Equal("report.pdf", attachment.FileName);
        Assert.Equal("application/pdf", attachment.ContentType.MimeType);
        Assert.Equal(ContentEncoding.Base64, attachment.ContentTransferEncoding);
        using var content = new MemoryStream();
        attachment.Content!.DecodeTo(content);
        Assert.Equal("%PDF-1.7 fake"u8.ToArray(), content.ToArray());

        Assert.Equal("agent@tenant-a.example", composed.MailFrom.Address);
        Assert.Equal(["alice@example.net", "bob@example.org", "carol@example.net", "dave@example.com"], composed.Recipients.Select(r => r.Address));
        Assert.False(composed.SmtpUtf8);
        AssertWireClean(composed.Message);
        Assert.All(composed.Message, b => Assert.True(b < 128, "8-bit octet in an ASCII message"));
    }

    [Fact]
    public void Bcc_reaches_the_envelope_only()
    {
        var composed = Compose(Full());

        // A field name, not a substring: the random Message-ID may contain "bcc".
        Assert.DoesNotContain(Headers(composed).Split("\r\n"), line => line.StartsWith("bcc:", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain("dave@example.com", Encoding.UTF8.GetString(composed.Message), StringComparison.Ordinal);
        Assert.Contains(composed.Recipients, r => r.Address == "dave@example.com");
    }

    [Fact]
    public void Recipients_are_deduplicated_ignoring_case_in_to_cc_bcc_order()
    {
        var arguments = Minimal();
        arguments["to"] = new JsonArray("b@example.net", "a@example.net");
        arguments["cc"] = new JsonArray("A@EXAMPLE.NET", "c@example.net");
        arguments["bcc"] = new JsonArray("b@example.net", "d@example.net");

        var composed = Compose(arguments);

        Assert.Equal(["b@example.net", "a@example.net", "c@example.net", "d@example.net"], composed.Recipients.Select(r => r.Address));
        Assert.All(composed.Recipients, r => Assert.Empty(r.Parameters));
    }

    [Theory]
    [InlineData("jörg@example.net")]
    [InlineData("user@bücher.example")]
    public void A_non_ascii_address_needs_smtputf8(string address)
    {
        var arguments = Minimal();
        arguments["bcc"] = new JsonArray(address);

        var composed = Compose(arguments);

        Assert.True(composed.SmtpUtf8);
        Assert.Contains(composed.Recipients, r => r.Address == address && !r.IsAscii);
        AssertWireClean(composed.Message);

        arguments.Remove("bcc");
        arguments["to"] = new JsonArray($"Jörg <{address}>");
        composed = Compose(arguments);
        Assert.True(composed.SmtpUtf8);
        Assert.Equal(address, Load(composed).To.Mailboxes.Single().Address);
    }

    [Fact]
    public void A_non_ascii_display_name_or_subject_does_not_need_smtputf8()
    {
        var arguments = Minimal();
        arguments["from"] = "Jörg Müller <agent@tenant-a.example>";
        arguments["subject"] = "Grüße aus Köln";

        var composed = Compose(arguments);
        var message = Load(composed);

        Assert.False(composed.SmtpUtf8);
        Assert.All(composed.Message, b => Assert.True(b < 128, "8-bit octet without SMTPUTF8"));
        Assert.Equal("Jörg Müller", message.From.Mailboxes.Single().Name);
        Assert.Equal("Grüße aus Köln", message.Subject);
    }

    public static TheoryData<string> NastyTexts() =>
    [
        new string('x', 5000),
        string.Join('\n', Enumerable.Repeat(new string('y', 5000), 3)),
        "bare\rcr\rlines" + new string('z', 2000) + "\r",
        "bare\nlf\nlines\n\n\n",
        "mixed\r\n\r\r\n\n\rend",
        "trailing spaces   \nand tabs\t\t\n" + new string(' ', 3000),
        ".\n.leading dot\nFrom the start\n.\r\n",
        "控制 üñíçødé " + new string('é', 3000) + " \u000c\u0001\u001b",
    ];

    [Theory]
    [MemberData(nameof(NastyTexts))]
    public void Any_text_or_html_comes_out_crlf_only_with_short_lines(string text)
    {
        var arguments = Minimal();
        arguments["text"] = text;
        arguments["html"] = "<pre>" + text + "</pre>";

        var composed = Compose(arguments);

        AssertWireClean(composed.Message);
        Assert.All(composed.Message, b => Assert.True(b < 128, "8-bit octet in a quoted-printable body"));
        var normalised = text.Replace("\r\n", "\n", StringComparison.Ordinal).Replace('\r', '\n');
        Assert.Equal(normalised, Load(composed).TextBody!.Replace("\r\n", "\n", StringComparison.Ordinal));
    }

    [Fact]
    public void Long_header_values_file_names_and_subjects_still_fit_in_998_octet_lines()
    {
        var arguments = Minimal();
        arguments["subject"] = new string('s', 989);
        arguments["headers"] = new JsonObject
        {
            ["Keywords"] = new string('k', 988),
            ["X-Entity-Ref-ID"] = new string('r', 981),
            ["References"] = string.Join(' ', Enumerable.Range(0, 20).Select(i => $"<{i}.{new string('m', 30)}@example.net>")),
            ["Comments"] = "tab\tinside " + new string('c', 900),
        };
        arguments["attachments"] = new JsonArray(new JsonObject
        {
            ["filename"] = new string('f', 200) + "ü" + new string('g', 54),
            ["content_type"] = "text/plain; charset=utf-8",
            ["content_base64"] = Convert.ToBase64String(Encoding.UTF8.GetBytes("line one\nline two\rline three" + new string('q', 5000))),
        });

        var composed = Compose(arguments);
        var message = Load(composed);

        AssertWireClean(composed.Message);
        Assert.Equal(new string('s', 989), message.Subject);
        Assert.Equal(new string('k', 988), message.Headers["Keywords"]!.Trim().Replace(" ", "", StringComparison.Ordinal));
        Assert.Equal(new string('f', 200) + "ü" + new string('g', 54), message.Attachments.Single().ContentDisposition!.FileName);
    }

    /// <summary>
    /// MimeKit cannot fold inside a word (a message id has none), so the parser's bound on a word must be what fits: the
    /// longest word it accepts in each field still makes lines of at most 998 octets, first in the value or after others.
    /// </summary>
    [Theory]
    [InlineData("In-Reply-To", "")]
    [InlineData("References", "")]
    [InlineData("References", "<a@b> <c@d> ")]
    [InlineData("List-Unsubscribe", "")]
    [InlineData("List-Id", "")]
    [InlineData("Keywords", "")]
    [InlineData("Comments", "x ")]
    [InlineData("Feedback-ID", "")]
    [InlineData("X-Entity-Ref-ID", "")]
    [InlineData("Subject", "")]
    [InlineData("Subject", "Re: ")]
    public void The_longest_word_the_parser_accepts_still_fits_in_a_998_octet_line(string name, string before)
    {
        var word = "<" + new string('m', 998 - name.Length - 2 - "<@example.net>".Length) + "@example.net>";
        var arguments = Minimal();
        if (name == "Subject")
        {
            arguments["subject"] = before + word;
        }
        else
        {
            arguments["headers"] = new JsonObject { [name] = before + word };
        }

        AssertWireClean(Compose(arguments).Message);
    }

    [Fact]
    public void An_attachment_keeps_its_bytes_exactly_even_as_text()
    {
        var bytes = Encoding.UTF8.GetBytes("a\rb\nc\r\n" + new string('d', 3000));
        var arguments = Minimal();
        arguments["attachments"] = new JsonArray(new JsonObject
        {
            ["filename"] = "notes.txt",
            ["content_type"] = "text/plain",
            ["content_base64"] = Convert.ToBase64String(bytes),
        });

        var composed = Compose(arguments);
        var part = (MimePart)Load(composed).Attachments.Single();

        AssertWireClean(composed.Message);
        Assert.Equal(ContentEncoding.Base64, part.ContentTransferEncoding);
        using var content = new MemoryStream();
        part.Content!.DecodeTo(content);
        Assert.Equal(bytes, content.ToArray());
    }

    [Fact]
    public void Only_the_given_fields_are_in_the_header()
    {
        var composed = Compose(Minimal());

        var names = Load(composed).Headers.Select(h => h.Field).Order(StringComparer.OrdinalIgnoreCase);

        Assert.Equal(["Date", "From", "Message-Id", "MIME-Version", "Subject", "To"], names, StringComparer.OrdinalIgnoreCase);
    }
}
