namespace SmtpGateway.Submission;

/// <summary>
/// The octets of message data that every session together may hold in memory (Limits:MaxInFlightMemory). A message takes
/// its memory in chunks as it grows; when the budget is spent it streams the rest to disk instead, so concurrent large
/// DATA transfers cost disk, not an out-of-memory that would take every tenant down.
/// </summary>
public sealed class MessageMemoryBudget(long capacity)
{
    long _used;

    public long Capacity { get; } = capacity;

    public long Used => Interlocked.Read(ref _used);

    public long Available => Capacity - Used;

    /// <summary>Takes <paramref name="octets"/> if they fit leaving <paramref name="keep"/> free; false (nothing taken) when not.</summary>
    public bool TryTake(long octets, long keep = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(octets);
        var used = Interlocked.Read(ref _used);
        while (true)
        {
            if (used + octets > Capacity - keep)
            {
                return false;
            }

            var seen = Interlocked.CompareExchange(ref _used, used + octets, used);
            if (seen == used)
            {
                SubmissionMetrics.MemoryTaken(octets);
                return true;
            }

            used = seen;
        }
    }

    public void Return(long octets)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(octets);
        Interlocked.Add(ref _used, -octets);
        SubmissionMetrics.MemoryReturned(octets);
    }
}
