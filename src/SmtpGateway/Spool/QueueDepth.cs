using System.Diagnostics.Metrics;

namespace SmtpGateway.Spool;

/// <summary>Where a message in queue/ stands, the closed set of the "state" label of smtpgw.queue.depth.</summary>
public enum QueueState
{
    /// <summary>Committed, not attempted yet.</summary>
    Queued,

    /// <summary>Attempted at least once, waiting for its next attempt.</summary>
    Deferred,
}

/// <summary>
/// Messages in queue/ by tenant and state, counted in memory as they move (commit, recovery, an attempt that defers,
/// completion, removal), so a scrape costs a dictionary walk over tenants, never a directory scan. Keyed by queue id:
/// a second report for the same id moves it between states rather than counting it twice.
/// </summary>
internal sealed class QueueDepth
{
    readonly Lock _gate = new();
    readonly Dictionary<string, (string Tenant, QueueState State)> _byId = new(StringComparer.Ordinal);

    /// <summary>Counts by (tenant, state); a count that falls to zero stays, so its series reads 0 rather than vanishing.</summary>
    readonly Dictionary<(string Tenant, QueueState State), long> _counts = [];

    /// <summary>The message <paramref name="id"/> is in queue/ in <paramref name="state"/>; a known id keeps the tenant it came with.</summary>
    public void Set(string id, string? tenant, QueueState state)
    {
        lock (_gate)
        {
            if (_byId.TryGetValue(id, out var old))
            {
                if (old.State == state)
                {
                    return;
                }

                _counts[old]--;
                tenant = old.Tenant;
            }

            var entry = (tenant ?? Diagnostics.Telemetry.NoTenant, state);
            _byId[id] = entry;
            _counts[entry] = _counts.GetValueOrDefault(entry) + 1;
        }
    }

    /// <summary>The message left queue/ (delivered, failed, deleted, moved aside); an unknown id is ignored.</summary>
    public void Remove(string id)
    {
        lock (_gate)
        {
            if (_byId.Remove(id, out var old))
            {
                _counts[old]--;
            }
        }
    }

    public long Count(string tenant, QueueState state)
    {
        lock (_gate)
        {
            return _counts.GetValueOrDefault((tenant, state));
        }
    }

    /// <summary>One measurement per (tenant, state) seen since start: the observable gauge's callback.</summary>
    public IEnumerable<Measurement<long>> Observe()
    {
        lock (_gate)
        {
            var measurements = new Measurement<long>[_counts.Count];
            var i = 0;
            foreach (var ((tenant, state), count) in _counts)
            {
                measurements[i++] = new Measurement<long>(count, new KeyValuePair<string, object?>("tenant", tenant), new KeyValuePair<string, object?>("state", Label(state)));
            }

            return measurements;
        }
    }

    public static string Label(QueueState state) => state == QueueState.Deferred ? "deferred" : "queued";
}
