using System.Buffers;

namespace SmtpGateway.Storage;

/// <summary>Octets held in several places, seen as one <see cref="ReadOnlySequence{T}"/> without copying them.</summary>
public static class ByteSequence
{
    /// <summary>Several sequences as one (empty ones are skipped).</summary>
    public static ReadOnlySequence<byte> Concat(IReadOnlyList<ReadOnlySequence<byte>> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        var memories = new List<ReadOnlyMemory<byte>>();
        foreach (var part in parts)
        {
            foreach (var memory in part)
            {
                memories.Add(memory);
            }
        }

        return Of(memories);
    }

    /// <summary>Blocks of memory as one sequence, in order (empty ones are skipped; one block needs no segment objects).</summary>
    public static ReadOnlySequence<byte> Of(IReadOnlyList<ReadOnlyMemory<byte>> blocks)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        Segment? first = null, last = null;
        ReadOnlyMemory<byte> only = default;
        var count = 0;
        foreach (var memory in blocks)
        {
            if (memory.IsEmpty)
            {
                continue;
            }

            if (++count == 1)
            {
                only = memory;
                continue;
            }

            if (first is null)
            {
                first = last = new Segment(only, 0);
            }

            var segment = new Segment(memory, last!.RunningIndex + last.Memory.Length);
            last.SetNext(segment);
            last = segment;
        }

        return count switch
        {
            0 => ReadOnlySequence<byte>.Empty,
            1 => new ReadOnlySequence<byte>(only),
            _ => new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length),
        };
    }

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
