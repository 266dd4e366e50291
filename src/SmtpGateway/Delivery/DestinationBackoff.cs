using System.Net;
using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;

namespace SmtpGateway.Delivery;

/// <summary>
/// Who connects where: the tenant (connections and their reputation are never shared between tenants, isolation promise 5
/// in ARCHITECTURE.md), the local source address it binds, and the destination host and port. Backoff and the
/// per-destination connection cap are kept per identity, so a receiver's verdict on one tenant (a 421 for its
/// reputation, a tarpit for its source address) reaches no other tenant.
/// </summary>
internal readonly record struct EgressIdentity(string Tenant, IPAddress? SourceAddress, string Host, int Port)
{
    public override string ToString() => $"{Tenant}/{SourceAddress?.ToString() ?? "*"} -> {Host}:{Port}";
}

/// <summary>
/// Backoff per egress identity (tenant, source address, host, port). An identity that failed FailuresBeforeBackoff
/// times in a row (no connection, no greeting, a refused session such as 421, session lost) is skipped for
/// InitialDelay, doubling with each further failure up to MaxDelay; one success clears it. Skipping costs nothing, so
/// messages to a dead domain are deferred at once instead of each holding a worker for a connect timeout per MX host,
/// and the workers stay free for everyone else.
/// <para>
/// Keyed by the whole identity, not the host: a 421 or a tarpit is often the receiver's judgement of one sender, and a
/// host-wide backoff would let one tenant's reputation delay every tenant's mail. The price is that a host that is
/// really dead is probed FailuresBeforeBackoff times by each tenant (and source address) before each backs off.
/// </para>
/// <para>
/// The table forgets: an entry is dropped once MaxDelay has passed without a new failure after its backoff ended (or
/// after its last failure, when it never backed off), checked when the entry is used and swept (oldest failure first)
/// on every call; and it never holds more than MaxEntries: a new identity then evicts the oldest entry of the tenant
/// with the most entries. Forgetting costs at most a probe, never a delivery.
/// </para>
/// </summary>
internal sealed class DestinationBackoff(DestinationBackoffConfig config, TimeProvider time, ILogger logger)
{
    /// <summary>At most one "table full" warning per this period: an eviction storm must not flood the log.</summary>
    static readonly TimeSpan FullWarningInterval = TimeSpan.FromMinutes(1);

    readonly Lock _gate = new();
    readonly Dictionary<EgressIdentity, LinkedListNode<Entry>> _entries = [];

    /// <summary>Entries by last failure, oldest first: the sweep and the eviction both take from the head.</summary>
    readonly LinkedList<Entry> _byLastFailure = new();

    /// <summary>Entries per tenant, for the eviction share.</summary>
    readonly Dictionary<string, int> _perTenant = new(StringComparer.Ordinal);
    long _evicted;
    DateTimeOffset _lastFullWarning = DateTimeOffset.MinValue;

    /// <summary>Identities remembered now (tests, diagnostics).</summary>
    internal int Count
    {
        get
        {
            lock (_gate)
            {
                return _entries.Count;
            }
        }
    }

    /// <summary>Entries dropped because the table was full (tests, diagnostics).</summary>
    internal long Evicted
    {
        get
        {
            lock (_gate)
            {
                return _evicted;
            }
        }
    }

    /// <summary>True (with the time it ends) when <paramref name="identity"/> is to be skipped now. Looks only: see <see cref="ClaimProbe"/>.</summary>
    public bool IsBackedOff(EgressIdentity identity, out DateTimeOffset until) => Check(identity, claimProbe: false, out until);

    /// <summary>
    /// The check made again once a connection slot is held (a worker may have waited for it while a backoff started). When a
    /// backoff has ended, only the first caller is let through, as the one probe: the others are skipped until the probe's
    /// outcome is recorded, or for at most InitialDelay should it never be (cancelled, or a TLS policy failure, which does
    /// not count against the host).
    /// </summary>
    public bool ClaimProbe(EgressIdentity identity, out DateTimeOffset until) => Check(identity, claimProbe: true, out until);

    bool Check(EgressIdentity identity, bool claimProbe, out DateTimeOffset until)
    {
        lock (_gate)
        {
            var now = time.GetUtcNow();
            Sweep(now);
            until = default;
            if (Find(identity, now) is not { Until: { } end } entry)
            {
                return false;
            }

            if (end > now)
            {
                until = end;
                return true;
            }

            // Ended: one probe goes through; its outcome decides.
            if (entry.ProbeUntil is { } probing && probing > now)
            {
                until = probing;
                return true;
            }

            if (claimProbe)
            {
                entry.ProbeUntil = now + config.InitialDelay;
            }

            return false;
        }
    }

    public void Failure(EgressIdentity identity)
    {
        var (started, full) = Record(identity);
        if (full is { } evicted)
        {
            DeliveryLog.BackoffTableFull(logger, Math.Max(1, config.MaxEntries), evicted);
        }

        if (started is { } entry)
        {
            DeliveryLog.BackoffStarted(logger, identity.Tenant, identity.Host, identity.Port, identity.SourceAddress?.ToString() ?? "any", entry.Failures, entry.Until);
        }
    }

    /// <summary>Counts a failure; returns the new backoff (when one starts or grows) and the eviction count when a "table full" warning is due.</summary>
    ((int Failures, DateTimeOffset Until)? Started, long? Full) Record(EgressIdentity identity)
    {
        long? full = null;
        lock (_gate)
        {
            var now = time.GetUtcNow();
            Sweep(now);
            if (Find(identity, now) is not null)
            {
                var node = _entries[identity];
                _byLastFailure.Remove(node);
                _byLastFailure.AddLast(node);
            }
            else
            {
                while (_entries.Count >= Math.Max(1, config.MaxEntries) && OldestOfLargestTenant() is { } oldest)
                {
                    Remove(oldest.Identity);
                    _evicted++;
                    if (now - _lastFullWarning >= FullWarningInterval)
                    {
                        _lastFullWarning = now;
                        full = _evicted;
                    }
                }

                _entries[identity] = _byLastFailure.AddLast(new Entry(identity));
                _perTenant[identity.Tenant] = _perTenant.GetValueOrDefault(identity.Tenant) + 1;
            }

            var entry = _entries[identity].Value;
            entry.ProbeUntil = null;
            entry.Failures++;
            entry.LastFailure = now;
            var over = entry.Failures - Math.Max(1, config.FailuresBeforeBackoff);
            if (over < 0)
            {
                return (null, full);
            }

            var delay = config.InitialDelay * Math.Pow(2, Math.Min(over, 20));
            if (delay > config.MaxDelay)
            {
                delay = config.MaxDelay;
            }

            entry.Until = now + delay;
            return ((entry.Failures, now + delay), full);
        }
    }

    public void Success(EgressIdentity identity)
    {
        lock (_gate)
        {
            Remove(identity);
        }
    }

    /// <summary>Forgets every backoff (`smtpgw queue retry --all`).</summary>
    public void Clear()
    {
        lock (_gate)
        {
            _entries.Clear();
            _byLastFailure.Clear();
            _perTenant.Clear();
        }
    }

    /// <summary>The live entry of <paramref name="identity"/>; an expired one is removed and not returned. Caller holds the gate.</summary>
    Entry? Find(EgressIdentity identity, DateTimeOffset now)
    {
        if (!_entries.TryGetValue(identity, out var node))
        {
            return null;
        }

        if (now < (node.Value.Until ?? node.Value.LastFailure) + config.MaxDelay)
        {
            return node.Value;
        }

        Remove(identity);
        return null;
    }

    /// <summary>
    /// Drops entries from the head while they are surely expired: a backoff never outlasts its failure by more than MaxDelay,
    /// so two MaxDelays after the last failure the entry's backoff ended at least MaxDelay ago. Amortised constant time.
    /// Caller holds the gate.
    /// </summary>
    void Sweep(DateTimeOffset now)
    {
        while (_byLastFailure.First is { } oldest && now >= oldest.Value.LastFailure + (config.MaxDelay * 2))
        {
            Remove(oldest.Value.Identity);
        }
    }

    void Remove(EgressIdentity identity)
    {
        if (_entries.Remove(identity, out var node))
        {
            _byLastFailure.Remove(node);
            if (--_perTenant[identity.Tenant] == 0)
            {
                _perTenant.Remove(identity.Tenant);
            }
        }
    }

    /// <summary>
    /// What a full table gives up: the oldest entry of the tenant with the most entries, so that one tenant's thousands of
    /// dead destinations push out its own entries and never another tenant's backoffs. Caller holds the gate.
    /// </summary>
    Entry? OldestOfLargestTenant()
    {
        string? largest = null;
        var most = 0;
        foreach (var (tenant, count) in _perTenant)
        {
            if (count > most)
            {
                (largest, most) = (tenant, count);
            }
        }

        for (var node = _byLastFailure.First; node is not null; node = node.Next)
        {
            if (node.Value.Identity.Tenant == largest)
            {
                return node.Value;
            }
        }

        return _byLastFailure.First?.Value;
    }

    sealed class Entry(EgressIdentity identity)
    {
        public EgressIdentity Identity { get; } = identity;

        public int Failures { get; set; }

        public DateTimeOffset LastFailure { get; set; }

        public DateTimeOffset? Until { get; set; }

        /// <summary>Set while the one probe after a backoff is under way (see <see cref="ClaimProbe"/>).</summary>
        public DateTimeOffset? ProbeUntil { get; set; }
    }
}
