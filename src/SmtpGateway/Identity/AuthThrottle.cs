using System.Collections.Concurrent;
using System.Net;

namespace SmtpGateway.Identity;

/// <summary>
/// Slows and then shuts out a client address that keeps failing AUTH (password guessing). Counts failures in a
/// sliding window per address (an IPv6 client per /64: <see cref="ClientAddress.Key"/>); shared by all listeners so
/// reconnecting does not reset it.
/// </summary>
public sealed class AuthThrottle(int failuresBeforeDelay, int failuresBeforeDisconnect, TimeSpan window, TimeProvider time)
{
    /// <summary>Upper bound on tracked addresses, so a spoofed-source flood cannot grow memory without limit.</summary>
    const int MaxTrackedAddresses = 100_000;

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
        if (_failures.Count >= MaxTrackedAddresses)
        {
            foreach (var key in _failures.Keys.Take(MaxTrackedAddresses / 10))
            {
                _failures.TryRemove(key, out _);
            }
        }

        var q = _failures.GetOrAdd(ClientAddress.Key(address), _ => new Queue<DateTimeOffset>());
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

    void Prune(Queue<DateTimeOffset> q)
    {
        var cutoff = time.GetUtcNow() - window;
        while (q.Count > 0 && q.Peek() < cutoff)
        {
            q.Dequeue();
        }
    }
}
