using System.Buffers;

namespace SmtpGateway.Signing;

/// <summary>
/// A read-only, seekable stream over a <see cref="ReadOnlySequence{T}"/>, so a message held in the listener's pooled
/// chunks can be parsed in place (MimeKit's persistent parse needs seeking: body parts are ranges of this stream).
/// The sequence must stay valid, and unchanged, for as long as the stream or anything parsed from it is used.
/// </summary>
internal sealed class ReadOnlySequenceStream(ReadOnlySequence<byte> sequence) : Stream
{
    readonly ReadOnlySequence<byte> _sequence = sequence;
    SequencePosition _position = sequence.Start;
    long _offset;

    public override bool CanRead => true;

    public override bool CanSeek => true;

    public override bool CanWrite => false;

    public override long Length => _sequence.Length;

    public override long Position
    {
        get => _offset;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            _offset = value;
            _position = _sequence.GetPosition(Math.Min(value, _sequence.Length));
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        if (_offset >= _sequence.Length || buffer.IsEmpty)
        {
            return 0;
        }

        var remaining = _sequence.Slice(_position);
        var n = (int)Math.Min(buffer.Length, remaining.Length);
        remaining.Slice(0, n).CopyTo(buffer);
        _position = remaining.GetPosition(n);
        _offset += n;
        return n;
    }

    public override int ReadByte()
    {
        Span<byte> one = stackalloc byte[1];
        return Read(one) == 1 ? one[0] : -1;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        Task.FromResult(Read(buffer, offset, count));

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Read(buffer.Span));

    public override long Seek(long offset, SeekOrigin origin)
    {
        Position = origin switch
        {
            SeekOrigin.Begin => offset,
            SeekOrigin.Current => _offset + offset,
            SeekOrigin.End => _sequence.Length + offset,
            _ => throw new ArgumentOutOfRangeException(nameof(origin)),
        };
        return _offset;
    }

    public override void Flush()
    {
    }

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
