using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using MimeKit;
using MimeKit.Utils;
using SmtpGateway.Smtp;

namespace SmtpGateway.Mcp;

/// <summary>One decoded attachment of a send_email call; <see cref="ContentType"/> is the client's text, already checked.</summary>
public sealed record McpAttachment(string FileName, string ContentType, byte[] Content);

/// <summary>A send_email call that passed every check of <see cref="EmailRequestParser"/>; nothing in it needs checking again.</summary>
public sealed record EmailRequest(
    MailboxAddress From,
    IReadOnlyList<MailboxAddress> To,
    IReadOnlyList<MailboxAddress> Cc,
    IReadOnlyList<MailboxAddress> Bcc,
    IReadOnlyList<MailboxAddress> ReplyTo,
    string Subject,
    string? Text,
    string? Html,
    IReadOnlyList<McpAttachment> Attachments,
    IReadOnlyList<KeyValuePair<string, string>> Headers);

/// <summary>
/// Turns the JSON arguments of a send_email call into an <see cref="EmailRequest"/>. Every problem is reported, not only
/// the first, so an agent can fix its call in one round trip. The checks are the header-injection and resource defence
/// of the tool: anything that reaches a header has no control characters, addresses pass both MimeKit's strict parser
/// and the SMTP path grammar the listener uses, and attachment sizes are refused before the bytes are allocated.
/// </summary>
public static class EmailRequestParser
{
    public const int MaxAddressLength = 320;

    /// <summary>RFC 5322 section 2.1.1: a line is at most 998 octets; a longer unfoldable value could not be written.</summary>
    public const int MaxHeaderValueLength = 998;

    public const int MaxHeaders = 20;

    /// <summary>
    /// Reply-To names where answers go, not who receives the mail, so MaxRecipients does not bound it; a handful covers
    /// a team alias or two, and the cap keeps a huge array from being parsed item by item.
    /// </summary>
    public const int MaxReplyTo = 10;

    public const int MaxFileNameLength = 255;

    const int MaxContentTypeLength = 255;

    // Input is echoed only in short, cleaned pieces: an error goes back to the agent and into logs.
    const int MaxEchoLength = 60;

    // An error list as large as a hostile request would be a resource of its own.
    const int MaxErrors = 50;

    const string DefaultContentType = "application/octet-stream";

    const string UnpairedSurrogate = "contains an unpaired UTF-16 surrogate";

    static readonly string[] Arguments = ["from", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "attachments", "headers"];

    static readonly string[] AttachmentFields = ["filename", "content_type", "content_base64"];

    static readonly ParserOptions Strict = CreateStrictOptions();

    public static EmailRequest? Parse(IReadOnlyDictionary<string, JsonElement>? arguments, EmailLimits limits, out IReadOnlyList<string> errors)
    {
        ArgumentNullException.ThrowIfNull(limits);
        arguments ??= new Dictionary<string, JsonElement>();
        var found = new ErrorList();

        // A typo, or an attempt to pick a tenant, must fail loudly rather than be dropped.
        foreach (var name in arguments.Keys.Where(n => !Arguments.Contains(n, StringComparer.Ordinal)))
        {
            found.Add($"unknown argument '{Echo(name)}'");
        }

        var from = ParseFrom(arguments, found);

        // Counted on the raw arrays, before any item is parsed: parsing is what costs, so an array of millions must be
        // refused for its length alone. Each item counts, a repeated address too (an agent naming one twice made a
        // mistake anyway); the envelope still lists each address once.
        var recipientItems = ArrayLength(arguments, "to") + ArrayLength(arguments, "cc") + ArrayLength(arguments, "bcc");
        var recipientsOk = recipientItems <= limits.MaxRecipients;
        if (!recipientsOk)
        {
            found.Add($"to, cc, bcc: {recipientItems} addresses, above the limit of {limits.MaxRecipients} (Gateway:Limits:MaxRecipients)");
        }

        var replyToItems = ArrayLength(arguments, "reply_to");
        var replyToOk = replyToItems <= MaxReplyTo;
        if (!replyToOk)
        {
            found.Add($"reply_to: {replyToItems} addresses, above the limit of {MaxReplyTo}");
        }

        var to = ParseAddresses(arguments, "to", required: true, recipientsOk, found);
        var cc = ParseAddresses(arguments, "cc", required: false, recipientsOk, found);
        var bcc = ParseAddresses(arguments, "bcc", required: false, recipientsOk, found);
        var replyTo = ParseAddresses(arguments, "reply_to", required: false, replyToOk, found);
        var subject = ParseSubject(arguments, found);
        var text = ParseBody(arguments, "text", found, out var textGiven);
        var html = ParseBody(arguments, "html", found, out var htmlGiven);
        if (!textGiven && !htmlGiven)
        {
            found.Add("text, html: at least one is required, a JSON string");
        }

        var attachments = ParseAttachments(arguments, limits, found);
        var headers = ParseHeaders(arguments, limits, found);

        errors = found.ToList();
        if (errors.Count > 0 || from is null || subject is null)
        {
            return null;
        }

        return new EmailRequest(from, to, cc, bcc, replyTo, subject, text, html, attachments, headers);
    }

    static ParserOptions CreateStrictOptions()
    {
        var options = ParserOptions.Default.Clone();
        options.AddressParserComplianceMode = RfcComplianceMode.Strict;
        options.AllowAddressesWithoutDomain = false;
        options.AllowUnquotedCommasInAddresses = false;
        options.ParameterComplianceMode = RfcComplianceMode.Strict;
        return options;
    }

    /// <summary>A JSON null counts as absent: several MCP clients send null for every optional argument they leave out.</summary>
    static bool TryGet(IReadOnlyDictionary<string, JsonElement> arguments, string name, out JsonElement value) =>
        arguments.TryGetValue(name, out value) && value.ValueKind is not (JsonValueKind.Null or JsonValueKind.Undefined);

    static bool TryGetField(JsonElement item, string name, out JsonElement value) =>
        item.TryGetProperty(name, out value) && value.ValueKind is not (JsonValueKind.Null or JsonValueKind.Undefined);

    static string Kind(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => "null",
    };

    /// <summary>Client text fit for an error message: short, and without anything that could break a log line.</summary>
    static string Echo(string text) => McpText.Printable(text, MaxEchoLength);

    /// <summary>The problem with a value bound for a header, or null; TAB only where RFC 5322 allows it as folding white space.</summary>
    static string? ControlProblem(string value, bool allowTab)
    {
        if (value.AsSpan().IndexOfAny('\r', '\n') >= 0)
        {
            return "contains CR or LF";
        }

        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            if (char.IsControl(c) && !(allowTab && c == '\t'))
            {
                return "contains a control character";
            }

            if (char.IsHighSurrogate(c) && i + 1 < value.Length && char.IsLowSurrogate(value[i + 1]))
            {
                i++;
            }
            else if (char.IsSurrogate(c))
            {
                // It would leave as U+FFFD: what the recipient sees would not be what was checked.
                return UnpairedSurrogate;
            }
        }

        return null;
    }

    /// <summary>
    /// The checks a free-text header value needs beyond <see cref="TryGetHeaderText"/>: what mail clients will show after
    /// decoding, and whether MimeKit can fold it into lines of at most 998 octets.
    /// </summary>
    static bool CheckHeaderValue(string fieldName, string value, string label, ErrorList found)
    {
        var decodedOk = CheckDecoded(value, allowTab: true, label, found);

        // MimeKit folds at white space and cannot split a word of a structured value (one message id in References), so
        // every word has to fit on one line after "Name: " (a continuation line's single space leaves more room). One
        // rule for every field, subject included. Octets, not characters: the limit is on the wire.
        var room = MaxHeaderValueLength - fieldName.Length - 2;
        int longest = 0, run = 0;
        foreach (var rune in value.EnumerateRunes())
        {
            run = rune.Value is ' ' or '\t' ? 0 : run + rune.Utf8SequenceLength;
            longest = Math.Max(longest, run);
        }

        if (longest > room)
        {
            found.Add($"{label}: a word of {longest} octets without a space, above the {room} that fit on one line after '{fieldName}: ' (RFC 5322 section 2.1.1)");
            return false;
        }

        return decodedOk;
    }

    /// <summary>An encoded word (=?utf-8?q?a=0D=0A?=) is written as it is, and decodes in the reader's client to what the raw check could not see.</summary>
    static bool CheckDecoded(string value, bool allowTab, string label, ErrorList found)
    {
        if (!value.Contains("=?", StringComparison.Ordinal)
            || ControlProblem(Rfc2047.DecodeText(Encoding.UTF8.GetBytes(value)), allowTab) is not { } problem)
        {
            return true;
        }

        found.Add($"{label}: the decoded encoded-word text {problem}");
        return false;
    }

    static bool TryGetString(JsonElement value, string label, string expected, ErrorList found, out string text)
    {
        text = "";
        if (value.ValueKind != JsonValueKind.String)
        {
            found.Add($"{label}: must be {expected}, not {Kind(value)}");
            return false;
        }

        if (!TryRead(() => value.GetString()!, out text))
        {
            found.Add($"{label}: {UnpairedSurrogate}");
            return false;
        }

        return true;
    }

    /// <summary>A string bound for a header: the right JSON type, at most <paramref name="maxLength"/> characters, no control characters.</summary>
    static bool TryGetHeaderText(JsonElement value, string label, string expected, int maxLength, bool allowTab, ErrorList found, out string text)
    {
        if (!TryGetString(value, label, expected, found, out text))
        {
            return false;
        }

        var ok = true;
        if (text.Length > maxLength)
        {
            found.Add($"{label}: longer than {maxLength} characters");
            ok = false;
        }

        if (ControlProblem(text, allowTab) is { } problem)
        {
            found.Add($"{label}: {problem}");
            ok = false;
        }

        return ok;
    }

    /// <summary>
    /// System.Text.Json refuses to return text with a \ud800-style escape that has no partner; that is the client's error,
    /// not an exception of the tool.
    /// </summary>
    static bool TryRead(Func<string> read, out string text)
    {
        try
        {
            text = read();
            return true;
        }
        catch (InvalidOperationException)
        {
            text = "";
            return false;
        }
    }

    /// <summary>The item count of an array argument; 0 when absent or not an array (its type error comes from its parser).</summary>
    static long ArrayLength(IReadOnlyDictionary<string, JsonElement> arguments, string name) =>
        TryGet(arguments, name, out var value) && value.ValueKind == JsonValueKind.Array ? value.GetArrayLength() : 0;

    static MailboxAddress? ParseFrom(IReadOnlyDictionary<string, JsonElement> arguments, ErrorList found)
    {
        if (!TryGet(arguments, "from", out var value))
        {
            found.Add("from: required, a JSON string with one address");
            return null;
        }

        return ParseAddress(value, "from", found);
    }

    /// <param name="parseItems">False when the count is already refused: the cheap checks still run, no item is parsed.</param>
    static List<MailboxAddress> ParseAddresses(IReadOnlyDictionary<string, JsonElement> arguments, string name, bool required, bool parseItems, ErrorList found)
    {
        var list = new List<MailboxAddress>();
        if (!TryGet(arguments, name, out var value))
        {
            if (required)
            {
                found.Add($"{name}: required, a JSON array of addresses");
            }

            return list;
        }

        if (value.ValueKind != JsonValueKind.Array)
        {
            found.Add($"{name}: must be a JSON array of addresses, not {Kind(value)}");
            return list;
        }

        if (required && value.GetArrayLength() == 0)
        {
            found.Add($"{name}: required, at least one address");
        }

        if (!parseItems)
        {
            return list;
        }

        var index = 0;
        foreach (var item in value.EnumerateArray())
        {
            if (ParseAddress(item, $"{name}[{index++}]", found) is { } mailbox)
            {
                list.Add(mailbox);
            }
        }

        return list;
    }

    static MailboxAddress? ParseAddress(JsonElement value, string label, ErrorList found)
    {
        if (!TryGetHeaderText(value, label, "a JSON string with one address", MaxAddressLength, allowTab: false, found, out var text))
        {
            return null;
        }

        if (string.IsNullOrWhiteSpace(text))
        {
            found.Add($"{label}: empty, one address is required");
            return null;
        }

        // One string is one mailbox: MailboxAddress.TryParse refuses groups and lists. A source route parses, so is refused
        // here; an address MimeKit tidied (a trailing dot dropped) is not the one the agent wrote; and the listener's own
        // grammar must take it, or the envelope would differ from what an SMTP client could send.
        if (!MailboxAddress.TryParse(Strict, text, out var mailbox) || mailbox.Route.Count > 0 || mailbox.Domain.Length == 0
            || !IsWrittenAs(text, mailbox.Address)
            || EnvelopePath(mailbox.Address) is null)
        {
            found.Add($"{label}: not one valid address: '{Echo(text)}'");
            return null;
        }

        // An encoded-word display name (=?utf-8?q?a=0D=0A?=) decodes to what the raw check could not see.
        if (ControlProblem(mailbox.Name ?? "", allowTab: false) is { } nameProblem)
        {
            found.Add($"{label}: the decoded display name {nameProblem}");
            return null;
        }

        return mailbox;
    }

    static bool IsWrittenAs(string text, string address)
    {
        var written = text.Trim();
        return written.Equals(address, StringComparison.Ordinal) || written.EndsWith("<" + address + ">", StringComparison.Ordinal);
    }

    /// <summary>The address as the listener's grammar reads a MAIL FROM path, or null when it would refuse it.</summary>
    internal static SmtpPath? EnvelopePath(string address) =>
        SmtpGrammar.TryParsePath("FROM:<" + address + ">", "FROM:", allowNull: false, out var path) == PathError.None ? path : null;

    static string? ParseSubject(IReadOnlyDictionary<string, JsonElement> arguments, ErrorList found)
    {
        if (!TryGet(arguments, "subject", out var value))
        {
            found.Add("subject: required, a JSON string (may be empty)");
            return null;
        }

        return TryGetHeaderText(value, "subject", "a JSON string", MaxHeaderValueLength, allowTab: true, found, out var subject)
            && CheckHeaderValue("Subject", subject, "subject", found)
            ? subject
            : null;
    }

    static string? ParseBody(IReadOnlyDictionary<string, JsonElement> arguments, string name, ErrorList found, out bool given)
    {
        given = TryGet(arguments, name, out var value);
        if (!given || !TryGetString(value, name, "a JSON string", found, out var body))
        {
            return null;
        }

        if (body.Contains('\0', StringComparison.Ordinal))
        {
            found.Add($"{name}: contains a NUL character");
            return null;
        }

        return body;
    }

    static List<McpAttachment> ParseAttachments(IReadOnlyDictionary<string, JsonElement> arguments, EmailLimits limits, ErrorList found)
    {
        var attachments = new List<McpAttachment>();
        if (!TryGet(arguments, "attachments", out var value))
        {
            return attachments;
        }

        if (value.ValueKind != JsonValueKind.Array)
        {
            found.Add($"attachments: must be a JSON array of objects {{filename, content_type, content_base64}}, not {Kind(value)}");
            return attachments;
        }

        var count = value.GetArrayLength();
        if (count > limits.MaxAttachments)
        {
            // Not looked into further: the count alone is the answer, and each item could be large.
            found.Add($"attachments: {count} attachments, above the limit of {limits.MaxAttachments} (Gateway:Mcp:MaxAttachments)");
            return attachments;
        }

        long total = 0;
        var index = 0;
        foreach (var item in value.EnumerateArray())
        {
            var label = $"attachments[{index++}]";
            if (item.ValueKind != JsonValueKind.Object)
            {
                found.Add($"{label}: must be a JSON object {{filename, content_type, content_base64}}, not {Kind(item)}");
                continue;
            }

            var fieldsOk = CheckFields(item, label, found);
            var fileName = ParseFileName(item, label, found);
            var contentType = ParseContentType(item, label, found);
            var content = ParseContent(item, label, limits.MaxAttachmentSize, ref total, found);
            if (fieldsOk && fileName is not null && contentType is not null && content is not null)
            {
                attachments.Add(new McpAttachment(fileName, contentType, content));
            }
        }

        if (total > limits.MaxAttachmentSize)
        {
            found.Add($"attachments: {total} bytes in total, above the limit of {limits.MaxAttachmentSize} bytes (Gateway:Mcp:MaxAttachmentSize)");
        }

        return attachments;
    }

    static bool CheckFields(JsonElement item, string label, ErrorList found)
    {
        var ok = true;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var property in item.EnumerateObject())
        {
            if (!TryRead(() => property.Name, out var name) || !AttachmentFields.Contains(name, StringComparer.Ordinal))
            {
                found.Add($"{label}: unknown field '{Echo(name)}'");
                ok = false;
            }
            else if (!seen.Add(name))
            {
                // JsonElement would silently take the last one; which one the client meant is unknowable.
                found.Add($"{label}: field '{name}' given twice");
                ok = false;
            }
        }

        return ok;
    }

    static string? ParseFileName(JsonElement item, string label, ErrorList found)
    {
        label += ".filename";
        if (!TryGetField(item, "filename", out var value))
        {
            found.Add($"{label}: required, a JSON string of 1 to {MaxFileNameLength} characters");
            return null;
        }

        if (!TryGetHeaderText(value, label, "a JSON string", MaxFileNameLength, allowTab: false, found, out var fileName)
            || !CheckDecoded(fileName, allowTab: false, label, found))
        {
            return null;
        }

        if (fileName.Length == 0)
        {
            found.Add($"{label}: empty, a file name is required");
            return null;
        }

        if (fileName.AsSpan().IndexOfAny('/', '\\') >= 0)
        {
            found.Add($"{label}: contains '/' or '\\', a file name has no path");
            return null;
        }

        return fileName;
    }

    static string? ParseContentType(JsonElement item, string label, ErrorList found)
    {
        label += ".content_type";
        if (!TryGetField(item, "content_type", out var value))
        {
            return DefaultContentType;
        }

        if (!TryGetHeaderText(value, label, "a JSON string", MaxContentTypeLength, allowTab: false, found, out var text))
        {
            return null;
        }

        if (!ContentType.TryParse(Strict, text, out var contentType))
        {
            found.Add($"{label}: not a valid MIME type: '{Echo(text)}'");
            return null;
        }

        if (contentType.IsMimeType("multipart", "*") || contentType.IsMimeType("message", "*"))
        {
            found.Add($"{label}: multipart/* and message/* are not allowed, the tool builds the MIME structure itself");
            return null;
        }

        return text;
    }

    /// <summary>
    /// Decodes one attachment unless that would take the running total over the cap. The size is judged from the length of
    /// the base64 text first, read from the JSON without copying it when it has no escapes, so a huge value is refused
    /// without allocating either its string or its bytes. The total counts estimates for what was not decoded.
    /// </summary>
    static byte[]? ParseContent(JsonElement item, string label, long maxTotal, ref long total, ErrorList found)
    {
        label += ".content_base64";
        if (!TryGetField(item, "content_base64", out var value))
        {
            found.Add($"{label}: required, the content as a base64 JSON string");
            return null;
        }

        if (value.ValueKind != JsonValueKind.String)
        {
            found.Add($"{label}: must be a base64 JSON string, not {Kind(value)}");
            return null;
        }

        var raw = JsonMarshal.GetRawUtf8Value(value);
        string? text = null;
        if (raw.Length >= 2 && raw[0] == '"')
        {
            raw = raw[1..^1];
        }

        if (raw.IndexOf((byte)'\\') >= 0)
        {
            // Escapes (System.Text.Json writes '+' as \u002B) make the raw length only an upper bound; the text is needed.
            if (!TryRead(() => value.GetString()!, out text))
            {
                found.Add($"{label}: not valid base64");
                return null;
            }
        }

        var length = text?.Length ?? raw.Length;
        var last = length < 1 ? '\0' : text is null ? (char)raw[^1] : text[^1];
        var beforeLast = length < 2 ? '\0' : text is null ? (char)raw[^2] : text[^2];
        var padding = last != '=' ? 0 : beforeLast == '=' ? 2 : 1;
        var estimate = Math.Max(0L, ((long)length / 4 * 3) - padding);
        if (total + estimate > maxTotal)
        {
            total += estimate;
            return null;
        }

        if (text is null && !TryRead(() => value.GetString()!, out text))
        {
            found.Add($"{label}: not valid base64");
            return null;
        }

        var buffer = new byte[estimate];
        if (!Convert.TryFromBase64String(text, buffer, out var written))
        {
            found.Add($"{label}: not valid base64");
            return null;
        }

        total += written;
        return written == buffer.Length ? buffer : buffer[..written];
    }

    static List<KeyValuePair<string, string>> ParseHeaders(IReadOnlyDictionary<string, JsonElement> arguments, EmailLimits limits, ErrorList found)
    {
        var headers = new List<KeyValuePair<string, string>>();
        if (!TryGet(arguments, "headers", out var value))
        {
            return headers;
        }

        if (value.ValueKind != JsonValueKind.Object)
        {
            found.Add($"headers: must be a JSON object of header name to string value, not {Kind(value)}");
            return headers;
        }

        // Counted without building anything, and only as far as the limit: an object of millions of names is refused for
        // its size alone, before a single name is read.
        var count = 0;
        foreach (var unused in value.EnumerateObject())
        {
            if (++count > MaxHeaders)
            {
                found.Add($"headers: more than {MaxHeaders} headers, above the limit of {MaxHeaders}");
                return headers;
            }
        }

        var allowed = new HashSet<string>(limits.AllowedHeaders.Where(h => !Configuration.McpConfig.IsForbiddenHeader(h)), StringComparer.OrdinalIgnoreCase);
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var property in value.EnumerateObject())
        {
            if (!TryRead(() => property.Name, out var name))
            {
                found.Add($"headers: a header name {UnpairedSurrogate}");
                continue;
            }

            var nameOk = CheckHeaderName(name, allowed, limits, found);
            if (!seen.Add(name))
            {
                found.Add($"headers: '{Echo(name)}' given twice");
                nameOk = false;
            }

            var label = $"headers['{Echo(name)}']";
            if (TryGetHeaderText(property.Value, label, "a JSON string", MaxHeaderValueLength, allowTab: true, found, out var text)
                && nameOk
                && CheckHeaderValue(name, text, label, found))
            {
                headers.Add(new KeyValuePair<string, string>(name, text));
            }
        }

        return headers;
    }

    static bool CheckHeaderName(string name, HashSet<string> allowed, EmailLimits limits, ErrorList found)
    {
        if (ControlProblem(name, allowTab: false) is { } problem)
        {
            found.Add($"headers: header name '{Echo(name)}' {problem}");
            return false;
        }

        // RFC 5322 section 3.6.8: field-name = 1*ftext, printable US-ASCII except ':'.
        if (name.Length == 0 || !name.All(c => c is >= '!' and <= '~' and not ':'))
        {
            found.Add($"headers: '{Echo(name)}' is not a valid header name (printable ASCII, no space or ':')");
            return false;
        }

        if (Configuration.McpConfig.IsForbiddenHeader(name))
        {
            found.Add($"headers: '{Echo(name)}' can never be set through headers");
            return false;
        }

        if (!allowed.Contains(name))
        {
            var list = string.Join(", ", limits.AllowedHeaders.Where(allowed.Contains));
            found.Add($"headers: '{Echo(name)}' is not an allowed header (allowed: {(list.Length == 0 ? "none" : list)})");
            return false;
        }

        return true;
    }

    /// <summary>Collects messages up to <see cref="MaxErrors"/>, then only counts them.</summary>
    sealed class ErrorList
    {
        readonly List<string> _errors = [];
        int _dropped;

        public void Add(string error)
        {
            if (_errors.Count < MaxErrors)
            {
                _errors.Add(error);
            }
            else
            {
                _dropped++;
            }
        }

        public IReadOnlyList<string> ToList() => _dropped == 0 ? _errors : [.. _errors, $"... and {_dropped} more errors"];
    }
}
