using System.Buffers;
using System.Security.Cryptography;
using System.Text;

namespace SmtpGateway.Envelope;

public sealed class HeaderHygieneOptions
{
    /// <summary>Extra header names to strip (case-insensitive); "X-Foo-*" is a prefix.</summary>
    public List<string> StripHeaders { get; set; } = [];
}

/// <param name="Changed">True when fields were removed and the cleaned message was written to the callback.</param>
/// <param name="HasMessageId">A kept Message-ID field was seen in the header block (RFC 5322 section 3.6.4).</param>
/// <param name="RemovedFields">Number of removed fields (a folded field counts once).</param>
public readonly record struct HygieneResult(bool Changed, bool HasMessageId, int RemovedFields);

/// <summary>Receives consecutive chunks of the cleaned message. The chunks point into the original content: copy before it is released.</summary>
public delegate void HygieneWriter(ReadOnlySequence<byte> chunk);

/// <summary>
/// Strips client-supplied header fields that could claim a tenant or a delivery path, working on the raw bytes of the
/// header block only (no MIME parse): this runs per message on the hot path.
/// </summary>
public sealed class HeaderHygiene
{
    /// <summary>Longest configurable name; names are compared on a stack copy of at most this many bytes.</summary>
    const int MaxPatternLength = Configuration.EnvelopeConfig.MaxStripHeaderLength;

    const byte Cr = (byte)'\r', Lf = (byte)'\n', Sp = (byte)' ', Tab = (byte)'\t', Colon = (byte)':';

    static readonly byte[] MessageIdName = "message-id"u8.ToArray();

    /// <summary>Lower-cased names; always stripped, whatever the configuration.</summary>
    static readonly (string Name, bool Prefix, bool OutboundOnly)[] BuiltIn =
    [
        // RFC 5321 section 4.4: Return-Path is added by the final delivery MTA only; one from the client is a forgery.
        ("return-path", false, false),
        // Our own trust headers: only the gateway may set them.
        ("x-tenant", true, false),
        ("x-smtpgateway", true, false),
        ("x-smtpgw", true, false),
        // RFC 5322 section 3.6.3: Bcc may be removed before transmission, and must not reach the other recipients.
        ("bcc", false, true),
        ("resent-bcc", false, true),
    ];

    readonly Pattern[] _patterns;

    /// <summary>Bit set of the lower-cased first bytes of all names of interest: most fields skip matching altogether.</summary>
    readonly ulong _firstLo, _firstHi;

    public HeaderHygiene(HeaderHygieneOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var patterns = new List<Pattern>();
        foreach (var (name, prefix, outboundOnly) in BuiltIn)
        {
            patterns.Add(new Pattern(Encoding.ASCII.GetBytes(name), prefix, outboundOnly));
        }

        foreach (var raw in options.StripHeaders ?? [])
        {
            if (Configuration.EnvelopeConfig.StripHeaderError(raw, MaxPatternLength) is { } error)
            {
                throw new ArgumentException(error, nameof(options));
            }

            var entry = raw!.Trim();
            var prefix = entry.EndsWith('*');
            var name = prefix ? entry[..^1] : entry;

            patterns.Add(new Pattern(Encoding.ASCII.GetBytes(name.ToLowerInvariant()), prefix, false));
        }

        _patterns = [.. patterns];
        foreach (var first in _patterns.Select(p => p.Name[0]).Append(MessageIdName[0]))
        {
            if (first < 64)
            {
                _firstLo |= 1UL << first;
            }
            else
            {
                _firstHi |= 1UL << (first - 64);
            }
        }
    }

    /// <summary>
    /// Inspects <paramref name="content"/> (a message: header block, CRLF, body; strict CRLF). When fields must be removed,
    /// writes the whole cleaned message to <paramref name="output"/> as consecutive chunks of kept bytes (slices of
    /// <paramref name="content"/>, never empty) and returns Changed = true. When nothing is removed, <paramref name="output"/> is
    /// never called: the caller keeps the original bytes (zero copies).
    /// </summary>
    /// <param name="outbound">Mail sent by a tenant: also strip Bcc and Resent-Bcc.</param>
    /// <param name="removedNames">When not null, receives the names of the removed fields as written (printable ASCII, for logs).</param>
    public HygieneResult Clean(in ReadOnlySequence<byte> content, bool outbound, HygieneWriter output, ICollection<string>? removedNames = null)
    {
        ArgumentNullException.ThrowIfNull(output);
        Span<byte> name = stackalloc byte[MaxPatternLength];
        var reader = new SequenceReader<byte>(content);
        var keptStart = content.Start;
        long keptStartOffset = 0;
        var removed = 0;
        var hasMessageId = false;

        while (reader.TryPeek(out var first))
        {
            var lineStart = reader.Position;
            var lineStartOffset = reader.Consumed;

            // The empty line ends the header block (RFC 5322 section 2.1). A lone LF counts too: CRLF is guaranteed upstream,
            // but if one slipped through, recipients' parsers would end the header there, so must we.
            if (first == Lf || (first == Cr && reader.TryPeek(1, out var second) && second == Lf))
            {
                break;
            }

            if (first is Sp or Tab)
            {
                // A continuation line (RFC 5322 section 2.2.3) of a kept field: removed fields consume theirs below.
                // One before any field belongs to nothing: treat the block as ended, as for any other non-field line.
                if (lineStartOffset == 0)
                {
                    break;
                }

                SkipLine(ref reader);
                continue;
            }

            if (!TryReadFieldName(ref reader, name, out var nameLength))
            {
                break; // Not a field (e.g. an mbox "From " line): the rest is body, kept as is.
            }

            var copied = name[..Math.Min(nameLength, MaxPatternLength)];
            var remove = false;
            var messageId = false;
            if (IsCandidate(copied[0]))
            {
                remove = Matches(copied, nameLength, outbound);
                messageId = !remove && nameLength == MessageIdName.Length && copied.SequenceEqual(MessageIdName);
            }

            SkipLine(ref reader);
            if (!remove)
            {
                hasMessageId |= messageId;
                continue;
            }

            // The field goes with all its continuation lines.
            while (reader.TryPeek(out var next) && next is Sp or Tab)
            {
                SkipLine(ref reader);
            }

            if (lineStartOffset > keptStartOffset)
            {
                output(content.Slice(keptStart, lineStart));
            }

            keptStart = reader.Position;
            keptStartOffset = reader.Consumed;
            removed++;
            removedNames?.Add(LogName(content.Slice(lineStart), nameLength));
        }

        if (removed == 0)
        {
            return new HygieneResult(false, hasMessageId, 0);
        }

        if (keptStartOffset < content.Length)
        {
            output(content.Slice(keptStart));
        }

        return new HygieneResult(true, hasMessageId, removed);
    }

    /// <summary>
    /// A new msg-id (RFC 5322 section 3.6.4) "&lt;queueId.RANDOM@domain&gt;", RANDOM being 8 random bytes as lowercase hex so that
    /// ids stay unique across gateways sharing a queue id scheme. An invalid <paramref name="domain"/> (not a dot-atom) becomes "localhost".
    /// </summary>
    public static string NewMessageId(string queueId, string domain)
    {
        if (!IsDotAtomText(queueId))
        {
            throw new ArgumentException("Queue id must be a dot-atom-text (RFC 5322 section 3.6.4 id-left).", nameof(queueId));
        }

        // RFC 5321 section 4.5.3.1.2 caps a domain at 255 octets; anything else would yield a malformed header.
        var right = domain is { Length: <= 255 } && IsDotAtomText(domain) ? domain : "localhost";
        Span<byte> random = stackalloc byte[8];
        RandomNumberGenerator.Fill(random);
        return $"<{queueId}.{Convert.ToHexStringLower(random)}@{right}>";
    }

    /// <summary>RFC 5322 section 3.2.3: dot-atom-text = 1*atext *("." 1*atext).</summary>
    static bool IsDotAtomText(string? value)
    {
        if (string.IsNullOrEmpty(value))
        {
            return false;
        }

        var previousDot = true; // no leading dot
        foreach (var c in value)
        {
            if (c == '.')
            {
                if (previousDot)
                {
                    return false;
                }

                previousDot = true;
            }
            else if (char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-/=?^_`{|}~".Contains(c, StringComparison.Ordinal))
            {
                previousDot = false;
            }
            else
            {
                return false;
            }
        }

        return !previousDot; // no trailing dot
    }

    /// <summary>
    /// Whether <paramref name="line"/> (no line ending) starts a header field as <see cref="Clean"/> reads one: a name, optional
    /// white space, a colon. The streaming reader splits header section from body with this, so both agree where it ends.
    /// </summary>
    public static bool IsFieldLine(in ReadOnlySequence<byte> line)
    {
        Span<byte> name = stackalloc byte[MaxPatternLength];
        var reader = new SequenceReader<byte>(line);
        return TryReadFieldName(ref reader, name, out _);
    }

    /// <summary>
    /// Reads "name WSP* :" (RFC 5322 section 3.6.8, and the obsolete WSP before the colon of section 4.5, which attackers use to
    /// slip past exact matches) and copies the lower-cased start of the name into <paramref name="name"/>. The name is every byte
    /// up to the colon except WSP, CR and LF: broader than ftext, so that a field with a stray byte in its name still counts as a
    /// field (it matches nothing) rather than ending the block and hiding the fields after it. False when the line is not a field.
    /// </summary>
    static bool TryReadFieldName(ref SequenceReader<byte> reader, scoped Span<byte> name, out int length)
    {
        length = 0;
        while (reader.TryRead(out var b))
        {
            if (b == Colon)
            {
                return length > 0;
            }

            if (b is Sp or Tab)
            {
                if (length == 0)
                {
                    return false;
                }

                reader.AdvancePastAny(Sp, Tab);
                return reader.TryRead(out var colon) && colon == Colon;
            }

            if (b is Cr or Lf)
            {
                return false;
            }

            if (length < name.Length)
            {
                name[length] = b is >= (byte)'A' and <= (byte)'Z' ? (byte)(b | 0x20) : b;
            }

            length++;
        }

        return false;
    }

    /// <summary>Moves past the LF ending the current line (vectorised search), or to the end when the input ends unterminated.</summary>
    static void SkipLine(ref SequenceReader<byte> reader)
    {
        if (!reader.TryAdvanceTo(Lf))
        {
            reader.AdvanceToEnd();
        }
    }

    bool IsCandidate(byte first) =>
        first < 64 ? (_firstLo & (1UL << first)) != 0 : first < 128 && (_firstHi & (1UL << (first - 64))) != 0;

    bool Matches(ReadOnlySpan<byte> copied, int length, bool outbound)
    {
        foreach (var pattern in _patterns)
        {
            if (pattern.OutboundOnly && !outbound)
            {
                continue;
            }

            if (pattern.Prefix ? copied.StartsWith(pattern.Name) : length == pattern.Name.Length && copied.SequenceEqual(pattern.Name))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The removed field's name for logs: only printable ASCII survives, so log lines cannot be forged.</summary>
    static string LogName(ReadOnlySequence<byte> line, int nameLength)
    {
        Span<byte> raw = stackalloc byte[64];
        var n = (int)Math.Min(Math.Min(nameLength, raw.Length), line.Length);
        line.Slice(0, n).CopyTo(raw);
        var chars = new char[n];
        for (var i = 0; i < n; i++)
        {
            chars[i] = raw[i] is >= 0x21 and <= 0x7E ? (char)raw[i] : '?';
        }

        return new string(chars);
    }

    sealed record Pattern(byte[] Name, bool Prefix, bool OutboundOnly);
}
