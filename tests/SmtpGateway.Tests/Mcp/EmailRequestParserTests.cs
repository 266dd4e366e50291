using System.Text.Json.Nodes;
using SmtpGateway.Mcp;
using static SmtpGateway.Tests.Mcp.McpArguments;

namespace SmtpGateway.Tests.Mcp;

/// <summary>The input checks of the MCP send_email tool: every error reported, header injection refused in every field.</summary>
public sealed class EmailRequestParserTests
{
    static void AssertHasError(IReadOnlyList<string> errors, string expected) =>
        Assert.True(errors.Any(e => e.Contains(expected, StringComparison.Ordinal)), $"no error containing \"{expected}\" in: {string.Join(" | ", errors)}");

    [Fact]
    public void A_full_request_parses_into_every_field()
    {
        var request = ParseValid(Full());

        Assert.Equal("agent@tenant-a.example", request.From.Address);
        Assert.Equal("Agent Smith", request.From.Name);
        Assert.Equal(["alice@example.net", "bob@example.org"], request.To.Select(m => m.Address));
        Assert.Equal("Alice", request.To[0].Name);
        Assert.Equal("carol@example.net", Assert.Single(request.Cc).Address);
        Assert.Equal("dave@example.com", Assert.Single(request.Bcc).Address);
        Assert.Equal("support@tenant-a.example", Assert.Single(request.ReplyTo).Address);
        Assert.Equal("Quarterly report", request.Subject);
        Assert.Equal("Hello,\nthe report is attached.\n", request.Text);
        Assert.Equal("<p>Hello,</p><p>the report is attached.</p>", request.Html);
        var attachment = Assert.Single(request.Attachments);
        Assert.Equal(("report.pdf", "application/pdf"), (attachment.FileName, attachment.ContentType));
        Assert.Equal("%PDF-1.7 fake"u8.ToArray(), attachment.Content);
        Assert.Equal([new("In-Reply-To", "<123@example.net>"), new("X-Entity-Ref-ID", "ref-42")], request.Headers);
    }

    [Fact]
    public void Optional_arguments_may_be_absent_or_null()
    {
        var minimal = ParseValid(Minimal());
        Assert.Empty(minimal.Cc);
        Assert.Empty(minimal.Attachments);
        Assert.Empty(minimal.Headers);
        Assert.Null(minimal.Html);

        var nulls = Minimal();
        foreach (var name in new[] { "cc", "bcc", "reply_to", "html", "attachments", "headers" })
        {
            nulls[name] = null;
        }

        ParseValid(nulls);
    }

    [Fact]
    public void Html_alone_is_enough_and_the_subject_may_be_empty()
    {
        var arguments = Minimal();
        arguments.Remove("text");
        arguments["html"] = "<b>hi</b>";
        arguments["subject"] = "";

        var request = ParseValid(arguments);

        Assert.Null(request.Text);
        Assert.Equal("", request.Subject);
    }

    [Fact]
    public void An_empty_call_reports_every_missing_argument_at_once()
    {
        var errors = ParseErrors(Args("{}"));

        Assert.Equal(
            [
                "from: required, a JSON string with one address",
                "to: required, a JSON array of addresses",
                "subject: required, a JSON string (may be empty)",
                "text, html: at least one is required, a JSON string",
            ],
            errors);
        Assert.Equal(errors, ParseErrors((IReadOnlyDictionary<string, System.Text.Json.JsonElement>?)null!));
    }

    [Fact]
    public void Several_different_errors_are_all_reported()
    {
        var arguments = Full();
        arguments["from"] = "not an address";
        arguments["to"] = new JsonArray("ok@example.net", "also bad");
        arguments["subject"] = "Hi\r\nBcc: victim@example.net";
        arguments["tenant"] = "tenant-b";
        arguments["headers"] = new JsonObject { ["Bcc"] = "victim@example.net" };
        ((JsonObject)arguments["attachments"]![0]!)["content_base64"] = "%%%%";

        var errors = ParseErrors(arguments);

        Assert.Equal(
            [
                "unknown argument 'tenant'",
                "from: not one valid address: 'not an address'",
                "to[1]: not one valid address: 'also bad'",
                "subject: contains CR or LF",
                "attachments[0].content_base64: not valid base64",
                "headers: 'Bcc' can never be set through headers",
            ],
            errors);
    }

    [Theory]
    [InlineData("tenant")]
    [InlineData("From")]
    [InlineData("attachment")]
    [InlineData("body")]
    public void An_unknown_argument_is_refused_not_ignored(string name)
    {
        var arguments = Minimal();
        arguments[name] = "x";

        Assert.Equal([$"unknown argument '{name}'"], ParseErrors(arguments));
    }

    [Theory]
    [InlineData("from", "42", "from: must be a JSON string with one address, not a number")]
    [InlineData("from", "[\"a@b.example\"]", "from: must be a JSON string with one address, not an array")]
    [InlineData("to", "\"alice@example.net\"", "to: must be a JSON array of addresses, not a string")]
    [InlineData("to", "[42]", "to[0]: must be a JSON string with one address, not a number")]
    [InlineData("cc", "{}", "cc: must be a JSON array of addresses, not an object")]
    [InlineData("bcc", "true", "bcc: must be a JSON array of addresses, not a boolean")]
    [InlineData("reply_to", "\"x@example.net\"", "reply_to: must be a JSON array of addresses, not a string")]
    [InlineData("subject", "[]", "subject: must be a JSON string, not an array")]
    [InlineData("text", "1", "text: must be a JSON string, not a number")]
    [InlineData("html", "{}", "html: must be a JSON string, not an object")]
    [InlineData("attachments", "{}", "attachments: must be a JSON array of objects {filename, content_type, content_base64}, not an object")]
    [InlineData("attachments", "[\"a.txt\"]", "attachments[0]: must be a JSON object {filename, content_type, content_base64}, not a string")]
    [InlineData("attachments", "[{\"filename\":1,\"content_base64\":\"\"}]", "attachments[0].filename: must be a JSON string, not a number")]
    [InlineData("attachments", "[{\"filename\":\"a\",\"content_type\":[],\"content_base64\":\"\"}]", "attachments[0].content_type: must be a JSON string, not an array")]
    [InlineData("attachments", "[{\"filename\":\"a\",\"content_base64\":123}]", "attachments[0].content_base64: must be a base64 JSON string, not a number")]
    [InlineData("headers", "[]", "headers: must be a JSON object of header name to string value, not an array")]
    [InlineData("headers", "{\"Keywords\":7}", "headers['Keywords']: must be a JSON string, not a number")]
    public void A_wrong_json_type_names_the_argument_and_the_expected_type(string name, string json, string expected)
    {
        var arguments = Minimal();
        arguments[name] = JsonNode.Parse(json);

        Assert.Equal([expected], ParseErrors(arguments));
    }

    [Fact]
    public void Text_and_html_missing_together_is_an_error()
    {
        var arguments = Minimal();
        arguments.Remove("text");

        Assert.Equal(["text, html: at least one is required, a JSON string"], ParseErrors(arguments));
    }

    [Theory]
    [InlineData("text")]
    [InlineData("html")]
    public void A_nul_in_a_body_is_an_error(string name)
    {
        var arguments = Minimal();
        arguments[name] = "a\0b";

        Assert.Equal([$"{name}: contains a NUL character"], ParseErrors(arguments));
    }

    /// <summary>Every field that ends up in a header, with the label its error carries.</summary>
    public static TheoryData<string, string> HeaderBoundFields() => new()
    {
        { "from", "from" },
        { "to", "to[0]" },
        { "cc", "cc[0]" },
        { "bcc", "bcc[0]" },
        { "reply_to", "reply_to[0]" },
        { "subject", "subject" },
        { "header value", "headers['Keywords']" },
        { "header name", "headers: header name 'X" },
        { "filename", "attachments[0].filename" },
        { "content_type", "attachments[0].content_type" },
    };

    public static TheoryData<string, string, string> Injections()
    {
        var data = new TheoryData<string, string, string>();
        foreach (var (field, label) in HeaderBoundFields().Select(r => ((string)r[0], (string)r[1])))
        {
            data.Add(field, "\r\nBcc: victim@example.net", $"{label}");
            data.Add(field, "\nX-Injected: 1", $"{label}");
            data.Add(field, "\r", $"{label}");
            data.Add(field, "\0", $"{label}");
            data.Add(field, "\u0001", $"{label}");
            data.Add(field, "\u001b[31m", $"{label}");
            data.Add(field, "\u007f", $"{label}");
        }

        return data;
    }

    static JsonObject WithField(string field, string injected)
    {
        var arguments = Minimal();
        switch (field)
        {
            case "from":
                arguments["from"] = "agent@tenant-a.example" + injected;
                break;
            case "to" or "cc" or "bcc" or "reply_to":
                arguments[field] = new JsonArray("Name" + injected + " <x@example.net>");
                break;
            case "subject":
                arguments["subject"] = "Hello" + injected;
                break;
            case "header value":
                arguments["headers"] = new JsonObject { ["Keywords"] = "a" + injected };
                break;
            case "header name":
                arguments["headers"] = new JsonObject { ["X" + injected] = "a" };
                break;
            case "filename":
                arguments["attachments"] = new JsonArray(new JsonObject { ["filename"] = "a" + injected + ".txt", ["content_base64"] = "" });
                break;
            case "content_type":
                arguments["attachments"] = new JsonArray(new JsonObject { ["filename"] = "a.txt", ["content_type"] = "text/plain" + injected, ["content_base64"] = "" });
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(field), field, null);
        }

        return arguments;
    }

    [Theory]
    [MemberData(nameof(Injections))]
    public void A_control_character_in_any_header_bound_field_is_refused(string field, string injected, string label)
    {
        var errors = ParseErrors(WithField(field, injected));

        var expected = injected.AsSpan().IndexOfAny('\r', '\n') >= 0 ? "contains CR or LF" : "contains a control character";
        var error = Assert.Single(errors);
        Assert.StartsWith(label, error, StringComparison.Ordinal);
        Assert.Contains(expected, error, StringComparison.Ordinal);
        Assert.DoesNotContain(error, c => char.IsControl(c));
    }

    [Theory]
    [InlineData("subject")]
    [InlineData("header value")]
    public void A_tab_is_allowed_in_the_subject_and_header_values(string field) => ParseValid(WithField(field, "\tb"));

    [Theory]
    [InlineData("from")]
    [InlineData("to")]
    [InlineData("filename")]
    [InlineData("header name")]
    public void A_tab_is_refused_elsewhere(string field) =>
        Assert.Contains("contains a control character", Assert.Single(ParseErrors(WithField(field, "\t"))), StringComparison.Ordinal);

    [Fact]
    public void An_encoded_word_display_name_that_decodes_to_a_line_break_is_refused()
    {
        var arguments = Minimal();
        arguments["from"] = "=?utf-8?q?Agent=0D=0AEvil?= <agent@tenant-a.example>";

        Assert.Equal(["from: the decoded display name contains CR or LF"], ParseErrors(arguments));
    }

    [Theory]
    [InlineData("a@b.example", "a@b.example", "")]
    [InlineData("\"Name\" <a@b.example>", "a@b.example", "Name")]
    [InlineData("Name <a@b.example>", "a@b.example", "Name")]
    [InlineData("\"Last, First\" <first.last@b.example>", "first.last@b.example", "Last, First")]
    [InlineData("a+tag@sub.b.example", "a+tag@sub.b.example", "")]
    [InlineData("user@[192.0.2.1]", "user@[192.0.2.1]", "")]
    public void One_address_in_the_usual_forms_is_accepted(string text, string address, string name)
    {
        var arguments = Minimal();
        arguments["to"] = new JsonArray(text);

        var mailbox = Assert.Single(ParseValid(arguments).To);

        Assert.Equal(address, mailbox.Address);
        Assert.Equal(name, mailbox.Name ?? "");
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("alice")]
    [InlineData("postmaster")]
    [InlineData("alice@")]
    [InlineData("@example.net")]
    [InlineData("friends: alice@example.net, bob@example.net;")]
    [InlineData("friends:;")]
    [InlineData("alice@example.net, bob@example.net")]
    [InlineData("alice@example.net bob@example.net")]
    [InlineData("<@relay.example:alice@example.net>")]
    [InlineData("<@relay.example,@other.example:alice@example.net>")]
    [InlineData("alice@example.net.")]
    [InlineData("alice..b@example.net")]
    [InlineData(".alice@example.net")]
    [InlineData("alice@-example.net")]
    [InlineData("alice@exa mple.net")]
    [InlineData("Alice <alice@example.net")]
    [InlineData("a\\@b@example.net")]
    public void Anything_but_one_valid_address_is_refused(string text)
    {
        var arguments = Minimal();
        arguments["to"] = new JsonArray(text);

        var error = Assert.Single(ParseErrors(arguments));

        Assert.StartsWith("to[0]: ", error, StringComparison.Ordinal);
    }

    [Fact]
    public void An_address_longer_than_320_characters_is_refused_and_not_echoed()
    {
        var arguments = Minimal();
        arguments["from"] = new string('a', 64) + "@" + string.Join('.', Enumerable.Repeat(new string('b', 60), 5)) + ".example";

        Assert.Equal(["from: longer than 320 characters"], ParseErrors(arguments));
    }

    [Fact]
    public void An_empty_to_list_is_an_error()
    {
        var arguments = Minimal();
        arguments["to"] = new JsonArray();

        Assert.Equal(["to: required, at least one address"], ParseErrors(arguments));
    }

    [Fact]
    public void Recipients_are_counted_per_item_across_to_cc_and_bcc_repeats_included()
    {
        var limits = Limits with { MaxRecipients = 3 };
        var arguments = Minimal();
        arguments["to"] = new JsonArray("alice@example.net", "ALICE@Example.NET");
        arguments["cc"] = new JsonArray("bob@example.net");

        Assert.Equal(2, ParseValid(arguments, limits).To.Count);

        arguments["bcc"] = new JsonArray("\"Alice again\" <alice@example.net>");
        Assert.Equal(["to, cc, bcc: 4 addresses, above the limit of 3 (Gateway:Limits:MaxRecipients)"], ParseErrors(arguments, limits));
    }

    /// <summary>One address repeated <paramref name="count"/> times as JSON text: no JsonNode per item, so only Parse allocates much.</summary>
    static string Repeated(string item, int count) => "[" + string.Join(',', Enumerable.Repeat($"\"{item}\"", count)) + "]";

    static (IReadOnlyList<string> Errors, long Allocated) ParseMeasured(string json)
    {
        var arguments = Args(json);
        var before = GC.GetAllocatedBytesForCurrentThread();
        var request = EmailRequestParser.Parse(arguments, Limits, out var errors);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Null(request);
        return (errors, allocated);
    }

    [Theory]
    [InlineData("to")]
    [InlineData("cc")]
    [InlineData("bcc")]
    public void A_huge_recipient_array_is_refused_by_its_length_before_any_item_is_parsed(string field)
    {
        var to = field == "to" ? Repeated("a@b.cc", 200_000) : """["alice@example.net"]""";
        var other = field == "to" ? "" : $",\"{field}\":{Repeated("a@b.cc", 200_000)}";
        var (errors, allocated) = ParseMeasured($$"""{"from":"a@b.example","to":{{to}}{{other}},"subject":"","text":""}""");

        var count = field == "to" ? 200_000 : 200_001;
        Assert.Equal([$"to, cc, bcc: {count} addresses, above the limit of 50 (Gateway:Limits:MaxRecipients)"], errors);
        Assert.True(allocated < 1024 * 1024, $"Parse allocated {allocated} bytes for a refused recipient list");
    }

    [Fact]
    public void More_reply_to_addresses_than_the_limit_are_refused_before_any_is_parsed()
    {
        var arguments = Minimal();
        arguments["reply_to"] = new JsonArray([.. Enumerable.Range(0, EmailRequestParser.MaxReplyTo).Select(i => (JsonNode?)$"r{i}@tenant-a.example")]);
        Assert.Equal(EmailRequestParser.MaxReplyTo, ParseValid(arguments).ReplyTo.Count);

        var (errors, allocated) = ParseMeasured($$"""{"from":"a@b.example","to":["c@d.example"],"reply_to":{{Repeated("not an address", 200_000)}},"subject":"","text":""}""");

        Assert.Equal(["reply_to: 200000 addresses, above the limit of 10"], errors);
        Assert.True(allocated < 1024 * 1024, $"Parse allocated {allocated} bytes for a refused reply_to list");
    }

    [Fact]
    public void A_huge_headers_object_is_refused_by_its_size_before_any_header_is_read()
    {
        var headers = "{" + string.Join(',', Enumerable.Range(0, 200_000).Select(i => $"\"X-H{i}\":\"v\"")) + "}";

        var (errors, allocated) = ParseMeasured($$"""{"from":"a@b.example","to":["c@d.example"],"subject":"","text":"","headers":{{headers}}}""");

        Assert.Equal(["headers: more than 20 headers, above the limit of 20"], errors);
        Assert.True(allocated < 1024 * 1024, $"Parse allocated {allocated} bytes for a refused headers object");
    }

    [Fact]
    public void A_subject_of_998_characters_passes_and_one_more_does_not()
    {
        var arguments = Minimal();
        var words = string.Join(' ', Enumerable.Repeat(new string('s', 99), 10));
        arguments["subject"] = words[..998];
        ParseValid(arguments);

        arguments["subject"] = words[..998] + "s";
        Assert.Equal(["subject: longer than 998 characters"], ParseErrors(arguments));
    }

    /// <summary>A word is never split when a header is folded, so it must fit after "Name: " in a 998-octet line.</summary>
    [Theory]
    [InlineData("subject", "Subject", "")]
    [InlineData("References", "References", "<a@b> ")]
    [InlineData("X-Entity-Ref-ID", "X-Entity-Ref-ID", "ref\t")]
    public void A_word_too_long_for_one_header_line_is_refused(string field, string name, string before)
    {
        var room = 998 - name.Length - 2;
        JsonObject With(int length)
        {
            var value = before + "<" + new string('m', length - "<@b>".Length) + "@b>";
            var arguments = Minimal();
            if (field == "subject")
            {
                arguments["subject"] = value;
            }
            else
            {
                arguments["headers"] = new JsonObject { [field] = value };
            }

            return arguments;
        }

        ParseValid(With(room));

        var label = field == "subject" ? "subject" : $"headers['{field}']";
        Assert.Equal(
            [$"{label}: a word of {room + 1} octets without a space, above the {room} that fit on one line after '{name}: ' (RFC 5322 section 2.1.1)"],
            ParseErrors(With(room + 1)));
    }

    [Fact]
    public void A_header_word_is_measured_in_utf8_octets()
    {
        var arguments = Minimal();
        arguments["subject"] = new string('é', 495); // 990 octets: one line would be 999

        Assert.Equal(["subject: a word of 990 octets without a space, above the 989 that fit on one line after 'Subject: ' (RFC 5322 section 2.1.1)"], ParseErrors(arguments));
    }

    public static TheoryData<string, string, string> EncodedWordInjections() => new()
    {
        { "subject", "=?utf-8?q?a=0D=0ABcc:_x@evil?=", "subject: the decoded encoded-word text contains CR or LF" },
        { "subject", "Hi =?utf-8?b?DQpCY2M6IHhAZXZpbA==?=", "subject: the decoded encoded-word text contains CR or LF" },
        { "subject", "=?utf-8?q?bell=07?=", "subject: the decoded encoded-word text contains a control character" },
        { "header", "=?utf-8?b?DQpCY2M6IHhAZXZpbA==?=", "headers['Keywords']: the decoded encoded-word text contains CR or LF" },
        { "header", "=?iso-8859-1?q?a=0Ab?=", "headers['Keywords']: the decoded encoded-word text contains CR or LF" },
        { "header", "=?utf-8?q?esc=1B[2J?=", "headers['Keywords']: the decoded encoded-word text contains a control character" },
        { "filename", "=?utf-8?q?a=0D=0A.txt?=", "attachments[0].filename: the decoded encoded-word text contains CR or LF" },
    };

    [Theory]
    [MemberData(nameof(EncodedWordInjections))]
    public void An_encoded_word_that_decodes_to_a_control_character_is_refused(string field, string value, string expected)
    {
        var arguments = Minimal();
        switch (field)
        {
            case "subject":
                arguments["subject"] = value;
                break;
            case "header":
                arguments["headers"] = new JsonObject { ["Keywords"] = value };
                break;
            default:
                arguments["attachments"] = new JsonArray(new JsonObject { ["filename"] = value, ["content_base64"] = "" });
                break;
        }

        Assert.Equal([expected], ParseErrors(arguments));
    }

    [Fact]
    public void An_encoded_word_that_decodes_to_plain_text_or_a_tab_is_accepted()
    {
        var arguments = Minimal();
        arguments["subject"] = "=?utf-8?q?Caf=C3=A9=09menu?=";
        arguments["headers"] = new JsonObject { ["Keywords"] = "=?utf-8?b?w7xiZXI=?=" };

        var request = ParseValid(arguments);

        Assert.Equal("=?utf-8?q?Caf=C3=A9=09menu?=", request.Subject);
    }

    [Fact]
    public void A_header_not_on_the_allowlist_is_refused_with_the_list()
    {
        var arguments = Minimal();
        arguments["headers"] = new JsonObject { ["X-Foo"] = "bar" };

        var error = Assert.Single(ParseErrors(arguments));

        Assert.Equal($"headers: 'X-Foo' is not an allowed header (allowed: {string.Join(", ", SmtpGateway.Configuration.McpConfig.DefaultAllowedHeaders)})", error);
    }

    [Fact]
    public void Allowlisted_headers_match_whatever_their_case()
    {
        var arguments = Minimal();
        arguments["headers"] = new JsonObject { ["references"] = "<a@example.net> <b@example.net>", ["LIST-UNSUBSCRIBE"] = "<mailto:u@tenant-a.example>" };

        Assert.Equal(2, ParseValid(arguments).Headers.Count);
    }

    [Theory]
    [InlineData("Bcc")]
    [InlineData("bcc")]
    [InlineData("From")]
    [InlineData("Sender")]
    [InlineData("To")]
    [InlineData("Subject")]
    [InlineData("Message-ID")]
    [InlineData("Date")]
    [InlineData("Return-Path")]
    [InlineData("Received")]
    [InlineData("DKIM-Signature")]
    [InlineData("ARC-Seal")]
    [InlineData("ARC-Anything-New")]
    [InlineData("Resent-To")]
    [InlineData("Resent-Whatever")]
    [InlineData("Content-Type")]
    [InlineData("Content-Transfer-Encoding")]
    [InlineData("Content-Foo")]
    [InlineData("MIME-Version")]
    [InlineData("Authentication-Results")]
    [InlineData("X-Tenant")]
    [InlineData("X-SmtpGateway-Trace")]
    public void A_forbidden_header_is_refused_even_when_the_allowlist_names_it(string name)
    {
        Assert.True(SmtpGateway.Configuration.McpConfig.IsForbiddenHeader(name));
        var limits = Limits with { AllowedHeaders = [.. SmtpGateway.Configuration.McpConfig.DefaultAllowedHeaders, name] };
        var arguments = Minimal();
        arguments["headers"] = new JsonObject { [name] = "x" };

        Assert.Equal([$"headers: '{name}' can never be set through headers"], ParseErrors(arguments, limits));
    }

    [Fact]
    public void No_default_allowed_header_is_forbidden() =>
        Assert.DoesNotContain(SmtpGateway.Configuration.McpConfig.DefaultAllowedHeaders, SmtpGateway.Configuration.McpConfig.IsForbiddenHeader);

    [Fact]
    public void The_forbidden_set_ignores_case() => Assert.True(SmtpGateway.Configuration.McpConfig.IsForbiddenHeader("dkim-signature"));

    [Fact]
    public void A_header_given_twice_in_any_case_is_an_error()
    {
        var errors = ParseErrors(Args("""{"from":"a@b.example","to":["c@d.example"],"subject":"","text":"","headers":{"Keywords":"a","keywords":"b"}}"""));

        Assert.Equal(["headers: 'keywords' given twice"], errors);
    }

    [Theory]
    [InlineData("X Foo")]
    [InlineData("X:Foo")]
    [InlineData("")]
    [InlineData("Keywörds")]
    public void A_header_name_outside_the_rfc_5322_field_name_grammar_is_refused(string name)
    {
        var arguments = Minimal();
        arguments["headers"] = new JsonObject { [name] = "x" };

        Assert.EndsWith("is not a valid header name (printable ASCII, no space or ':')", Assert.Single(ParseErrors(arguments)), StringComparison.Ordinal);
    }

    [Fact]
    public void Header_values_and_count_are_capped()
    {
        var limits = Limits with { AllowedHeaders = [.. Enumerable.Range(0, 21).Select(i => $"X-H{i}")] };
        var arguments = Minimal();
        var headers = new JsonObject();
        for (var i = 0; i < 20; i++)
        {
            headers[$"X-H{i}"] = i == 0 ? string.Concat(Enumerable.Repeat("v ", 500)) : "v";
        }

        arguments["headers"] = headers;
        Assert.Equal(["headers['X-H0']: longer than 998 characters"], ParseErrors(arguments, limits));

        // Over the count nothing else is looked at: the count alone is the answer.
        headers["X-H20"] = "v";
        Assert.Equal(["headers: more than 20 headers, above the limit of 20"], ParseErrors(arguments, limits));
    }

    static JsonObject WithAttachments(params JsonObject[] attachments)
    {
        var arguments = Minimal();
        arguments["attachments"] = new JsonArray([.. attachments]);
        return arguments;
    }

    [Fact]
    public void An_attachment_without_a_content_type_is_application_octet_stream()
    {
        var request = ParseValid(WithAttachments(new JsonObject { ["filename"] = "data", ["content_base64"] = "AAEC" }));

        var attachment = Assert.Single(request.Attachments);
        Assert.Equal("application/octet-stream", attachment.ContentType);
        Assert.Equal([0, 1, 2], attachment.Content);
    }

    [Theory]
    [InlineData("AAE=", 2)]
    [InlineData("AA==", 1)]
    [InlineData("", 0)]
    [InlineData("AAEC\r\nAAEC", 6)]
    public void Base64_with_padding_or_line_breaks_decodes_to_its_exact_length(string base64, int length)
    {
        var request = ParseValid(WithAttachments(new JsonObject { ["filename"] = "data", ["content_base64"] = base64 }));

        Assert.Equal(length, Assert.Single(request.Attachments).Content.Length);
    }

    [Fact]
    public void Base64_with_json_escapes_decodes()
    {
        // System.Text.Json's default encoder writes '+' as \u002B.
        var request = EmailRequestParser.Parse(
            Args("""{"from":"a@b.example","to":["c@d.example"],"subject":"","text":"","attachments":[{"filename":"x","content_base64":"\u002B\u002F8A"}]}"""),
            Limits,
            out var errors);

        Assert.Empty(errors);
        Assert.Equal([0xFB, 0xFF, 0x00], Assert.Single(request!.Attachments).Content);
    }

    [Theory]
    [InlineData("{\"filename\":\"a.txt\",\"content_base64\":\"not base64!\"}", "attachments[0].content_base64: not valid base64")]
    [InlineData("{\"filename\":\"a.txt\",\"content_base64\":\"QUJ\"}", "attachments[0].content_base64: not valid base64")]
    [InlineData("{\"filename\":\"a.txt\"}", "attachments[0].content_base64: required, the content as a base64 JSON string")]
    [InlineData("{\"content_base64\":\"\"}", "attachments[0].filename: required, a JSON string of 1 to 255 characters")]
    [InlineData("{\"filename\":\"\",\"content_base64\":\"\"}", "attachments[0].filename: empty, a file name is required")]
    [InlineData("{\"filename\":\"../etc/passwd\",\"content_base64\":\"\"}", "attachments[0].filename: contains '/' or '\\', a file name has no path")]
    [InlineData("{\"filename\":\"C:\\\\x.txt\",\"content_base64\":\"\"}", "attachments[0].filename: contains '/' or '\\', a file name has no path")]
    [InlineData("{\"filename\":\"a\",\"content_type\":\"multipart/mixed; boundary=x\",\"content_base64\":\"\"}", "attachments[0].content_type: multipart/* and message/* are not allowed, the tool builds the MIME structure itself")]
    [InlineData("{\"filename\":\"a\",\"content_type\":\"message/rfc822\",\"content_base64\":\"\"}", "attachments[0].content_type: multipart/* and message/* are not allowed, the tool builds the MIME structure itself")]
    [InlineData("{\"filename\":\"a\",\"content_type\":\"not a type\",\"content_base64\":\"\"}", "attachments[0].content_type: not a valid MIME type: 'not a type'")]
    [InlineData("{\"filename\":\"a\",\"content_base64\":\"\",\"size\":3}", "attachments[0]: unknown field 'size'")]
    [InlineData("{\"filename\":\"a\",\"content_base64\":\"\",\"filename\":\"b\"}", "attachments[0]: field 'filename' given twice")]
    public void A_bad_attachment_is_refused_with_its_index_and_field(string attachment, string expected)
    {
        var errors = ParseErrors(Args($$"""{"from":"a@b.example","to":["c@d.example"],"subject":"","text":"","attachments":[{{attachment}}]}"""));

        Assert.Equal([expected], errors);
    }

    [Fact]
    public void A_file_name_of_255_characters_passes_and_256_does_not()
    {
        ParseValid(WithAttachments(new JsonObject { ["filename"] = new string('f', 255), ["content_base64"] = "" }));

        Assert.Equal(
            ["attachments[0].filename: longer than 255 characters"],
            ParseErrors(WithAttachments(new JsonObject { ["filename"] = new string('f', 256), ["content_base64"] = "" })));
    }

    [Fact]
    public void More_attachments_than_the_limit_are_refused()
    {
        var many = Enumerable.Range(0, 11).Select(i => new JsonObject { ["filename"] = $"f{i}", ["content_base64"] = "" }).ToArray();

        Assert.Equal(["attachments: 11 attachments, above the limit of 10 (Gateway:Mcp:MaxAttachments)"], ParseErrors(WithAttachments(many)));
    }

    [Fact]
    public void The_attachment_cap_is_on_the_decoded_total_and_exact()
    {
        var limits = Limits with { MaxAttachmentSize = 10 };
        JsonObject File(int bytes) => new() { ["filename"] = "f", ["content_base64"] = Convert.ToBase64String(new byte[bytes]) };

        ParseValid(WithAttachments(File(4), File(6)), limits);

        Assert.Equal(
            ["attachments: 11 bytes in total, above the limit of 10 bytes (Gateway:Mcp:MaxAttachmentSize)"],
            ParseErrors(WithAttachments(File(4), File(7)), limits));
    }

    [Fact]
    public void A_30_MiB_attachment_is_refused_without_allocating_its_bytes()
    {
        var json = $$"""{"from":"a@b.example","to":["c@d.example"],"subject":"","text":"","attachments":[{"filename":"big.bin","content_base64":"{{new string('A', 40 * 1024 * 1024)}}"}]}""";
        var arguments = Args(json);

        var before = GC.GetAllocatedBytesForCurrentThread();
        var request = EmailRequestParser.Parse(arguments, Limits, out var errors);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Null(request);
        Assert.Equal(["attachments: 31457280 bytes in total, above the limit of 10485760 bytes (Gateway:Mcp:MaxAttachmentSize)"], errors);
        Assert.True(allocated < 1024 * 1024, $"Parse allocated {allocated} bytes for a refused attachment");
    }

    [Fact]
    public void Echoed_input_is_short_and_free_of_control_characters()
    {
        var name = "tenant\u001b[2J" + new string('x', 500);
        var arguments = Minimal();
        arguments[name] = "x";
        arguments["to"] = new JsonArray(new string('y', 300));

        var errors = ParseErrors(arguments);

        Assert.Equal(2, errors.Count);
        Assert.All(errors, e => Assert.True(e.Length < 120, e));
        Assert.All(errors, e => Assert.DoesNotContain(e, c => char.IsControl(c)));
        Assert.StartsWith("unknown argument 'tenant?[2Jxxx", errors[0], StringComparison.Ordinal);
    }

    [Fact]
    public void A_flood_of_errors_is_cut_short_with_a_count()
    {
        var arguments = Minimal();
        arguments["to"] = new JsonArray([.. Enumerable.Range(0, 200).Select(_ => (JsonNode?)"bad")]);

        var errors = ParseErrors(arguments, Limits with { MaxRecipients = 200 });

        Assert.Equal(51, errors.Count);
        Assert.Equal("... and 150 more errors", errors[^1]);
    }

    [Fact]
    public void An_unpaired_surrogate_in_a_header_bound_field_is_refused()
    {
        var errors = ParseErrors(Args("""{"from":"a@b.example","to":["c@d.example"],"subject":"a\ud800b","text":""}"""));

        Assert.Equal(["subject: contains an unpaired UTF-16 surrogate"], errors);
        var arguments = Minimal();
        arguments["subject"] = "emoji \ud83d\ude00 ok";
        Assert.Equal("emoji \ud83d\ude00 ok", ParseValid(arguments).Subject);
    }
}
