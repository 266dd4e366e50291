using System.Buffers;

namespace SmtpGateway.Storage;

/// <summary>Octets held in several places, seen as one <see cref="ReadOnlySequence{T}"/> without copying them.</summary>
public static class ByteSequence
{
    /// <summary>Several sequences as one (empty ones are skipped).</summary>
    public static ReadOnlySequence<byte> Concat(IReadOnlyList<ReadOnlySequence<byte>> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        Segment? first = null, last = null;
        foreach (var part in parts)
        {
            foreach (var memory in part)
            {
                if (memory.IsEmpty)
                {
                    continue;
                }

                var segment = new Segment(memory, last is null ? 0 : last.RunningIndex + last.Memory.Length);
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
        }

        return first is null ? ReadOnlySequence<byte>.Empty : new ReadOnlySequence<byte>(first, 0, last!, last!.Memory.Length);
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
