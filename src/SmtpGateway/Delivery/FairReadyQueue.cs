namespace SmtpGateway.Delivery;

/// <summary>
/// The delivery workers' view of the spool's ready ids: one FIFO per tenant, the tenants with ready ids served in turn
/// (round-robin), and at most MaxPerTenant ids of one tenant in flight at once. Without it one tenant's backlog to a slow
/// host (a tarpit that still answers 250, so no backoff starts) would hold every worker: those delivering and those
/// waiting for a connection slot of the same egress identity, while another tenant's message waited behind the whole
/// backlog. In memory only: the spool files stay the durable truth, and ids not yet taken come back on recovery.
/// </summary>
internal sealed class FairReadyQueue(int maxPerTenant)
{
    readonly int _maxPerTenant = Math.Max(1, maxPerTenant);
    readonly Lock _gate = new();
    readonly Dictionary<string, TenantQueue> _tenants = new(StringComparer.Ordinal);

    /// <summary>Tenants with a ready id and below their share, in turn order.</summary>
    readonly Queue<TenantQueue> _turns = new();

    /// <summary>Completed (and replaced) whenever something may have become takeable; waiting workers then look again.</summary>
    TaskCompletionSource _changed = NewSignal();

    /// <summary>Ids of <paramref name="tenant"/> being attempted now (tests).</summary>
    internal int InFlight(string tenant)
    {
        lock (_gate)
        {
            return _tenants.TryGetValue(tenant, out var t) ? t.InFlight : 0;
        }
    }

    /// <summary>Ids of <paramref name="tenant"/> waiting for a worker (tests).</summary>
    internal int ReadyCount(string tenant)
    {
        lock (_gate)
        {
            return _tenants.TryGetValue(tenant, out var t) ? t.Ready.Count : 0;
        }
    }

    public void Add(string id, string tenant)
    {
        TaskCompletionSource? signal = null;
        lock (_gate)
        {
            if (!_tenants.TryGetValue(tenant, out var t))
            {
                _tenants[tenant] = t = new TenantQueue(tenant);
            }

            t.Ready.Enqueue(id);
            if (TryEnterTurn(t))
            {
                signal = Pulse();
            }
        }

        signal?.TrySetResult();
    }

    /// <summary>The next id to attempt with its tenant; the caller reports the end of the attempt with <see cref="Done"/>.</summary>
    public async Task<(string Id, string Tenant)> TakeAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                while (_turns.TryDequeue(out var t))
                {
                    t.InTurn = false;
                    if (!t.Ready.TryDequeue(out var id))
                    {
                        continue;
                    }

                    t.InFlight++;
                    TryEnterTurn(t);
                    return (id, t.Name);
                }

                changed = _changed.Task;
            }

            await changed.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>An attempt taken from <see cref="TakeAsync"/> ended: the tenant's share has room again.</summary>
    public void Done(string tenant)
    {
        TaskCompletionSource? signal = null;
        lock (_gate)
        {
            if (!_tenants.TryGetValue(tenant, out var t))
            {
                return;
            }

            t.InFlight--;
            if (TryEnterTurn(t))
            {
                signal = Pulse();
            }
            else if (t.InFlight <= 0 && t.Ready.Count == 0)
            {
                // Forgotten when idle: the table holds only tenants with work.
                _tenants.Remove(tenant);
            }
        }

        signal?.TrySetResult();
    }

    /// <summary>Puts the tenant in line when it has a ready id and room in its share; caller holds the gate.</summary>
    bool TryEnterTurn(TenantQueue t)
    {
        if (t.InTurn || t.Ready.Count == 0 || t.InFlight >= _maxPerTenant)
        {
            return false;
        }

        t.InTurn = true;
        _turns.Enqueue(t);
        return true;
    }

    /// <summary>Swaps in a fresh signal and returns the old one, completed by the caller outside the gate.</summary>
    TaskCompletionSource Pulse()
    {
        var old = _changed;
        _changed = NewSignal();
        return old;
    }

    static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    sealed class TenantQueue(string name)
    {
        public string Name { get; } = name;

        public Queue<string> Ready { get; } = new();

        public int InFlight { get; set; }

        public bool InTurn { get; set; }
    }
}
