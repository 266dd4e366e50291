using System.Buffers;
using SmtpGateway.Storage;

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

    /// <summary>The octets held, in place (no copy); valid until the buffer is cleared.</summary>
    public ReadOnlySequence<byte> ToSequence()
    {
        var blocks = new ReadOnlyMemory<byte>[_chunks.Count];
        for (var i = 0; i < _chunks.Count; i++)
        {
            blocks[i] = _chunks[i].AsMemory(0, i == _chunks.Count - 1 ? _lastUsed : ChunkSize);
        }

        return ByteSequence.Of(blocks);
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
}
