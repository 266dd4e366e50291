using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace SmtpGateway.Spool;

/// <summary>What the spool records about a message besides its bytes: the envelope plus facts computed once at commit.</summary>
/// <param name="Envelope">The envelope as the Listener accepted it.</param>
/// <param name="EightBitData">True when the content has an octet above 127, so relaying it needs BODY=8BITMIME (RFC 6152 section 3).</param>
internal sealed record SpoolFileHeader(SpoolEnvelope Envelope, bool EightBitData);

[JsonSourceGenerationOptions(UseStringEnumConverter = true, DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(SpoolFileHeader))]
[JsonSerializable(typeof(DeliveryState))]
internal sealed partial class SpoolJsonContext : JsonSerializerContext;

/// <summary>
/// One file per message, so that a single rename publishes envelope and content together:
/// <code>
/// SGWSPOOL1 &lt;header-length&gt; &lt;message-length&gt;\n     ASCII preamble line
/// {json SpoolFileHeader}                            header-length bytes, UTF-8
/// message bytes                                     message-length bytes, exactly as received after DATA
/// </code>
/// Both lengths are checked against the file length on load, so a truncated file is detected
/// instead of being delivered half (RFC 5321 section 6.1: the message must not be lost, nor altered).
/// </summary>
internal static class SpoolFileFormat
{
    const string Magic = "SGWSPOOL1";

    /// <summary>The preamble line is short; anything longer is not ours.</summary>
    const int MaxPreambleLength = 64;

    /// <summary>A header is a few KiB even with 100 recipients; refuse absurd lengths from a damaged file.</summary>
    const int MaxHeaderLength = 16 * 1024 * 1024;

    public static byte[] EncodePreamble(SpoolFileHeader header, long messageLength) => EncodePreamble(HeaderJson(header), messageLength);

    /// <summary>The header as it goes into the file (UTF-8 JSON), for the overloads that take it.</summary>
    public static byte[] HeaderJson(SpoolFileHeader header) => JsonSerializer.SerializeToUtf8Bytes(header, SpoolJsonContext.Default.SpoolFileHeader);

    public static byte[] EncodePreamble(byte[] json, long messageLength) => Encode(json, messageLength, 0);

    /// <summary>
    /// The preamble padded to exactly <paramref name="length"/> octets with JSON whitespace after the header object (part of
    /// the header's length, so readers are unaffected), or null when it cannot be made that long: longer than
    /// <paramref name="length"/> already, or more than <paramref name="maxPadding"/> short. Lets a recycled spool file keep
    /// its length, so it needs no truncation.
    /// </summary>
    public static byte[]? EncodePreamble(byte[] json, long messageLength, long length, int maxPadding)
    {
        var plain = PreambleLength(json.Length, messageLength, 0);
        var guess = length - plain;
        if (guess < 0 || guess > maxPadding)
        {
            return null;
        }

        // The header length in the preamble line grows by a digit now and then as the padding grows: look just below.
        for (var padding = (int)guess; padding >= 0 && padding >= guess - 20; padding--)
        {
            if (PreambleLength(json.Length, messageLength, padding) == length)
            {
                return Encode(json, messageLength, padding);
            }
        }

        return null;
    }

    static long PreambleLength(int jsonLength, long messageLength, int padding) =>
        string.Create(CultureInfo.InvariantCulture, $"{Magic} {jsonLength + padding} {messageLength}\n").Length + (long)jsonLength + padding;

    static byte[] Encode(byte[] json, long messageLength, int padding)
    {
        var line = Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{Magic} {json.Length + padding} {messageLength}\n"));
        var result = new byte[line.Length + json.Length + padding];
        line.CopyTo(result, 0);
        json.CopyTo(result, line.Length);
        result.AsSpan(line.Length + json.Length).Fill((byte)' ');
        return result;
    }

    /// <summary>Reads and validates the preamble and header of an open spool file (or of its bytes in memory).</summary>
    /// <exception cref="InvalidDataException">The file is not a complete spool file.</exception>
    public static SpoolFileHeader ReadHeader(Stream stream, out long contentOffset, out long messageLength)
    {
        Span<byte> buffer = stackalloc byte[MaxPreambleLength];
        var read = ReadAtMost(stream, buffer);
        var newline = buffer[..read].IndexOf((byte)'\n');
        if (newline < 0)
        {
            throw new InvalidDataException("missing or overlong preamble line");
        }

        var parts = Encoding.ASCII.GetString(buffer[..newline]).Split(' ');
        if (parts.Length != 3 || parts[0] != Magic
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var headerLength)
            || !long.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out messageLength)
            || headerLength <= 0 || headerLength > MaxHeaderLength)
        {
            throw new InvalidDataException("bad preamble");
        }

        contentOffset = newline + 1L + headerLength;
        if (stream.Length != contentOffset + messageLength)
        {
            throw new InvalidDataException(string.Create(CultureInfo.InvariantCulture,
                $"length mismatch: file has {stream.Length} bytes, preamble says {contentOffset + messageLength}"));
        }

        var json = new byte[headerLength];
        stream.Position = newline + 1;
        stream.ReadExactly(json);
        SpoolFileHeader? header;
        try
        {
            header = JsonSerializer.Deserialize(json, SpoolJsonContext.Default.SpoolFileHeader);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException("bad header JSON", ex);
        }

        if (header?.Envelope is not { } envelope || envelope.Recipients is null || envelope.MailFrom is null || envelope.Id is null)
        {
            throw new InvalidDataException("incomplete envelope");
        }

        return header;
    }

    static int ReadAtMost(Stream stream, Span<byte> buffer)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var n = stream.Read(buffer[total..]);
            if (n == 0)
            {
                break;
            }

            total += n;
        }

        return total;
    }
}
