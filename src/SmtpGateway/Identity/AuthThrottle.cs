using System.Collections.Concurrent;
using System.Net;

namespace SmtpGateway.Identity;

/// <summary>
/// Slows and then shuts out a client address that keeps failing AUTH (password guessing). Counts failures in a
/// sliding window per address (an IPv6 client per /64: <see cref="ClientAddress.Key"/>); shared by all listeners so
/// reconnecting does not reset it.
/// </summary>
/// <param name="maxTrackedAddresses">Upper bound on tracked addresses, so a flood from many sources cannot grow memory without limit.</param>
public sealed class AuthThrottle(int failuresBeforeDelay, int failuresBeforeDisconnect, TimeSpan window, TimeProvider time, int maxTrackedAddresses = 100_000)
{

    readonly ConcurrentDictionary<IPAddress, Queue<DateTimeOffset>> _failures = new();

    public int FailuresInWindow(IPAddress address)
    {
        if (!_failures.TryGetValue(ClientAddress.Key(address), out var q))
        {
            return 0;
        }

        lock (q)
        {
            Prune(q);
            return q.Count;
        }
    }

    public bool IsBlocked(IPAddress address) => FailuresInWindow(address) >= failuresBeforeDisconnect;

    /// <summary>Records a failure; returns how long to wait before answering (grows with each failure past the threshold).</summary>
    public TimeSpan RecordFailure(IPAddress address)
    {
        var key = ClientAddress.Key(address);
        if (_failures.Count >= maxTrackedAddresses && !_failures.ContainsKey(key))
        {
            // Only a new address needs room: one already tracked must never be evicted by its own next failure.
            Evict();
        }

        var q = _failures.GetOrAdd(key, _ => new Queue<DateTimeOffset>());
        int count;
        lock (q)
        {
            Prune(q);
            q.Enqueue(time.GetUtcNow());
            count = q.Count;
        }

        var over = count - failuresBeforeDelay;
        return over <= 0 ? TimeSpan.Zero : TimeSpan.FromMilliseconds(Math.Min(250 * over, 5000));
    }

    /// <summary>
    /// Makes room for a tenth of the table: addresses whose failures have all left the window go first, then those seen
    /// least recently. Dropping arbitrary entries instead would let an attacker who fills the table with throw-away
    /// sources wipe the count of the address that is actually guessing passwords (it is the most recently seen).
    /// </summary>
    void Evict()
    {
        var seen = new List<(IPAddress Key, DateTimeOffset Last)>(_failures.Count);
        foreach (var (key, q) in _failures)
        {
            lock (q)
            {
                Prune(q);
                if (q.Count == 0)
                {
                    _failures.TryRemove(key, out _);
                }
                else
                {
                    seen.Add((key, q.Last()));
                }
            }
        }

        var excess = seen.Count - (maxTrackedAddresses - (maxTrackedAddresses / 10));
        if (excess <= 0)
        {
            return;
        }

        foreach (var (key, _) in seen.OrderBy(s => s.Last).Take(excess))
        {
            _failures.TryRemove(key, out _);
        }
    }

    void Prune(Queue<DateTimeOffset> q)
    {
        var cutoff = time.GetUtcNow() - window;
        while (q.Count > 0 && q.Peek() < cutoff)
        {
            q.Dequeue();
        }
    }
}
