using System.Buffers;
using System.Text;
using SmtpGateway.Storage;

namespace SmtpGateway.Envelope;

/// <summary>
/// One header field as it stands in the message: its name (lower-cased ASCII, every other octet kept as is) and its raw
/// octets, continuation lines and the final CRLF included.
/// </summary>
public readonly record struct HeaderField(string Name, ReadOnlyMemory<byte> Raw)
{
    /// <summary>The octets after the colon (leading white space, folds and the final CRLF included), as MimeKit's RawValue.</summary>
    public ReadOnlyMemory<byte> Value => Raw[(Raw.Span.IndexOf((byte)':') + 1)..];
}

/// <summary>
/// A message's header section split into fields once (RFC 5322 sections 2.1 and 2.2): the streaming reader records where
/// each field starts as the lines arrive, and that one split serves sender binding (From, Sender, Resent-*), header hygiene
/// and the DKIM header hash. Immutable: hygiene makes a new section that shares the kept fields' octets.
/// </summary>
public sealed class HeaderSection
{
    const byte Cr = (byte)'\r', Lf = (byte)'\n', Sp = (byte)' ', Tab = (byte)'\t', Colon = (byte)':';

    readonly ReadOnlyMemory<byte>? _contiguous;

    HeaderSection(IReadOnlyList<HeaderField> fields, ReadOnlyMemory<byte> trailer, ReadOnlyMemory<byte>? contiguous)
    {
        Fields = fields;
        Trailer = trailer;
        _contiguous = contiguous;
        var received = 0;
        foreach (var field in fields)
        {
            if (field.Name == "received")
            {
                received++;
            }
        }

        ReceivedCount = received;
    }

    public IReadOnlyList<HeaderField> Fields { get; }

    /// <summary>Received fields (the hop count, RFC 5321 section 6.3), counted once when the section is split.</summary>
    public int ReceivedCount { get; }

    /// <summary>What ends the section inside it: the empty line (CRLF), or nothing when the body starts without one.</summary>
    public ReadOnlyMemory<byte> Trailer { get; }

    /// <summary>The fields named <paramref name="name"/> (lower case), in order.</summary>
    public IEnumerable<HeaderField> Named(string name) => Fields.Where(f => f.Name == name);

    /// <summary>A section of these fields with the same trailer (hygiene's result; <paramref name="fields"/> may share octets).</summary>
    public HeaderSection With(IReadOnlyList<HeaderField> fields) => new(fields, Trailer, null);

    /// <summary>The section's octets: the original buffer when unchanged, else the kept fields' octets chained (no copy).</summary>
    public ReadOnlySequence<byte> ToSequence() => _contiguous is { } whole
        ? new ReadOnlySequence<byte>(whole)
        : ByteSequence.Concat([.. Fields.Select(f => new ReadOnlySequence<byte>(f.Raw)), new ReadOnlySequence<byte>(Trailer)]);

    /// <summary>
    /// Splits <paramref name="section"/>, whose fields start at <paramref name="fieldStarts"/> (recorded by the streaming reader
    /// with <see cref="IsFieldStart(in ReadOnlySequence{byte})"/>); octets after the last field are the trailer.
    /// </summary>
    public static HeaderSection FromFieldStarts(ReadOnlyMemory<byte> section, IReadOnlyList<int> fieldStarts, int fieldsEnd)
    {
        ArgumentNullException.ThrowIfNull(fieldStarts);
        var fields = new List<HeaderField>(fieldStarts.Count);
        for (var i = 0; i < fieldStarts.Count; i++)
        {
            var end = i + 1 < fieldStarts.Count ? fieldStarts[i + 1] : fieldsEnd;
            var raw = section[fieldStarts[i]..end];
            fields.Add(new HeaderField(NameOf(raw.Span), raw));
        }

        return new HeaderSection(fields, section[fieldsEnd..], section);
    }

    /// <summary>
    /// Splits the header section at the start of <paramref name="message"/> with the same rule the streaming reader uses: it
    /// ends at the empty line (included, as the trailer), at a line that is not a field, or at a continuation line before any
    /// field. <paramref name="consumed"/> is the section's length: the body starts there.
    /// </summary>
    public static HeaderSection Parse(ReadOnlyMemory<byte> message, out int consumed)
    {
        var span = message.Span;
        var starts = new List<int>();
        var at = 0;
        while (at < span.Length)
        {
            var lf = span[at..].IndexOf(Lf);
            var next = lf < 0 ? span.Length : at + lf + 1;
            var line = span[at..next];
            var content = line.TrimEnd("\r\n"u8);
            if (content.Length == 0)
            {
                // The empty line ends the section and belongs to it (RFC 5322 section 2.1).
                consumed = next;
                return new HeaderSection(Split(message, starts, at), message[at..next], message[..next]);
            }

            if (content[0] is Sp or Tab ? starts.Count == 0 : !IsFieldStart(content))
            {
                break;
            }

            if (content[0] is not (Sp or Tab))
            {
                starts.Add(at);
            }

            at = next;
        }

        consumed = at;
        return new HeaderSection(Split(message, starts, at), ReadOnlyMemory<byte>.Empty, message[..at]);
    }

    static List<HeaderField> Split(ReadOnlyMemory<byte> message, List<int> starts, int end)
    {
        var fields = new List<HeaderField>(starts.Count);
        for (var i = 0; i < starts.Count; i++)
        {
            var raw = message[starts[i]..(i + 1 < starts.Count ? starts[i + 1] : end)];
            fields.Add(new HeaderField(NameOf(raw.Span), raw));
        }

        return fields;
    }

    /// <summary>A field line of a section built in code (a Message-ID the gateway adds): "Name: value" plus CRLF.</summary>
    public static HeaderField NewField(string name, string value)
    {
        ArgumentNullException.ThrowIfNull(name);
        var raw = Encoding.ASCII.GetBytes($"{name}: {value}\r\n");
        return new HeaderField(NameOf(raw), raw);
    }

    /// <summary>
    /// Whether <paramref name="line"/> (no line ending) starts a header field: "name WSP* :" (RFC 5322 section 3.6.8, and the
    /// obsolete WSP before the colon of section 4.5, which attackers use to slip past exact matches). The name is every octet
    /// up to the colon except WSP, CR and LF: broader than ftext, so that a field with a stray octet in its name still counts
    /// as a field (hygiene matches it against nothing) rather than ending the section and hiding the fields after it.
    /// </summary>
    public static bool IsFieldStart(ReadOnlySpan<byte> line) => NameLength(line) > 0;

    /// <inheritdoc cref="IsFieldStart(ReadOnlySpan{byte})"/>
    public static bool IsFieldStart(in ReadOnlySequence<byte> line)
    {
        if (line.IsSingleSegment)
        {
            return IsFieldStart(line.FirstSpan);
        }

        // A name longer than a line's first segment is rare (segments are KiBs): copy at most one line (≤ 1000 octets on the wire).
        var copy = ArrayPool<byte>.Shared.Rent((int)Math.Min(line.Length, int.MaxValue));
        try
        {
            line.CopyTo(copy);
            return IsFieldStart(copy.AsSpan(0, (int)line.Length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(copy);
        }
    }

    /// <summary>Length of the name when <paramref name="line"/> starts a field, else 0.</summary>
    static int NameLength(ReadOnlySpan<byte> line)
    {
        for (var i = 0; i < line.Length; i++)
        {
            var b = line[i];
            if (b == Colon)
            {
                return i;
            }

            if (b is Sp or Tab)
            {
                if (i == 0)
                {
                    return 0;
                }

                var rest = line[i..].TrimStart(" \t"u8);
                return rest.Length > 0 && rest[0] == Colon ? i : 0;
            }

            if (b is Cr or Lf)
            {
                return 0;
            }
        }

        return 0;
    }

    /// <summary>The lower-cased name of a field line (ASCII letters folded, every other octet kept: Latin-1 maps them one to one).</summary>
    static string NameOf(ReadOnlySpan<byte> field)
    {
        var name = Encoding.Latin1.GetString(field[..NameLength(field)]);
        return !name.Any(char.IsAsciiLetterUpper) ? name : string.Create(name.Length, name, static (chars, source) =>
        {
            for (var i = 0; i < source.Length; i++)
            {
                chars[i] = char.IsAsciiLetterUpper(source[i]) ? (char)(source[i] | 0x20) : source[i];
            }
        });
    }
}
