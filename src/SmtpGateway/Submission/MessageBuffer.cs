using System.Buffers;

namespace SmtpGateway.Submission;

/// <summary>
/// Accumulates one message in pooled 64 KiB chunks, so that thousands of concurrent sessions do not
/// allocate (and later collect) a large array per message.
/// </summary>
public sealed class MessageBuffer : IDisposable
{
    const int ChunkSize = 64 * 1024;
    readonly List<byte[]> _chunks = [];
    int _lastUsed = ChunkSize;

    public long Length { get; private set; }

    public void Append(ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            if (_lastUsed == ChunkSize)
            {
                _chunks.Add(ArrayPool<byte>.Shared.Rent(ChunkSize));
                _lastUsed = 0;
            }

            var n = Math.Min(ChunkSize - _lastUsed, data.Length);
            data[..n].CopyTo(_chunks[^1].AsSpan(_lastUsed));
            _lastUsed += n;
            Length += n;
            data = data[n..];
        }
    }

    public void Append(in ReadOnlySequence<byte> data)
    {
        foreach (var memory in data)
        {
            Append(memory.Span);
        }
    }

    public ReadOnlySequence<byte> ToSequence() => ToSequence(ReadOnlyMemory<byte>.Empty);

    /// <summary>The message with <paramref name="prefix"/> in front (e.g. DKIM-Signature headers), without copying the message.</summary>
    public ReadOnlySequence<byte> ToSequence(ReadOnlyMemory<byte> prefix)
    {
        if (_chunks.Count == 0)
        {
            return new ReadOnlySequence<byte>(prefix);
        }

        Segment? first = null, last = null;
        if (!prefix.IsEmpty)
        {
            first = last = new Segment(prefix, 0);
        }

        for (var i = 0; i < _chunks.Count; i++)
        {
            var used = i == _chunks.Count - 1 ? _lastUsed : ChunkSize;
            var segment = new Segment(_chunks[i].AsMemory(0, used), last?.RunningIndex + last?.Memory.Length ?? 0);
            if (last is null)
            {
                first = segment;
            }
            else
            {
                last.SetNext(segment);
            }

            last = segment;
        }

        return new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
    }

    public void Clear()
    {
        foreach (var chunk in _chunks)
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }

        _chunks.Clear();
        _lastUsed = ChunkSize;
        Length = 0;
    }

    public void Dispose() => Clear();

    sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public void SetNext(Segment next) => Next = next;
    }
}
