using MimeKit;
using MimeKit.IO;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery;

/// <summary>
/// Builds the <see cref="MimeMessage"/> that MailKit sends so that the bytes on the wire (before dot-stuffing)
/// are exactly the spooled bytes. MailKit can only send a MimeMessage, and re-serialising one may refold
/// headers or re-encode parts, which breaks DKIM signatures made before the spool (RFC 6376 section 3.4.1:
/// "simple" canonicalisation tolerates no change at all). So:
/// <list type="bullet">
/// <item>the header block is parsed into MimeKit headers whose raw values are pinned (Header.SetRawValue),
/// and the re-serialised block is compared byte for byte with the original before use;</item>
/// <item>the body is an entity whose WriteTo copies the spooled body bytes verbatim;</item>
/// <item>a placeholder 8bit part is added when the content has 8-bit octets, so that MailKit announces
/// BODY=8BITMIME (RFC 6152) when the server offers it; it is never written.</item>
/// </list>
/// MimeKit writes a message as: headers, one empty line, body. The body therefore starts after the first
/// empty line of the spooled message.
/// </summary>
internal static class RawMessageCarrier
{
    static readonly byte[] HeaderEnd = "\r\n\r\n"u8.ToArray();
    static readonly byte[] Crlf = "\r\n"u8.ToArray();

    /// <summary>The headers are parsed in memory; a header block beyond this is not a real message.</summary>
    const int MaxHeaderBlock = 4 * 1024 * 1024;

    /// <summary>
    /// A byte-exact carrier for <paramref name="message"/>, or null when the header block cannot be reproduced exactly
    /// (malformed header lines); the caller then falls back to <see cref="LoadParsedAsync"/>.
    /// </summary>
    public static async Task<Carrier?> TryCreateAsync(SpooledMessage message, FormatOptions format, CancellationToken cancellationToken)
    {
        var (headerBlock, bodyOffset) = await ReadHeaderBlockAsync(message, cancellationToken).ConfigureAwait(false);
        if (headerBlock is null)
        {
            return null;
        }

        HeaderList headers;
        try
        {
            var parseInput = new byte[headerBlock.Length + Crlf.Length];
            headerBlock.CopyTo(parseInput, 0);
            Crlf.CopyTo(parseInput, headerBlock.Length);
            using var input = new MemoryStream(parseInput, writable: false);
            headers = HeaderList.Load(ParserOptions.Default, input, cancellationToken);

            // Pin every value to its raw bytes: with FormatOptions.International (SMTPUTF8) MimeKit would otherwise
            // re-encode address headers in its own folding. A malformed line (no colon) has no value and is
            // written back as its raw line; the comparison below proves the result either way.
            foreach (var header in headers)
            {
                if (header.RawValue is [.., (byte)'\n'])
                {
                    header.SetRawValue(header.RawValue);
                }
            }
        }
        catch (Exception ex) when (ex is ParseException or FormatException or ArgumentException)
        {
            return null;
        }

        var body = new RawBody(message, bodyOffset, message.Length - bodyOffset, message.EightBitData || message.Envelope.EightBitMime);
        var mime = new MimeMessage(headers) { Body = body };

        // Prove it: what MimeKit will write for the header part must be the original block plus the empty line.
        using (var written = new MemoryStream())
        {
            await mime.WriteToAsync(format, written, headersOnly: true, cancellationToken).ConfigureAwait(false);
            var expected = headerBlock.Length == 0 ? Crlf : [.. headerBlock, .. Crlf];
            if (!written.GetBuffer().AsSpan(0, (int)written.Length).SequenceEqual(expected))
            {
                mime.Dispose();
                return null;
            }
        }

        return new Carrier(mime, headerBlock.Length + Crlf.Length + body.Length, Exact: true);
    }

    /// <summary>Fallback for header blocks that cannot be reproduced: MimeKit's own parse. Delivered, but not guaranteed byte for byte.</summary>
    /// <exception cref="FormatException">Not a message at all (the first line is not a header field).</exception>
    public static async Task<Carrier> LoadParsedAsync(SpooledMessage message, CancellationToken cancellationToken)
    {
        var stream = message.OpenContent();
        await using (stream.ConfigureAwait(false))
        {
            var mime = await MimeMessage.LoadAsync(ParserOptions.Default, stream, cancellationToken).ConfigureAwait(false);
            return new Carrier(mime, -1, Exact: false);
        }
    }

    /// <summary>
    /// Reads up to the first empty line. Returns the header block including the CRLF of its last line, and the offset
    /// of the body. A message that starts with an empty line has an empty block; one without an empty line is all header.
    /// </summary>
    static async Task<(byte[]? HeaderBlock, long BodyOffset)> ReadHeaderBlockAsync(SpooledMessage message, CancellationToken cancellationToken)
    {
        if (message.InMemory)
        {
            return HeaderBlockOf(message.Content.Span);
        }

        var stream = message.OpenContent();
        await using (stream.ConfigureAwait(false))
        {
            var buffer = new MemoryStream();
            var chunk = new byte[16 * 1024];
            while (buffer.Length < MaxHeaderBlock)
            {
                var read = await stream.ReadAsync(chunk, cancellationToken).ConfigureAwait(false);
                if (read == 0)
                {
                    break;
                }

                var searchFrom = (int)Math.Max(0, buffer.Length - (HeaderEnd.Length - 1));
                buffer.Write(chunk, 0, read);
                var data = buffer.GetBuffer().AsSpan(0, (int)buffer.Length);
                if (data.Length >= 2 && data[0] == '\r' && data[1] == '\n')
                {
                    return ([], 2);
                }

                var index = data[searchFrom..].IndexOf(HeaderEnd);
                if (index >= 0)
                {
                    var end = searchFrom + index;
                    return (data[..(end + 2)].ToArray(), end + HeaderEnd.Length);
                }
            }

            if (buffer.Length >= MaxHeaderBlock)
            {
                return (null, 0);
            }

            var all = buffer.ToArray();
            return all.Length >= 2 && all[0] == '\r' && all[1] == '\n' ? ([], 2) : (all, all.Length);
        }
    }

    /// <summary>The same split as <see cref="ReadHeaderBlockAsync"/> for content held in memory (it is below MaxHeaderBlock).</summary>
    static (byte[] HeaderBlock, long BodyOffset) HeaderBlockOf(ReadOnlySpan<byte> data)
    {
        if (data.StartsWith(Crlf))
        {
            return ([], 2);
        }

        var index = data.IndexOf(HeaderEnd);
        return index >= 0 ? (data[..(index + 2)].ToArray(), index + HeaderEnd.Length) : (data.ToArray(), data.Length);
    }

    /// <summary>A MimeMessage ready for SmtpClient.Send, with its exact serialised length (-1 when unknown).</summary>
    public sealed record Carrier(MimeMessage Message, long Length, bool Exact) : IDisposable
    {
        public void Dispose() => Message.Dispose();
    }

    /// <summary>
    /// The spooled body, written verbatim. It derives from Multipart only so that MailKit's scan for
    /// 8bit parts (which decides BODY=8BITMIME) can see the placeholder child; nothing of Multipart is written.
    /// </summary>
    sealed class RawBody : Multipart
    {
        readonly SpooledMessage _message;
        readonly long _offset;

        public RawBody(SpooledMessage message, long offset, long length, bool eightBit)
        {
            _message = message;
            _offset = offset;
            Length = length;

            // No Content-* headers of our own: the message's own ones are in the pinned header block.
            Headers.Clear();
            if (eightBit)
            {
                Add(new MimePart("application", "octet-stream") { ContentTransferEncoding = ContentEncoding.EightBit });
            }
        }

        public long Length { get; }

        public override void Prepare(EncodingConstraint constraint, int maxLineLength = 78)
        {
            // Never re-encode: the bytes are what the client sent (and possibly what DKIM signed).
        }

        public override void WriteTo(FormatOptions options, Stream stream, bool contentOnly, CancellationToken cancellationToken = default)
        {
            if (_message.InMemory)
            {
                var (array, start) = Segment();
                Write(stream, array, start, (int)Length, cancellationToken);
                return;
            }

            using var source = _message.OpenContent();
            source.Position += _offset;
            CopyTo(source, stream, cancellationToken);
        }

        public override async Task WriteToAsync(FormatOptions options, Stream stream, bool contentOnly, CancellationToken cancellationToken = default)
        {
            if (_message.InMemory)
            {
                // MailKit's SmtpDataFilter dot-stuffs whatever it is given; one write hands it the whole body.
                await stream.WriteAsync(_message.Content[(int)_offset..], cancellationToken).ConfigureAwait(false);
                return;
            }

            var source = _message.OpenContent();
            await using (source.ConfigureAwait(false))
            {
                source.Position += _offset;
                await source.CopyToAsync(stream, 81920, cancellationToken).ConfigureAwait(false);
            }
        }

        (byte[] Array, int Start) Segment()
        {
            System.Runtime.InteropServices.MemoryMarshal.TryGetArray(_message.Content, out var segment);
            return (segment.Array!, segment.Offset + (int)_offset);
        }

        static void CopyTo(Stream source, Stream destination, CancellationToken cancellationToken)
        {
            var buffer = new byte[81920];
            int read;
            while ((read = source.Read(buffer)) > 0)
            {
                Write(destination, buffer, 0, read, cancellationToken);
            }
        }

        static void Write(Stream destination, byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        {
            if (destination is ICancellableStream cancellable)
            {
                cancellable.Write(buffer, offset, count, cancellationToken);
            }
            else
            {
                destination.Write(buffer, offset, count);
            }
        }
    }
}
