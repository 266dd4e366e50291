using System.Security.Cryptography;

namespace SmtpGateway.Envelope;

public sealed class HeaderHygieneOptions
{
    /// <summary>Extra header names to strip (case-insensitive); "X-Foo-*" is a prefix.</summary>
    public List<string> StripHeaders { get; set; } = [];
}

/// <param name="Section">The cleaned header section (the same instance when nothing was removed).</param>
/// <param name="Changed">True when fields were removed.</param>
/// <param name="HasMessageId">A kept Message-ID field is in the section (RFC 5322 section 3.6.4).</param>
/// <param name="RemovedFields">Number of removed fields (a folded field counts once).</param>
public readonly record struct HygieneOutcome(HeaderSection Section, bool Changed, bool HasMessageId, int RemovedFields);

/// <summary>
/// Strips client-supplied header fields that could claim a tenant or a delivery path. Works on the header section as the
/// streaming reader split it (<see cref="HeaderSection"/>: no MIME parse, no second scan): this runs per message on the hot path.
/// </summary>
public sealed class HeaderHygiene
{
    /// <summary>Longest configurable name.</summary>
    const int MaxPatternLength = Configuration.EnvelopeConfig.MaxStripHeaderLength;

    const string MessageIdName = "message-id";

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
            patterns.Add(new Pattern(name, prefix, outboundOnly));
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

            patterns.Add(new Pattern(name.ToLowerInvariant(), prefix, false));
        }

        _patterns = [.. patterns];
        foreach (var first in _patterns.Select(p => p.Name[0]))
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
    /// The section without the fields to strip (each with its continuation lines, which belong to it). When nothing is
    /// removed, the same section comes back (zero copies); otherwise a new one that shares the kept fields' octets.
    /// </summary>
    /// <param name="outbound">Mail sent by a tenant: also strip Bcc and Resent-Bcc.</param>
    /// <param name="removedNames">When not null, receives the names of the removed fields as written (printable ASCII, for logs).</param>
    public HygieneOutcome Clean(HeaderSection section, bool outbound, ICollection<string>? removedNames = null)
    {
        ArgumentNullException.ThrowIfNull(section);
        var fields = section.Fields;
        List<HeaderField>? kept = null;
        var hasMessageId = false;
        var removed = 0;
        for (var i = 0; i < fields.Count; i++)
        {
            var field = fields[i];
            if (!Matches(field.Name, outbound))
            {
                hasMessageId |= field.Name == MessageIdName;
                kept?.Add(field);
                continue;
            }

            kept ??= [.. fields.Take(i)];
            removed++;
            removedNames?.Add(LogName(field.Raw.Span, field.Name.Length));
        }

        return kept is null
            ? new HygieneOutcome(section, false, hasMessageId, 0)
            : new HygieneOutcome(section.With(kept), true, hasMessageId, removed);
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

    bool IsCandidate(char first) =>
        first < 64 ? (_firstLo & (1UL << first)) != 0 : first < 128 && (_firstHi & (1UL << (first - 64))) != 0;

    bool Matches(string name, bool outbound)
    {
        if (name.Length == 0 || !IsCandidate(name[0]))
        {
            return false;
        }

        foreach (var pattern in _patterns)
        {
            if (pattern.OutboundOnly && !outbound)
            {
                continue;
            }

            if (pattern.Prefix ? name.StartsWith(pattern.Name, StringComparison.Ordinal) : name == pattern.Name)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The removed field's name for logs: only printable ASCII survives, so log lines cannot be forged.</summary>
    static string LogName(ReadOnlySpan<byte> raw, int nameLength)
    {
        var n = Math.Min(Math.Min(nameLength, 64), raw.Length);
        var chars = new char[n];
        for (var i = 0; i < n; i++)
        {
            chars[i] = raw[i] is >= 0x21 and <= 0x7E ? (char)raw[i] : '?';
        }

        return new string(chars);
    }

    sealed record Pattern(string Name, bool Prefix, bool OutboundOnly);
}
