namespace SmtpGateway.Mcp;

/// <summary>Thrown while an /mcp body is read when its JSON is shaped beyond any tool's need; answered 400.</summary>
public sealed class McpBodyRejectedException(string message) : IOException(message);

/// <summary>
/// The /mcp request body as the SDK reads it, with the JSON's shape bounded as it streams by: at most
/// <see cref="MaxElements"/> structural elements (each object, array and member or item separator) and
/// <see cref="MaxDepth"/> levels. The byte limit alone is not enough: 48 MiB of <c>["a@b.cc", ...]</c> is five million
/// items, which the SDK would parse into a document of gigabytes before any tool could count them. No tool takes more
/// than a few hundred elements, so the limit costs a legitimate call nothing, and nothing is buffered here: bytes are
/// only scanned on their way through (a string's contents, however long, are skipped).
/// </summary>
internal sealed class McpBodyGuard(Stream inner) : Stream
{
    public const int MaxElements = 10_000;

    public const int MaxDepth = 32;

    long _elements;
    int _depth;
    bool _inString;
    bool _escaped;

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var read = await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        Scan(buffer.Span[..read]);
        return read;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count)
    {
        var read = inner.Read(buffer, offset, count);
        Scan(buffer.AsSpan(offset, read));
        return read;
    }

    internal void Scan(ReadOnlySpan<byte> bytes)
    {
        foreach (var b in bytes)
        {
            if (_inString)
            {
                // RFC 8259 section 7: inside a string only an unescaped quote ends it; a backslash escapes one character.
                if (_escaped)
                {
                    _escaped = false;
                }
                else if (b == (byte)'\\')
                {
                    _escaped = true;
                }
                else if (b == (byte)'"')
                {
                    _inString = false;
                }

                continue;
            }

            switch (b)
            {
                case (byte)'"':
                    _inString = true;
                    break;
                case (byte)'{' or (byte)'[':
                    if (++_depth > MaxDepth)
                    {
                        throw new McpBodyRejectedException($"The request's JSON is nested deeper than {MaxDepth} levels; no tool takes that.");
                    }

                    Count();
                    break;
                case (byte)'}' or (byte)']':
                    _depth--;
                    break;
                case (byte)',':
                    Count();
                    break;
            }
        }
    }

    void Count()
    {
        if (++_elements > MaxElements)
        {
            throw new McpBodyRejectedException($"The request has more than {MaxElements} JSON elements (objects, arrays, members and items); no tool takes that many.");
        }
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
