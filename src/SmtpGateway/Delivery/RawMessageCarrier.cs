using MimeKit;
using MimeKit.IO;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery;

/// <summary>
/// Builds the <see cref="MimeMessage"/> that MailKit sends so that the bytes on the wire (before dot-stuffing)
/// are exactly the spooled bytes. MailKit can only send a MimeMessage, and re-serialising a parsed one may refold
/// headers or re-encode parts, which breaks DKIM signatures made before the spool (RFC 6376 section 3.4.1:
/// "simple" canonicalisation tolerates no change at all). So:
/// <list type="bullet">
/// <item>the header block is carried as one verbatim header (<see cref="VerbatimHeaderBlock"/>), never parsed;</item>
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
    static readonly IEnumerable<Header> NoHeaders = [];

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

        // MimeKit writes the header part through a CRLF filter, which leaves CRLF alone but turns a bare LF into CRLF:
        // only a block without a bare CR or LF comes out unchanged, and a pinned raw value must end with one (a message
        // that is all header and lacks its last CRLF). A first line that is not a header field is left to
        // LoadParsedAsync, which refuses what is not a message at all.
        var colon = headerBlock.Length == 0 ? 0 : FieldNameEnd(headerBlock);
        if (colon < 0 || !IsCrlfOnly(headerBlock) || headerBlock.Length > 0 && !headerBlock.AsSpan().EndsWith(Crlf))
        {
            return null;
        }

        var body = new RawBody(message, bodyOffset, message.Length - bodyOffset, message.EightBitData || message.Envelope.EightBitMime);
        var mime = new MimeMessage(NoHeaders) { Body = body };
        if (headerBlock.Length > 0)
        {
            mime.Headers.Add(new VerbatimHeaderBlock(headerBlock[..colon], headerBlock[(colon + 1)..]));
        }

        return new Carrier(mime, headerBlock.Length + Crlf.Length + body.Length, Exact: true);
    }

    /// <summary>
    /// The colon after the first line's field name (RFC 5322 section 2.2: printable US-ASCII but colon; section 4.5.3
    /// allows white space before the colon), or -1 when the first line is not a header field.
    /// </summary>
    static int FieldNameEnd(ReadOnlySpan<byte> block)
    {
        var nameEnd = block.IndexOfAnyExceptInRange((byte)'!', (byte)'~');
        if (nameEnd <= 0)
        {
            return -1;
        }

        var colon = block.IndexOf((byte)':');
        if (colon <= 0 || colon > nameEnd && block[nameEnd..colon].IndexOfAnyExcept((byte)' ', (byte)'\t') >= 0)
        {
            return -1;
        }

        return colon;
    }

    static bool IsCrlfOnly(ReadOnlySpan<byte> block)
    {
        for (var i = block.IndexOfAny((byte)'\r', (byte)'\n'); i >= 0; i = block.IndexOfAny((byte)'\r', (byte)'\n'))
        {
            if (block[i] != '\r' || i + 1 >= block.Length || block[i + 1] != '\n')
            {
                return false;
            }

            block = block[(i + 2)..];
        }

        return true;
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

            // The whole content without an empty line: all header (or the empty block when it starts with CRLF).
            return HeaderBlockOf(buffer.GetBuffer().AsSpan(0, (int)buffer.Length));
        }
    }

    /// <summary>The split of <see cref="ReadHeaderBlockAsync"/> over bytes in memory: content held in memory (below
    /// MaxHeaderBlock), and the streamed content that ended without an empty line.</summary>
    static (byte[] HeaderBlock, long BodyOffset) HeaderBlockOf(ReadOnlySpan<byte> data)
    {
        if (data.StartsWith(Crlf))
        {
            return ([], 2);
        }

        var index = data.IndexOf(HeaderEnd);
        return index >= 0 ? (data[..(index + 2)].ToArray(), index + HeaderEnd.Length) : (data.ToArray(), data.Length);
    }

    /// <summary>
    /// The whole header block as one header: MimeMessage writes a header as its raw field, a colon and its raw value,
    /// so the block split at its first colon comes out as it went in. No header is parsed, and no address list, header
    /// dictionary or parser buffer is built per message (they were the largest allocations of a delivery in the issue 15
    /// profile). The id is Unknown and the raw value is pinned (SetRawValue), so no FormatOptions (International for
    /// SMTPUTF8) re-encodes it, and no HiddenHeaders entry hides it. MailKit reads no header of a message it is given
    /// explicit envelope addresses for, with Prepare overridden (GatewaySmtpClient).
    /// </summary>
    sealed class VerbatimHeaderBlock : Header
    {
        public VerbatimHeaderBlock(byte[] field, byte[] value)
            : base(ParserOptions.Default, HeaderId.Unknown, "X-Smtpgw-Verbatim-Header-Block", field, value) =>
            SetRawValue(value);
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
