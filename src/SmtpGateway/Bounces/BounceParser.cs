using System.Globalization;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using MimeKit;

namespace SmtpGateway.Bounces;

/// <summary>What a report says happened to one recipient.</summary>
public enum BounceKind
{
    /// <summary>Permanent failure (RFC 3463 class 5, RFC 3464 Action: failed).</summary>
    HardBounce,

    /// <summary>Temporary failure or delay (RFC 3463 class 4, RFC 3464 Action: delayed).</summary>
    SoftBounce,

    /// <summary>The recipient reported the message as unwanted (RFC 5965 feedback report).</summary>
    Complaint,

    /// <summary>Positive DSN (RFC 3464 Action: delivered / relayed / expanded).</summary>
    Delivered,

    /// <summary>Nothing we can act on (auto-reply, "not-spam" feedback, unreadable report).</summary>
    Unknown,
}

/// <summary>One finding about one recipient of one of our messages.</summary>
/// <param name="Kind">What happened.</param>
/// <param name="Recipient">The original recipient address (as we sent it, bare addr-spec) that passed the caller's
/// candidate check; null when no address in the report passed it.</param>
/// <param name="Status">RFC 3463 enhanced status "5.1.1", null when unknown.</param>
/// <param name="Diagnostic">Remote diagnostic text (Diagnostic-Code value without its type / SMTP reply): one line,
/// control characters removed, at most 500 characters.</param>
/// <param name="ReportingMta">Reporting-MTA value without its "dns;" type, sanitised; null when absent.</param>
/// <param name="FeedbackType">RFC 5965 Feedback-Type (abuse, fraud, virus, other, not-spam...), null for DSNs.</param>
/// <param name="Format">"dsn" (RFC 3464 / RFC 6533), "arf" (RFC 5965) or "heuristic" (non-standard bounce).</param>
public sealed record BounceFinding(
    BounceKind Kind,
    string? Recipient,
    string? Status,
    string? Diagnostic,
    string? ReportingMta,
    string? FeedbackType,
    string Format);

/// <summary>
/// Pure parser for what arrives at a VERP return path: RFC 3464 delivery status notifications (and their RFC 6533
/// internationalised form), RFC 5965 abuse feedback reports, and the non-standard text bounces some MTAs still send.
/// The input is hostile (anyone can send to a return path), so: bounded reads, bounded loops, no exception escapes
/// for malformed input, and every string that leaves is one line of printable text (they end up in JSON events and logs).
/// </summary>
public static partial class BounceParser
{
    /// <summary>Most bytes of a message read; the rest is ignored. Reports put their machine-readable part before the
    /// returned original (RFC 6522 section 3), so a cut-off tail only loses the copy of our own message.</summary>
    internal const int MaxMessageBytes = 5 * 1024 * 1024;

    /// <summary>Most characters of text (text parts, report parts) examined in all.</summary>
    internal const int MaxTextChars = 5 * 1024 * 1024;

    /// <summary>Most per-recipient status groups of one DSN examined.</summary>
    internal const int MaxStatusGroups = 1000;

    /// <summary>Most distinct addresses offered to the candidate check.</summary>
    internal const int MaxCandidates = 1000;

    internal const int MaxDiagnosticChars = 500;
    const int MaxMtaChars = 255;
    const int MaxFeedbackTypeChars = 64;

    /// <summary>RFC 5321 section 4.5.3.1: local-part 64 + "@" + domain 255 octets.</summary>
    const int MaxAddressChars = 64 + 1 + 255;

    /// <summary>Longest local part the text scanner walks back over (generous: some real local parts exceed 64).</summary>
    const int MaxScanLocal = 128;

    const int MaxMimeDepth = 32;
    const int MaxEntities = 1000;
    const int MaxFieldChars = 4096;
    const int MaxFieldsPerGroup = 100;
    const int MaxSpots = 10_000;
    const int MaxPhraseChars = 256 * 1024;

    /// <summary>How far after / before an address in a text bounce a reply code is taken to be about it.</summary>
    const int NearAfter = 1500;
    const int NearBefore = 300;

    /// <summary>
    /// Parses one inbound message that arrived at a VERP return path. <paramref name="isCandidate"/> tells whether an
    /// address (bare addr-spec, any case) is the recipient the VERP tag was made for; only addresses passing it are
    /// reported. Malformed input yields an empty list or <see cref="BounceKind.Unknown"/> findings, never an exception;
    /// exceptions thrown by the stream or by <paramref name="isCandidate"/> propagate.
    /// </summary>
    public static IReadOnlyList<BounceFinding> Parse(Stream message, Func<string, bool> isCandidate)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(isCandidate);

        // Read before parsing so an I/O failure of the caller's stream surfaces as such, not as "malformed".
        using var buffer = ReadCapped(message, MaxMessageBytes);
        var candidates = new CandidateFilter(isCandidate);
        try
        {
            return ParseCore(buffer, candidates);
        }
#pragma warning disable CA1031 // Hostile input: whatever MimeKit or the decoders throw means "unreadable", not a crash.
        catch (Exception ex) when (!candidates.InCallback && ex is not OutOfMemoryException)
#pragma warning restore CA1031
        {
            return [];
        }
    }

    static MemoryStream ReadCapped(Stream source, int max)
    {
        var output = new MemoryStream();
        var chunk = new byte[81920];
        while (output.Length < max)
        {
            var read = source.Read(chunk, 0, (int)Math.Min(chunk.Length, max - output.Length));
            if (read == 0)
            {
                break;
            }

            output.Write(chunk, 0, read);
        }

        output.Position = 0;
        return output;
    }

    static List<BounceFinding> ParseCore(MemoryStream buffer, CandidateFilter candidates)
    {
        if (buffer.Length == 0)
        {
            return [];
        }

        var options = ParserOptions.Default.Clone();
        options.MaxMimeDepth = MaxMimeDepth; // deeply nested multiparts must not exhaust the stack
        var message = MimeMessage.Load(options, buffer, persistent: true);
        var leaves = Leaves(message.Body);
        var budget = new TextBudget();

        foreach (var leaf in leaves)
        {
            if (leaf.Entity is not MimePart part)
            {
                continue;
            }

            if (IsDeliveryStatus(part.ContentType))
            {
                var findings = FromDsn(part, budget, candidates);
                if (findings.Count > 0)
                {
                    return findings;
                }

                break; // a report part without recipient groups: fall back to reading the text
            }

            if (part.ContentType.IsMimeType("message", "feedback-report"))
            {
                return [FromArf(part, leaf.Parent, leaves, budget, candidates)];
            }
        }

        return [FromText(message, leaves, budget, candidates)];
    }

    // ---- RFC 3464 / RFC 6533 delivery status notifications ----

    /// <summary>RFC 3464 section 2.1 message/delivery-status, RFC 6533 section 6.2 message/global-delivery-status.</summary>
    static bool IsDeliveryStatus(ContentType type) =>
        type.IsMimeType("message", "delivery-status") || type.IsMimeType("message", "global-delivery-status");

    static List<BounceFinding> FromDsn(MimePart part, TextBudget budget, CandidateFilter candidates)
    {
        var groups = ParseFieldGroups(budget.Take(DecodeContent(part, budget.Remaining)), MaxStatusGroups + 1);
        var findings = new List<BounceFinding>();
        if (groups.Count == 0)
        {
            return findings;
        }

        // RFC 3464 section 2.2: the first group holds the per-message fields. A broken report may omit it.
        List<KeyValuePair<string, string>> perMessage = IsRecipientGroup(groups[0]) ? [] : groups[0];
        var reportingMta = Sanitize(StripType(Field(perMessage, "Reporting-MTA")), MaxMtaChars);

        foreach (var group in groups)
        {
            if (findings.Count >= MaxStatusGroups)
            {
                break;
            }

            if (ReferenceEquals(group, perMessage) || !IsRecipientGroup(group))
            {
                continue;
            }

            var diagnostic = Sanitize(StripType(Field(group, "Diagnostic-Code")), MaxDiagnosticChars);
            var status = ParseStatus(Field(group, "Status")) ?? FirstEnhancedStatus(diagnostic);
            var kind = FirstToken(Field(group, "Action"))?.ToLowerInvariant() switch
            {
                // RFC 3464 section 2.3.3. "failed" without a class 5 status is not trusted as permanent.
                "failed" => status is ['5', ..] ? BounceKind.HardBounce : BounceKind.SoftBounce,
                "delayed" => BounceKind.SoftBounce,
                "delivered" or "relayed" or "expanded" => BounceKind.Delivered,
                _ => status switch
                {
                    ['5', ..] => BounceKind.HardBounce,
                    ['4', ..] => BounceKind.SoftBounce,
                    ['2', ..] => BounceKind.Delivered,
                    _ => BounceKind.Unknown,
                },
            };

            // RFC 3464 section 2.3.1: Original-Recipient is the address as we gave it (ORCPT), so prefer it;
            // Final-Recipient (2.3.2) may be a forwarding target we never sent to.
            var recipient = CheckAddressField(Field(group, "Original-Recipient"), candidates)
                ?? CheckAddressField(Field(group, "Final-Recipient"), candidates);
            findings.Add(new BounceFinding(kind, recipient, status, diagnostic, reportingMta, null, "dsn"));
        }

        return findings;
    }

    static bool IsRecipientGroup(List<KeyValuePair<string, string>> group) =>
        Field(group, "Final-Recipient") is not null || Field(group, "Original-Recipient") is not null
        || Field(group, "Action") is not null || Field(group, "Status") is not null;

    /// <summary>
    /// "rfc822; user@example.net" / "utf-8; j\x{00F6}rg@example.net" (RFC 3464 sections 2.3.1-2.3.2, RFC 6533 section 3):
    /// strips the address type and decodes what the type implies, then asks the candidate check.
    /// </summary>
    static string? CheckAddressField(string? value, CandidateFilter candidates)
    {
        if (value is null)
        {
            return null;
        }

        var semicolon = value.IndexOf(';', StringComparison.Ordinal);
        var type = semicolon < 0 ? "" : value[..semicolon].Trim();
        var address = FirstToken(semicolon < 0 ? value : value[(semicolon + 1)..]);
        if (address is null)
        {
            return null;
        }

        if (type.Equals("utf-8", StringComparison.OrdinalIgnoreCase))
        {
            address = DecodeUnicodeEscapes(address);
        }

        var found = candidates.Check(address);
        if (found is null && address.Contains('+', StringComparison.Ordinal))
        {
            // Some MTAs copy the ORCPT parameter still in xtext (RFC 3461 section 4.2) instead of decoding it. Only a
            // second try: '+' is also a common sub-address separator, so the raw form goes first.
            var decoded = DecodeXtext(address);
            if (decoded != address)
            {
                found = candidates.Check(decoded);
            }
        }

        return found;
    }

    /// <summary>RFC 6533 section 3 embedded-unicode-char: "\x{" 1*6HEXDIG "}".</summary>
    static string DecodeUnicodeEscapes(string value)
    {
        if (!value.Contains("\\x{", StringComparison.OrdinalIgnoreCase))
        {
            return value;
        }

        var sb = new StringBuilder(value.Length);
        for (var i = 0; i < value.Length; i++)
        {
            if (value[i] == '\\' && i + 3 < value.Length && (value[i + 1] is 'x' or 'X') && value[i + 2] == '{')
            {
                var close = value.IndexOf('}', i + 3);
                if (close > i + 3 && close - (i + 3) <= 6
                    && int.TryParse(value.AsSpan(i + 3, close - (i + 3)), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var cp)
                    && cp is > 0 and <= 0x10FFFF and not (>= 0xD800 and <= 0xDFFF))
                {
                    sb.Append(char.ConvertFromUtf32(cp));
                    i = close;
                    continue;
                }
            }

            sb.Append(value[i]);
        }

        return sb.ToString();
    }

    /// <summary>RFC 3461 section 4: "+" followed by two upper-case hex digits.</summary>
    static string DecodeXtext(string value)
    {
        var sb = new StringBuilder(value.Length);
        for (var i = 0; i < value.Length; i++)
        {
            if (value[i] == '+' && i + 2 < value.Length && IsUpperHex(value[i + 1]) && IsUpperHex(value[i + 2]))
            {
                sb.Append((char)Convert.ToInt32(value.Substring(i + 1, 2), 16));
                i += 2;
            }
            else
            {
                sb.Append(value[i]);
            }
        }

        return sb.ToString();

        static bool IsUpperHex(char c) => c is (>= '0' and <= '9') or (>= 'A' and <= 'F');
    }

    /// <summary>RFC 3463 section 2: class "." subject "." detail, each 1-3 digits; a leading token of the field.</summary>
    static string? ParseStatus(string? value)
    {
        var token = FirstToken(value);
        return token is not null && StatusExact().IsMatch(token) ? token : null;
    }

    static string? FirstEnhancedStatus(string? text)
    {
        if (text is null)
        {
            return null;
        }

        var match = EnhancedStatus().Match(text);
        return match.Success ? match.Value : null;
    }

    // ---- RFC 5965 feedback reports ----

    static BounceFinding FromArf(MimePart part, Multipart? parent, List<Leaf> leaves, TextBudget budget, CandidateFilter candidates)
    {
        // RFC 5965 section 3.1: one block of header-like fields; be lenient about stray blank lines.
        var fields = ParseFieldGroups(budget.Take(DecodeContent(part, budget.Remaining)), 4).SelectMany(g => g).ToList();
        var feedbackType = Sanitize(FirstToken(Field(fields, "Feedback-Type"))?.ToLowerInvariant(), MaxFeedbackTypeChars);

        // "not-spam" (RFC 6650 section 4) retracts a complaint; "auth-failure" (RFC 6591) is a DMARC/DKIM failure
        // report about the message, not the recipient complaining about it. Feedback-Type is required (RFC 5965
        // section 3.1): a report without one is unreadable, and a wrong complaint would suppress a good recipient.
        var kind = feedbackType is null or "not-spam" or "auth-failure" ? BounceKind.Unknown : BounceKind.Complaint;
        var reportingMta = Sanitize(StripType(Field(fields, "Reporting-MTA") ?? Field(fields, "Source")), MaxMtaChars);

        string? recipient = null;
        foreach (var field in fields)
        {
            // RFC 5965 section 3.2: Original-Rcpt-To may appear once per envelope recipient.
            if (field.Key.Equals("Original-Rcpt-To", StringComparison.OrdinalIgnoreCase))
            {
                recipient = candidates.Check(field.Value);
                if (recipient is not null)
                {
                    break;
                }
            }
        }

        if (recipient is null)
        {
            // RFC 5965 section 2 item d: the third part is the reported message (or its header section); many
            // reporters redact or omit Original-Rcpt-To, but the To/Cc of our own message are still there.
            var enclosed = leaves.Where(l => l.Parent == parent && !ReferenceEquals(l.Entity, part)).Select(l => l.Entity);
            recipient = FirstCandidate(enclosed.SelectMany(e => RecipientHeaderValues(e, budget)), candidates);
        }

        return new BounceFinding(kind, recipient, null, null, reportingMta, feedbackType, "arf");
    }

    // ---- Non-standard (text) bounces ----

    static BounceFinding FromText(MimeMessage message, List<Leaf> leaves, TextBudget budget, CandidateFilter candidates)
    {
        var text = CollectText(leaves, budget);
        var region = text[..DiagnosticRegionEnd(text)];

        string? recipient = null;
        var recipientIndex = -1;
        foreach (var (address, index) in ScanAddresses(text))
        {
            if (candidates.Exhausted)
            {
                break;
            }

            recipient = candidates.Check(address);
            if (recipient is not null)
            {
                recipientIndex = index;
                break;
            }
        }

        recipient ??= FirstCandidate(leaves.SelectMany(l => RecipientHeaderValues(l.Entity, budget)), candidates);

        var spots = FindSpots(region);
        Spot? near = null;
        if (recipientIndex >= 0 && recipientIndex < region.Length)
        {
            var end = NearWindowEnd(region, recipientIndex, recipient!);
            near = spots.FirstOrDefault(s => s.Index > recipientIndex && s.Index < end) is { Class: not '\0' } after
                ? after
                : spots.LastOrDefault(s => s.Index < recipientIndex && s.Index >= recipientIndex - NearBefore) is { Class: not '\0' } before
                    ? before
                    : null;
        }

        var phrases = Normalize(region.Length > MaxPhraseChars ? region[..MaxPhraseChars] : region);
        var looksLikeBounce = LooksLikeBounce(message, phrases);
        BounceKind kind;
        Spot? chosen;
        string? status;
        if (!looksLikeBounce)
        {
            // An auto-reply or a person answering: codes in it mean nothing.
            kind = BounceKind.Unknown;
            chosen = null;
            status = null;
        }
        else if (near is { } n)
        {
            kind = n.Class == '5' ? BounceKind.HardBounce : BounceKind.SoftBounce;
            chosen = n;
            status = n.Status;
        }
        else if (spots.Count > 0)
        {
            var hard = spots.FirstOrDefault(s => s.Class == '5');
            kind = hard.Class == '5' ? BounceKind.HardBounce : BounceKind.SoftBounce;
            chosen = hard.Class == '5' ? hard : spots[0];
            status = spots.FirstOrDefault(s => s.Status is not null).Status;
        }
        else
        {
            kind = PhraseKind(phrases);
            chosen = null;
            status = null;
        }

        var diagnostic = chosen is { } c ? Sanitize(LineAt(region, c.Index), MaxDiagnosticChars) : null;
        return new BounceFinding(kind, recipient, status, diagnostic, ReportingMtaFromText(region), null, "heuristic");
    }

    /// <summary>The plain text parts (HTML only when there is no plain text), within the text budget.</summary>
    static string CollectText(List<Leaf> leaves, TextBudget budget)
    {
        var plain = new List<TextPart>();
        var html = new List<TextPart>();
        foreach (var leaf in leaves)
        {
            if (leaf.Entity is not TextPart part || IsHeadersType(part.ContentType))
            {
                continue;
            }

            (part.IsHtml ? html : plain).Add(part);
        }

        var sb = new StringBuilder();
        foreach (var part in plain.Count > 0 ? plain : html)
        {
            if (budget.Remaining <= 0)
            {
                break;
            }

            var text = budget.Take(TextOf(part, budget.Remaining));
            sb.Append(part.IsHtml ? StripHtml(text) : text).Append("\n\n");
        }

        return sb.ToString();
    }

    static string TextOf(TextPart part, int max)
    {
        string text;
        try
        {
            text = part.Text ?? "";
        }
        catch (Exception ex) when (ex is ArgumentException or NotSupportedException or FormatException)
        {
            // Unknown or lying charset: read the bytes as UTF-8 rather than losing the part.
            text = DecodeContent(part, max);
        }

        return text.Length > max ? text[..max] : text;
    }

    /// <summary>Tags become line breaks (so line-based diagnostics still work), entities are decoded. Linear time.</summary>
    static string StripHtml(string html)
    {
        var sb = new StringBuilder(html.Length);
        var inTag = false;
        foreach (var c in html)
        {
            if (inTag)
            {
                if (c == '>')
                {
                    inTag = false;
                }
            }
            else if (c == '<')
            {
                inTag = true;
                sb.Append('\n');
            }
            else
            {
                sb.Append(c);
            }
        }

        return WebUtility.HtmlDecode(sb.ToString());
    }

    /// <summary>
    /// Where the copy of our own message starts in a text bounce (qmail "--- Below this line is a copy of the message.",
    /// Exim "------ This is a copy of the message", Exchange "Original message headers:"): codes and phrases after it
    /// were written by our tenant, not by the reporting MTA, so they must not decide the outcome.
    /// </summary>
    static int DiagnosticRegionEnd(string text)
    {
        var pos = 0;
        while (pos < text.Length)
        {
            var eol = text.IndexOf('\n', pos);
            if (eol < 0)
            {
                eol = text.Length;
            }

            var line = text.AsSpan(pos, eol - pos).Trim();
            if (line.StartsWith("original message headers", StringComparison.OrdinalIgnoreCase)
                || (line.StartsWith("---", StringComparison.Ordinal)
                    && (line.Contains("copy of the message", StringComparison.OrdinalIgnoreCase)
                        || line.Contains("original message", StringComparison.OrdinalIgnoreCase)
                        || line.Contains("undelivered message", StringComparison.OrdinalIgnoreCase))))
            {
                return pos;
            }

            pos = eol + 1;
        }

        return text.Length;
    }

    /// <summary>The forward window ends early at the next line that starts with a different address (the next
    /// recipient's block in qmail / Exim lists), so one recipient does not inherit the next one's reply.</summary>
    static int NearWindowEnd(string region, int recipientIndex, string recipient)
    {
        var end = Math.Min(region.Length, recipientIndex + NearAfter);
        var start = recipientIndex + recipient.Length;
        if (start >= end)
        {
            return end;
        }

        foreach (var (address, index) in ScanAddresses(region[start..end]))
        {
            var at = start + index;
            if (!address.Equals(recipient, StringComparison.OrdinalIgnoreCase) && StartsLine(region, at))
            {
                return at;
            }
        }

        return end;

        static bool StartsLine(string text, int index)
        {
            for (var i = index - 1; i >= 0 && index - i < 80; i--)
            {
                if (text[i] == '\n')
                {
                    return true;
                }

                if (text[i] is not (' ' or '\t' or '<' or '\r'))
                {
                    return false;
                }
            }

            return index < 80;
        }
    }

    readonly record struct Spot(int Index, char Class, string? Status);

    /// <summary>RFC 3463 codes of class 4/5 and RFC 5321 section 4.2 reply codes 4xx/5xx, in text order.</summary>
    static List<Spot> FindSpots(string region)
    {
        var enhanced = new Dictionary<int, Spot>();
        foreach (Match m in EnhancedStatus().Matches(region))
        {
            if (enhanced.Count >= MaxSpots)
            {
                break;
            }

            if (m.Value[0] is '4' or '5')
            {
                enhanced[m.Index] = new Spot(m.Index, m.Value[0], m.Value);
            }
        }

        var spots = new List<Spot>();
        var replies = 0;
        foreach (Match m in ReplyCode().Matches(region))
        {
            if (++replies > MaxSpots)
            {
                break;
            }

            var code = m.Groups["code"];
            var next = m.Index + m.Length; // the character after the separator
            if (enhanced.Remove(next, out var status))
            {
                spots.Add(status with { Index = code.Index });
                continue;
            }

            // A bare number after a colon ("Size: 450 bytes") is not a reply; replies go on with text that reads
            // like one, or the line says "said:" (qmail, Postfix).
            var separator = region[code.Index + 3];
            var follower = next < region.Length ? region[next] : '\n';
            if (separator == '-' || char.IsAsciiLetterUpper(follower) || follower is '<' or '#' or '"' or '\'' or '[' or '('
                || m.Value.Contains("said:", StringComparison.OrdinalIgnoreCase))
            {
                spots.Add(new Spot(code.Index, code.Value[0], null));
            }
        }

        spots.AddRange(enhanced.Values);
        spots.Sort((a, b) => a.Index.CompareTo(b.Index));
        return spots;
    }

    static string LineAt(string text, int index)
    {
        var start = index;
        while (start > 0 && text[start - 1] != '\n' && index - start < 1000)
        {
            start--;
        }

        var end = text.IndexOf('\n', index);
        if (end < 0)
        {
            end = text.Length;
        }

        end = Math.Min(end, index + 2000);
        return text[start..end];
    }

    static readonly string[] NeutralPhrases =
    [
        "mail delivery software", "qmail-send program", "this is the mail system", "delivery status notification",
        "mail delivery subsystem", "mail delivery system", "non-delivery", "returned mail", "undelivered mail",
        "failure notice", "diagnostic information for administrators",
    ];

    static readonly string[] PermanentPhrases =
    [
        "permanent error", "permanent failure", "permanent fatal error", "failed permanently", "i've given up", "have given up",
    ];

    static readonly string[] DelayPhrases =
    [
        "not yet been delivered", "has been delayed", "delivery is delayed", "delivery delayed", "delayed", "will retry",
        "will be retried", "delivery attempts will continue", "still trying", "warning only", "temporary failure",
        "temporarily", "hasn't been delivered yet", "has not been delivered yet",
    ];

    static readonly string[] FailurePhrases =
    [
        "could not be delivered", "couldn't be delivered", "wasn't delivered", "was not delivered", "undeliverable",
        "delivery has failed", "delivery failed", "unable to deliver", "wasn't able to deliver", "was not able to deliver",
        "could not deliver", "user unknown", "unknown user", "no such user", "does not exist", "doesn't exist",
        "address rejected", "mailbox unavailable", "recipient not found", "address not found", "rejected",
    ];

    static readonly string[] BounceSubjects =
    [
        "undeliver", "delivery status notification", "delivery failure", "failure notice", "returned mail",
        "mail delivery failed", "delivery has failed", "non-delivery", "delivery delayed", "delayed mail",
        "could not send", "delivery notification", "not delivered",
    ];

    static bool LooksLikeBounce(MimeMessage message, string phrases)
    {
        foreach (var mailbox in message.From.Mailboxes)
        {
            var local = mailbox.LocalPart ?? "";
            if (local.Equals("mailer-daemon", StringComparison.OrdinalIgnoreCase) || local.Equals("postmaster", StringComparison.OrdinalIgnoreCase)
                || local.Equals("mail-daemon", StringComparison.OrdinalIgnoreCase) || local.Equals("mailerdaemon", StringComparison.OrdinalIgnoreCase)
                || (mailbox.Name ?? "").Contains("mail delivery", StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        var subject = message.Subject ?? "";
        return BounceSubjects.Any(s => subject.Contains(s, StringComparison.OrdinalIgnoreCase))
            || ContainsAny(phrases, NeutralPhrases) || ContainsAny(phrases, PermanentPhrases)
            || ContainsAny(phrases, DelayPhrases) || ContainsAny(phrases, FailurePhrases);
    }

    /// <summary>No code anywhere: the wording decides. An explicit "permanent" wins; a delay notice says "could not be
    /// delivered for 4 hours ... will be retried" (Postfix), so delay wording beats plain failure wording.</summary>
    static BounceKind PhraseKind(string phrases) =>
        ContainsAny(phrases, PermanentPhrases) ? BounceKind.HardBounce
        : ContainsAny(phrases, DelayPhrases) ? BounceKind.SoftBounce
        : ContainsAny(phrases, FailurePhrases) ? BounceKind.HardBounce
        : BounceKind.Unknown;

    static bool ContainsAny(string text, string[] phrases) => phrases.Any(p => text.Contains(p, StringComparison.Ordinal));

    /// <summary>Lower case, typographic apostrophes folded, whitespace runs (line wrapping) collapsed.</summary>
    static string Normalize(string text)
    {
        var sb = new StringBuilder(text.Length);
        var space = false;
        foreach (var c in text)
        {
            if (char.IsWhiteSpace(c))
            {
                space = true;
                continue;
            }

            if (space && sb.Length > 0)
            {
                sb.Append(' ');
            }

            space = false;
            sb.Append(c is '\u2019' or '\u2018' ? '\'' : char.ToLowerInvariant(c));
        }

        return sb.ToString();
    }

    static string? ReportingMtaFromText(string region)
    {
        var match = ReportingHost().Match(region.Length > MaxPhraseChars ? region[..MaxPhraseChars] : region);
        return match.Success ? Sanitize(match.Groups["host"].Value.TrimEnd('.'), MaxMtaChars) : null;
    }

    // ---- Addresses ----

    /// <summary>
    /// Addresses in free text, in order, by expanding around each "@": linear in the text length whatever it holds
    /// (a regular expression for addresses backtracks badly on long runs of local-part characters).
    /// </summary>
    static IEnumerable<(string Address, int Index)> ScanAddresses(string text)
    {
        for (var at = text.IndexOf('@', StringComparison.Ordinal); at >= 0; at = text.IndexOf('@', at + 1))
        {
            var start = at;
            while (start > 0 && at - start < MaxScanLocal && IsLocalChar(text[start - 1]))
            {
                start--;
            }

            var end = at + 1;
            while (end < text.Length && end - at <= 255 && IsDomainChar(text[end]))
            {
                end++;
            }

            while (start < at && text[start] == '.')
            {
                start++;
            }

            while (end > at + 1 && text[end - 1] is '.' or '-')
            {
                end--;
            }

            if (start == at || end == at + 1)
            {
                continue;
            }

            yield return (text[start..end], start);

            // "'user@example.com'" or "=user@...": also offer it without leading punctuation.
            var trimmed = start;
            while (trimmed < at && !char.IsLetterOrDigit(text[trimmed]))
            {
                trimmed++;
            }

            if (trimmed > start && trimmed < at)
            {
                yield return (text[trimmed..end], trimmed);
            }
        }
    }

    /// <summary>RFC 5322 section 3.2.3 atext plus "." and non-ASCII (RFC 6532 section 3.2).</summary>
    static bool IsLocalChar(char c) =>
        char.IsAsciiLetterOrDigit(c) || c is '.' or '!' or '#' or '$' or '%' or '&' or '\'' or '*' or '+' or '-' or '/'
            or '=' or '?' or '^' or '_' or '`' or '{' or '|' or '}' or '~'
        || (c > 0x7F && char.IsLetterOrDigit(c));

    static bool IsDomainChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' || (c > 0x7F && char.IsLetterOrDigit(c));

    /// <summary>A bare addr-spec or null: no display name, comment, brackets, whitespace or control characters.</summary>
    internal static string? PlausibleAddress(string? value)
    {
        if (value is null)
        {
            return null;
        }

        var s = value.Trim();
        if (s.Length >= 2 && s[0] == '<' && s[^1] == '>')
        {
            s = s[1..^1].Trim();
        }

        if (s.Length is < 3 or > MaxAddressChars)
        {
            return null;
        }

        var at = s.LastIndexOf('@');
        if (at <= 0 || at == s.Length - 1)
        {
            return null;
        }

        foreach (var c in s.AsSpan(0, at))
        {
            if (char.IsControl(c) || char.IsWhiteSpace(c) || c is '<' or '>' or '(' or ')' or '[' or ']' or ',' or ';' or ':' or '\\' or '"' or '@'
                || char.GetUnicodeCategory(c) == UnicodeCategory.Format)
            {
                return null;
            }
        }

        var domain = s.AsSpan(at + 1);
        if (domain[0] == '[')
        {
            return domain[^1] == ']' && domain.Length > 2 && !domain[1..^1].ContainsAnyExcept("0123456789abcdefABCDEF.:Iv6") ? s : null;
        }

        if (domain[0] is '.' or '-' || domain[^1] is '.' or '-' || !domain.Contains('.') || domain.Contains("..", StringComparison.Ordinal))
        {
            return null;
        }

        foreach (var c in domain)
        {
            if (!IsDomainChar(c))
            {
                return null;
            }
        }

        return s;
    }

    static string? FirstCandidate(IEnumerable<string> headerValues, CandidateFilter candidates)
    {
        foreach (var value in headerValues)
        {
            foreach (var (address, _) in ScanAddresses(value))
            {
                if (candidates.Exhausted)
                {
                    return null;
                }

                if (candidates.Check(address) is { } found)
                {
                    return found;
                }
            }
        }

        return null;
    }

    /// <summary>To and Cc of an enclosed message (message/rfc822, message/global) or header section
    /// (text/rfc822-headers of RFC 6522 section 4, message/global-headers of RFC 6533 section 3).</summary>
    static IEnumerable<string> RecipientHeaderValues(MimeEntity entity, TextBudget budget)
    {
        if (entity is MessagePart { Message: { } enclosed })
        {
            foreach (var header in enclosed.Headers)
            {
                if (header.Id is HeaderId.To or HeaderId.Cc)
                {
                    yield return header.Value ?? "";
                }
            }
        }
        else if (entity is MimePart part && IsHeadersType(part.ContentType))
        {
            var groups = ParseFieldGroups(budget.Take(DecodeContent(part, Math.Min(budget.Remaining, 256 * 1024))), 1);
            foreach (var field in groups.SelectMany(g => g))
            {
                if (field.Key.Equals("To", StringComparison.OrdinalIgnoreCase) || field.Key.Equals("Cc", StringComparison.OrdinalIgnoreCase))
                {
                    yield return field.Value;
                }
            }
        }
    }

    static bool IsHeadersType(ContentType type) =>
        type.IsMimeType("text", "rfc822-headers") || type.IsMimeType("message", "global-headers");

    /// <summary>Remembers answers per address and stops asking after <see cref="MaxCandidates"/> distinct ones.</summary>
    sealed class CandidateFilter(Func<string, bool> isCandidate)
    {
        readonly Dictionary<string, bool> _seen = new(StringComparer.OrdinalIgnoreCase);

        /// <summary>True while the caller's predicate runs: an exception from it is the caller's, not malformed input.</summary>
        public bool InCallback { get; private set; }

        public bool Exhausted => _seen.Count >= MaxCandidates;

        public string? Check(string? raw)
        {
            var address = PlausibleAddress(raw);
            if (address is null)
            {
                return null;
            }

            if (_seen.TryGetValue(address, out var known))
            {
                return known ? address : null;
            }

            if (Exhausted)
            {
                return null;
            }

            InCallback = true;
            var passes = isCandidate(address);
            InCallback = false;
            _seen[address] = passes;
            return passes ? address : null;
        }
    }

    // ---- MIME plumbing ----

    readonly record struct Leaf(MimeEntity Entity, Multipart? Parent);

    /// <summary>Non-multipart entities in document order, not descending into enclosed messages: a report inside
    /// our own returned message was written by our tenant, not by the reporting MTA.</summary>
    static List<Leaf> Leaves(MimeEntity? root)
    {
        var leaves = new List<Leaf>();
        if (root is null)
        {
            return leaves;
        }

        var stack = new Stack<(MimeEntity Entity, Multipart? Parent, int Depth)>();
        stack.Push((root, null, 0));
        var visited = 0;
        while (stack.Count > 0 && visited++ < MaxEntities)
        {
            var (entity, parent, depth) = stack.Pop();
            if (entity is Multipart multipart)
            {
                if (depth >= MaxMimeDepth)
                {
                    continue;
                }

                for (var i = Math.Min(multipart.Count, MaxEntities) - 1; i >= 0; i--)
                {
                    stack.Push((multipart[i], multipart, depth + 1));
                }
            }
            else
            {
                leaves.Add(new Leaf(entity, parent));
            }
        }

        return leaves;
    }

    static string DecodeContent(MimePart part, int maxChars)
    {
        if (part.Content is null || maxChars <= 0)
        {
            return "";
        }

        using var decoded = new MemoryStream();
        part.Content.DecodeTo(decoded);
        // Report parts are ASCII (RFC 3464) or UTF-8 (RFC 6533, RFC 5965); invalid bytes become U+FFFD.
        return Encoding.UTF8.GetString(decoded.GetBuffer(), 0, (int)Math.Min(decoded.Length, maxChars));
    }

    sealed class TextBudget
    {
        public int Remaining { get; private set; } = MaxTextChars;

        public string Take(string text)
        {
            if (text.Length > Remaining)
            {
                text = text[..Remaining];
            }

            Remaining -= text.Length;
            return text;
        }
    }

    /// <summary>
    /// RFC 3464 section 2.1 / RFC 5965 section 3.1: groups of "Name: value" fields separated by blank lines, with
    /// RFC 5322 section 2.2.3 folding. Stops after <paramref name="maxGroups"/> groups; caps fields and value lengths.
    /// </summary>
    static List<List<KeyValuePair<string, string>>> ParseFieldGroups(string text, int maxGroups)
    {
        var groups = new List<List<KeyValuePair<string, string>>>();
        List<KeyValuePair<string, string>>? current = null;
        string? name = null;
        var value = new StringBuilder();
        var pos = 0;

        void Flush()
        {
            if (name is null)
            {
                return;
            }

            current ??= [];
            if (current.Count < MaxFieldsPerGroup)
            {
                current.Add(new(name, value.ToString()));
            }

            name = null;
            value.Clear();
        }

        while (pos < text.Length && groups.Count < maxGroups)
        {
            var eol = text.IndexOf('\n', pos);
            if (eol < 0)
            {
                eol = text.Length;
            }

            var line = text.AsSpan(pos, eol - pos).TrimEnd('\r');
            pos = eol + 1;

            if (line.IsWhiteSpace())
            {
                Flush();
                if (current is { Count: > 0 })
                {
                    groups.Add(current);
                }

                current = null;
                continue;
            }

            if (line[0] is ' ' or '\t')
            {
                if (name is not null)
                {
                    AppendCapped(value.Append(' '), line.Trim());
                }

                continue;
            }

            Flush();
            var colon = line.IndexOf(':');
            if (colon <= 0)
            {
                continue;
            }

            var fieldName = line[..colon].Trim();
            if (fieldName.Length is 0 or > 64 || fieldName.ContainsAny(" \t"))
            {
                continue;
            }

            name = fieldName.ToString();
            AppendCapped(value, line[(colon + 1)..].Trim());
        }

        Flush();
        if (current is { Count: > 0 } && groups.Count < maxGroups)
        {
            groups.Add(current);
        }

        return groups;

        static void AppendCapped(StringBuilder sb, ReadOnlySpan<char> text)
        {
            var room = MaxFieldChars - sb.Length;
            if (room > 0)
            {
                sb.Append(text.Length > room ? text[..room] : text);
            }
        }
    }

    static string? Field(List<KeyValuePair<string, string>> group, string name)
    {
        foreach (var field in group)
        {
            if (field.Key.Equals(name, StringComparison.OrdinalIgnoreCase))
            {
                return field.Value;
            }
        }

        return null;
    }

    static string? FirstToken(string? value)
    {
        if (value is null)
        {
            return null;
        }

        var span = value.AsSpan().Trim();
        var space = span.IndexOfAny(" \t\r\n");
        if (space >= 0)
        {
            span = span[..space];
        }

        return span.Length == 0 ? null : span.ToString();
    }

    /// <summary>"smtp; 550 ..." (RFC 3464 section 2.3.6 diagnostic-type) or "dns; mx.example" (section 2.2.2
    /// mta-name-type): drops the type word before the first semicolon.</summary>
    static string? StripType(string? value)
    {
        if (value is null)
        {
            return null;
        }

        var semicolon = value.IndexOf(';', StringComparison.Ordinal);
        if (semicolon > 0 && semicolon <= 32 && value.AsSpan(0, semicolon).Trim() is { Length: > 0 } type
            && !type.ContainsAnyExcept("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"))
        {
            return value[(semicolon + 1)..].Trim();
        }

        return value.Trim();
    }

    /// <summary>
    /// One line of printable text, at most <paramref name="max"/> characters: line breaks and other whitespace become a
    /// single space (so a remote reply cannot start a new log line or header field), control and format characters
    /// (C0, C1, DEL, bidi overrides) and unpaired surrogates are dropped.
    /// </summary>
    internal static string? Sanitize(string? value, int max)
    {
        if (value is null)
        {
            return null;
        }

        var sb = new StringBuilder(Math.Min(value.Length, max));
        var space = false;
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            if (char.IsWhiteSpace(c))
            {
                space = sb.Length > 0;
                continue;
            }

            var pair = char.IsHighSurrogate(c) && i + 1 < value.Length && char.IsLowSurrogate(value[i + 1]);
            if ((!pair && char.IsSurrogate(c)) || char.IsControl(c) || char.GetUnicodeCategory(c) == UnicodeCategory.Format)
            {
                continue;
            }

            var needed = (space ? 1 : 0) + (pair ? 2 : 1);
            if (sb.Length + needed > max)
            {
                break;
            }

            if (space)
            {
                sb.Append(' ');
            }

            space = false;
            sb.Append(c);
            if (pair)
            {
                sb.Append(value[++i]);
            }
        }

        return sb.Length == 0 ? null : sb.ToString();
    }

    [GeneratedRegex(@"^[245]\.[0-9]{1,3}\.[0-9]{1,3}\z", RegexOptions.CultureInvariant, 1000)]
    private static partial Regex StatusExact();

    /// <summary>RFC 3463 section 2, not part of a longer dotted number (an IP address, a version).</summary>
    [GeneratedRegex(@"(?<![\w.])[245]\.[0-9]{1,3}\.[0-9]{1,3}(?!\w|\.[0-9])", RegexOptions.CultureInvariant, 2000)]
    private static partial Regex EnhancedStatus();

    /// <summary>RFC 5321 section 4.2 reply code at a line start or after "said:", a colon, quote or bracket.</summary>
    [GeneratedRegex(@"(?:^|said:|[:'""(<\[#])[ \t]{0,4}(?<code>[45][0-5][0-9])[ \-]", RegexOptions.CultureInvariant | RegexOptions.Multiline | RegexOptions.IgnoreCase, 2000)]
    private static partial Regex ReplyCode();

    [GeneratedRegex(@"(?:mail system at host|qmail-send program at|Generating server:|Reporting-MTA:[ \t]*dns;)[ \t]*(?<host>[A-Za-z0-9][A-Za-z0-9.\-]{0,252})", RegexOptions.CultureInvariant | RegexOptions.IgnoreCase, 2000)]
    private static partial Regex ReportingHost();
}
