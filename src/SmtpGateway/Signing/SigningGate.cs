using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Signing;

/// <summary>"Gateway:Hsm" signing capacity as the gate uses it (validated at start by GatewayConfigValidator).</summary>
/// <param name="Capacity">Signatures in progress at once across all tenants (Gateway:Hsm:MaxConcurrentSigning).</param>
/// <param name="TenantCeiling">
/// No tenant's share goes above this (Gateway:Hsm:MaxSessionsPerToken): each tenant signs in its own token, so a share
/// within the token's session pool means a granted signer never waits for a session.
/// </param>
/// <param name="WaitTimeout">How long a message waits for a slot before 451 4.3.0 (Gateway:Hsm:SigningWaitTimeout).</param>
/// <param name="MaxWaitersPerTenant">Messages one tenant may have waiting; one more is refused at once (Gateway:Hsm:MaxSigningWaitersPerTenant).</param>
public sealed record SigningGateOptions(int Capacity, int TenantCeiling, TimeSpan WaitTimeout, int MaxWaitersPerTenant)
{
    /// <summary>Gateway:Hsm:MaxConcurrentSigning when unset: two per core (C_Sign is CPU work in SoftHSM2), within 4..64.</summary>
    public static int DefaultCapacity => Math.Clamp(Environment.ProcessorCount * 2, 4, 64);

    public static SigningGateOptions Default { get; } = new(DefaultCapacity, 8, TimeSpan.FromSeconds(30), 256);
}

/// <summary>Why the gate refused a slot; a closed set (it is a metric label).</summary>
public enum SigningRefusal
{
    None,

    /// <summary>No slot within Gateway:Hsm:SigningWaitTimeout.</summary>
    Timeout,

    /// <summary>The tenant already had Gateway:Hsm:MaxSigningWaitersPerTenant messages waiting.</summary>
    QueueFull,

    /// <summary>The caller gave up (session closed) while waiting.</summary>
    Cancelled,
}

/// <summary>
/// Fair, asynchronous admission to signing (issue 12): a gateway-wide number of slots, of which each tenant holds at most
/// its share (TenantLimits.MaxConcurrentSigning). Waiters queue per tenant, FIFO; a released slot goes to the waiting
/// tenant holding the fewest slots, ties in round-robin order. So a tenant arriving with nothing in flight while another
/// floods is granted at the next release, and a flood costs other tenants at most one signing slot of waiting. Waiting
/// never blocks a thread: a waiter is a task completed by whoever releases the slot.
/// </summary>
/// <remarks>
/// One lock guards all state; every path holds it for a few field updates (and, on a release with waiters, a scan of the
/// tenants that have waiters). Completions run outside it, continuations asynchronously, so no caller's code runs
/// under the lock and a release never runs another message's signing on its own stack.
/// </remarks>
public sealed class SigningGate
{
    static readonly Histogram<double> WaitMs = Telemetry.Meter.CreateHistogram<double>(
        Telemetry.SigningWait, "ms", "Time a message waited for a signing slot, per tenant (0 when one was free)");

    static readonly Counter<long> Refused = Telemetry.Meter.CreateCounter<long>(
        Telemetry.SigningRefused, "{message}", "Messages answered 451 4.3.0 because no signing slot was granted, per tenant; reason=timeout|queue_full|cancelled");

    readonly Lock _lock = new();
    /// <summary>
    /// Kept once made, so the hot path allocates nothing but the slot: tenant ids come from the tenant snapshot (never from
    /// client input), so this holds at most every tenant configured since start.
    /// </summary>
    readonly Dictionary<string, TenantState> _tenants = new(StringComparer.Ordinal);

    /// <summary>Tenants with waiters, in round-robin order (a tenant granted from here moves to the end).</summary>
    readonly List<TenantState> _waiting = [];
    readonly SigningGateOptions _options;
    readonly TimeProvider _time;
    readonly ILogger _logger;

    /// <summary>When each (tenant, reason) warning was last written, and how many were left out since (one line a minute at most).</summary>
    readonly ConcurrentDictionary<(string Tenant, SigningRefusal Reason), LogWindow> _logged = new();
    int _inUse;

    /// <summary>A flood refused thousands of times a second writes one warning per tenant and reason in this window.</summary>
    static readonly TimeSpan LogInterval = TimeSpan.FromMinutes(1);

    public SigningGate(SigningGateOptions options, TimeProvider time, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Capacity, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.TenantCeiling, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxWaitersPerTenant, 0);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(options.WaitTimeout, TimeSpan.Zero);
        _options = options;
        _time = time;
        _logger = logger ?? NullLogger.Instance;
    }

    public int Capacity => _options.Capacity;

    /// <summary>Slots held now, all tenants (tests, diagnostics).</summary>
    public int InUse
    {
        get
        {
            lock (_lock)
            {
                return _inUse;
            }
        }
    }

    /// <summary>The share a tenant with that configured limit gets: never above the gateway capacity or the token's sessions.</summary>
    public int ShareOf(int tenantLimit) => Math.Clamp(tenantLimit, 1, Math.Min(_options.Capacity, _options.TenantCeiling));

    /// <summary>Slots held and messages waiting for one tenant (tests, diagnostics).</summary>
    public (int Held, int Waiting) Usage(string tenantId)
    {
        lock (_lock)
        {
            return _tenants.TryGetValue(tenantId, out var state) ? (state.Held, state.Waiters.Count) : (0, 0);
        }
    }

    /// <summary>
    /// A slot for one message of the tenant: at once when the tenant is below its share and a slot is free and none of its
    /// messages waits before this one; else when a release hands it one. A refused result holds nothing. A granted one
    /// must be disposed (exactly once; later calls do nothing) when signing ends, however it ends.
    /// </summary>
    public ValueTask<SigningSlot> AcquireAsync(string tenantId, int tenantLimit, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tenantId);
        var share = ShareOf(tenantLimit);
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromResult(Refuse(tenantId, SigningRefusal.Cancelled, 0, share));
        }

        Waiter? waiter = null;
        List<Waiter>? granted = null;
        int? heldWhenFull = null;
        TenantState? state;
        lock (_lock)
        {
            if (!_tenants.TryGetValue(tenantId, out state))
            {
                state = new TenantState(tenantId);
                _tenants.Add(tenantId, state);
            }

            // The latest snapshot's limit applies (a reload may lower or raise it; slots already held are kept).
            state.Share = share;
            if (state.Waiters.Count == 0 && state.Held < share && _inUse < _options.Capacity)
            {
                state.Held++;
                _inUse++;
            }
            else if (state.Waiters.Count >= _options.MaxWaitersPerTenant)
            {
                heldWhenFull = state.Held;
            }
            else
            {
                waiter = new Waiter(this, state, _time.GetTimestamp());
                state.Waiters.AddLast(waiter.Node);
                if (state.Waiters.Count == 1)
                {
                    _waiting.Add(state);
                }

                // Only a reload that raised this tenant's share can leave a slot for it here; the waiters take it now.
                granted = Dispatch();
            }
        }

        // Metrics and logs outside the lock, as everything that is not the gate's own state.
        if (heldWhenFull is { } held)
        {
            return ValueTask.FromResult(Refuse(tenantId, SigningRefusal.QueueFull, held, share));
        }

        if (waiter is null)
        {
            WaitMs.Record(0, new KeyValuePair<string, object?>("tenant", tenantId));
            return ValueTask.FromResult(new SigningSlot(this, state));
        }

        Complete(granted);

        // Armed after it is queued: a timer or token firing at once finds it there and takes it out.
        waiter.Arm(_time, _options.WaitTimeout, cancellationToken);
        return new ValueTask<SigningSlot>(waiter.Task);
    }

    SigningSlot Refuse(string tenantId, SigningRefusal reason, int held, int share)
    {
        Refused.Add(1, new KeyValuePair<string, object?>("tenant", tenantId), new KeyValuePair<string, object?>("reason", ReasonTag(reason)));
        if (reason != SigningRefusal.Cancelled)
        {
            // A closed session is no news to the operator; a tenant refused for want of slots is, once a minute.
            var window = _logged.GetOrAdd((tenantId, reason), static _ => new LogWindow(LogInterval));
            if (window.ShouldWrite(_time, out var skipped))
            {
                SigningLog.SigningRefused(_logger, tenantId, ReasonTag(reason), held, share, skipped);
            }
        }

        return new SigningSlot(reason);
    }

    /// <summary>A granted slot comes back: hand it (and any other free slot) to the waiters that may take one.</summary>
    internal void Release(TenantState state)
    {
        List<Waiter>? granted;
        lock (_lock)
        {
            state.Held--;
            _inUse--;
            granted = Dispatch();
        }

        Complete(granted);
    }

    /// <summary>A waiter's timer or token fired: take it out if it is still waiting (a grant may have won the race).</summary>
    void Abandon(Waiter waiter, SigningRefusal reason)
    {
        int held, share;
        lock (_lock)
        {
            var state = waiter.State;
            if (waiter.Node.List is null)
            {
                return;
            }

            state.Waiters.Remove(waiter.Node);
            if (state.Waiters.Count == 0)
            {
                _waiting.Remove(state);
            }

            held = state.Held;
            share = state.Share;
        }

        waiter.Disarm();
        waiter.TrySetResult(Refuse(waiter.State.TenantId, reason, held, share));
    }

    /// <summary>
    /// Under the lock: while a slot is free, grant the oldest waiter of the waiting tenant below its share that holds the
    /// fewest slots (first in round-robin order among equals), and move that tenant to the end of the order.
    /// </summary>
    List<Waiter>? Dispatch()
    {
        List<Waiter>? granted = null;
        while (_inUse < _options.Capacity && _waiting.Count > 0)
        {
            var best = -1;
            for (var i = 0; i < _waiting.Count; i++)
            {
                var candidate = _waiting[i];
                if (candidate.Held < candidate.Share && (best < 0 || candidate.Held < _waiting[best].Held))
                {
                    best = i;
                }
            }

            if (best < 0)
            {
                break; // every waiting tenant is at its share: its own release will dispatch
            }

            var state = _waiting[best];
            _waiting.RemoveAt(best);
            var node = state.Waiters.First!;
            state.Waiters.RemoveFirst();
            if (state.Waiters.Count > 0)
            {
                _waiting.Add(state);
            }

            state.Held++;
            _inUse++;
            (granted ??= []).Add(node.Value);
        }

        return granted;
    }

    void Complete(List<Waiter>? granted)
    {
        if (granted is null)
        {
            return;
        }

        foreach (var waiter in granted)
        {
            waiter.Disarm();
            WaitMs.Record(_time.GetElapsedTime(waiter.Since).TotalMilliseconds, new KeyValuePair<string, object?>("tenant", waiter.State.TenantId));
            waiter.TrySetResult(new SigningSlot(this, waiter.State));
        }
    }

    static string ReasonTag(SigningRefusal reason) => reason switch
    {
        SigningRefusal.Timeout => "timeout",
        SigningRefusal.QueueFull => "queue_full",
        SigningRefusal.Cancelled => "cancelled",
        _ => "other",
    };

    internal sealed class TenantState(string tenantId)
    {
        public string TenantId { get; } = tenantId;

        public int Held { get; set; }

        public int Share { get; set; }

        public LinkedList<Waiter> Waiters { get; } = new();
    }

    internal sealed class Waiter : TaskCompletionSource<SigningSlot>
    {
        readonly SigningGate _gate;
        ITimer? _timer;
        CancellationTokenRegistration _registration;

        public Waiter(SigningGate gate, TenantState state, long since)
            : base(TaskCreationOptions.RunContinuationsAsynchronously)
        {
            _gate = gate;
            State = state;
            Since = since;
            Node = new LinkedListNode<Waiter>(this);
        }

        public TenantState State { get; }

        public long Since { get; }

        public LinkedListNode<Waiter> Node { get; }

        public void Arm(TimeProvider time, TimeSpan timeout, CancellationToken cancellationToken)
        {
            var timer = time.CreateTimer(static w => ((Waiter)w!).Fire(SigningRefusal.Timeout), this, timeout, Timeout.InfiniteTimeSpan);
            Volatile.Write(ref _timer, timer);
            if (Task.IsCompleted)
            {
                timer.Dispose(); // granted before the timer existed
            }

            if (cancellationToken.CanBeCanceled)
            {
                _registration = cancellationToken.UnsafeRegister(static w => ((Waiter)w!).Fire(SigningRefusal.Cancelled), this);
                if (Task.IsCompleted)
                {
                    _registration.Unregister(); // granted or refused meanwhile: a long-lived token must not keep the waiter
                }
            }
        }

        void Fire(SigningRefusal reason) => _gate.Abandon(this, reason);

        /// <summary>Never waits for a running callback (Unregister, not Dispose): the callback may be the caller.</summary>
        public void Disarm()
        {
            Volatile.Read(ref _timer)?.Dispose();
            _registration.Unregister();
        }
    }
}

/// <summary>A signing slot, or the reason none was granted. Dispose gives a granted slot back (once; later calls do nothing).</summary>
public sealed class SigningSlot : IDisposable
{
    readonly SigningGate? _gate;
    readonly SigningGate.TenantState? _state;
    int _released;

    internal SigningSlot(SigningGate gate, SigningGate.TenantState state)
    {
        _gate = gate;
        _state = state;
    }

    internal SigningSlot(SigningRefusal refusal) => Refusal = refusal;

    public bool Granted => _gate is not null;

    public SigningRefusal Refusal { get; }

    public void Dispose()
    {
        if (_gate is not null && Interlocked.Exchange(ref _released, 1) == 0)
        {
            _gate.Release(_state!);
        }
    }
}
