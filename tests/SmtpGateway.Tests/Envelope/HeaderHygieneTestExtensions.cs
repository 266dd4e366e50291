using System.Buffers;
using System.Runtime.InteropServices;
using SmtpGateway.Envelope;

namespace SmtpGateway.Tests.Envelope;

/// <param name="Changed">True when fields were removed and the cleaned message was written to the callback.</param>
/// <param name="HasMessageId">A kept Message-ID field was seen in the header block.</param>
/// <param name="RemovedFields">Number of removed fields (a folded field counts once).</param>
public readonly record struct HygieneResult(bool Changed, bool HasMessageId, int RemovedFields);

/// <summary>Receives consecutive chunks of the cleaned message.</summary>
public delegate void HygieneWriter(ReadOnlySequence<byte> chunk);

/// <summary>
/// The byte-level view the hygiene tests were written against: a whole message in, the cleaned message out as runs of kept
/// octets (slices of the input when it is one array). It goes through exactly what the pipeline uses: the header section
/// split by <see cref="HeaderSection.Parse"/> and <see cref="HeaderHygiene.Clean(HeaderSection, bool, ICollection{string}?)"/>.
/// </summary>
public static class HeaderHygieneTestExtensions
{
    public static HygieneResult Clean(this HeaderHygiene hygiene, in ReadOnlySequence<byte> content, bool outbound, HygieneWriter output, ICollection<string>? removedNames = null)
    {
        var memory = content.IsSingleSegment ? content.First : content.ToArray();
        var section = HeaderSection.Parse(memory, out var consumed);
        var outcome = hygiene.Clean(section, outbound, removedNames);
        if (!outcome.Changed)
        {
            return new HygieneResult(false, outcome.HasMessageId, 0);
        }

        // Adjacent kept octets go out as one run, as a byte scanner would write them.
        var runs = new List<ReadOnlyMemory<byte>>();
        foreach (var part in outcome.Section.Fields.Select(f => f.Raw).Append(memory[(consumed - section.Trailer.Length)..]))
        {
            if (part.IsEmpty)
            {
                continue;
            }

            if (runs.Count > 0 && Adjacent(runs[^1], part))
            {
                runs[^1] = Extend(runs[^1], part.Length);
            }
            else
            {
                runs.Add(part);
            }
        }

        foreach (var run in runs)
        {
            output(new ReadOnlySequence<byte>(run));
        }

        return new HygieneResult(true, outcome.HasMessageId, outcome.RemovedFields);
    }

    static bool Adjacent(ReadOnlyMemory<byte> first, ReadOnlyMemory<byte> next) =>
        MemoryMarshal.TryGetArray(first, out var a) && MemoryMarshal.TryGetArray(next, out var b)
        && ReferenceEquals(a.Array, b.Array) && a.Offset + a.Count == b.Offset;

    static ReadOnlyMemory<byte> Extend(ReadOnlyMemory<byte> run, int by)
    {
        MemoryMarshal.TryGetArray(run, out var segment);
        return segment.Array.AsMemory(segment.Offset, segment.Count + by);
    }
}
