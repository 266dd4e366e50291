using SmtpGateway.Configuration;

namespace SmtpGateway.Delivery;

/// <summary>
/// Per-destination backoff. A host (name, port) that failed FailuresBeforeBackoff times in a row (no connection, no
/// greeting, TLS policy failure, session lost) is skipped for InitialDelay, doubling with each further failure up to
/// MaxDelay; one success clears it. Skipping costs nothing, so messages to a dead domain are deferred at once instead
/// of each holding a worker for a connect timeout per MX host, and the workers stay free for everyone else.
/// A destination is a host, not a tenant: a dead host is dead for every tenant.
/// </summary>
internal sealed class DestinationBackoff(DestinationBackoffConfig config, TimeProvider time)
{
    readonly Lock _gate = new();
    readonly Dictionary<(string Host, int Port), Entry> _entries = [];

    /// <summary>True (with the time it ends) when <paramref name="host"/> is to be skipped now.</summary>
    public bool IsBackedOff(string host, int port, out DateTimeOffset until)
    {
        lock (_gate)
        {
            until = default;
            if (!_entries.TryGetValue((host, port), out var entry) || entry.Until is not { } end)
            {
                return false;
            }

            if (end <= time.GetUtcNow())
            {
                return false; // Expired: one probe goes through; its outcome decides.
            }

            until = end;
            return true;
        }
    }

    public void Failure(string host, int port)
    {
        lock (_gate)
        {
            if (!_entries.TryGetValue((host, port), out var entry))
            {
                _entries[(host, port)] = entry = new Entry();
            }

            entry.Failures++;
            var over = entry.Failures - Math.Max(1, config.FailuresBeforeBackoff);
            if (over < 0)
            {
                return;
            }

            var delay = config.InitialDelay * Math.Pow(2, Math.Min(over, 20));
            if (delay > config.MaxDelay)
            {
                delay = config.MaxDelay;
            }

            entry.Until = time.GetUtcNow() + delay;
        }
    }

    public void Success(string host, int port)
    {
        lock (_gate)
        {
            _entries.Remove((host, port));
        }
    }

    /// <summary>Forgets every backoff (`smtpgw queue retry --all`).</summary>
    public void Clear()
    {
        lock (_gate)
        {
            _entries.Clear();
        }
    }

    sealed class Entry
    {
        public int Failures { get; set; }

        public DateTimeOffset? Until { get; set; }
    }
}
