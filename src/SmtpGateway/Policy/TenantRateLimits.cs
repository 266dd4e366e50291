using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;
using SmtpGateway.Identity;

namespace SmtpGateway.Policy;

/// <summary>Which per-tenant limit refused: the closed label set of <c>smtpgw.limits.refused</c>.</summary>
public enum TenantLimit
{
    Messages,
    Recipients,
    Sessions,
    Size,
}

/// <summary>
/// Per-tenant volume state (issue 12): messages and recipients per minute (sliding one-minute windows, System.Threading.RateLimiting
/// limiters on the <see cref="TimeProvider"/> clock: <see cref="SlidingWindowLimiter"/>) and concurrent sessions. One instance per
/// process, keyed by tenant id; it outlives config reloads, and each call passes the tenant's current
/// <see cref="TenantLimits"/>, so a changed limit applies at the next call, to the counts already made. Tenants are
/// config-bounded, so the map is too.
/// </summary>
public sealed partial class TenantRateLimits(TimeProvider time, ILogger logger)
{
    /// <summary>The window every "per minute" limit counts over.</summary>
    public static readonly TimeSpan Window = TimeSpan.FromMinutes(1);

    /// <summary>Six segments: a permit returns between 50 and 60 seconds after it was taken, never all at once on a minute boundary.</summary>
    const int Segments = 6;

    /// <summary>At most one warning per tenant and limit in this interval; the next one says how many were left out.</summary>
    static readonly TimeSpan LogInterval = TimeSpan.FromMinutes(1);

    static readonly Counter<long> RefusedCounter = Telemetry.Meter.CreateCounter<long>(
        Telemetry.LimitsRefused, description: "Commands refused because a tenant reached one of its limits (Tenants:<id>:Limits), by tenant and limit");

    readonly ConcurrentDictionary<string, TenantState> _tenants = new(StringComparer.Ordinal);
    readonly ConcurrentDictionary<(string Tenant, TenantLimit Limit), LogWindow> _gates = new();

    /// <summary>Takes one message permit (MAIL FROM); false, counted and logged, when the tenant is at MessagesPerMinute.</summary>
    public bool TryAcquireMessage(string tenant, TenantLimits limits) => Acquire(tenant, limits, TenantLimit.Messages);

    /// <summary>Takes one recipient permit (RCPT TO); false, counted and logged, when the tenant is at RecipientsPerMinute.</summary>
    public bool TryAcquireRecipient(string tenant, TenantLimits limits) => Acquire(tenant, limits, TenantLimit.Recipients);

    /// <summary>
    /// A session slot for the tenant, or null (counted and logged) when it already has MaxSessions. The caller disposes the
    /// slot when the session ends, however it ends; disposing twice releases once.
    /// </summary>
    /// <remarks>A plain counter, not a ConcurrencyLimiter: a reload that lowers MaxSessions must count the sessions already open.</remarks>
    public IDisposable? TryOpenSession(string tenant, TenantLimits limits)
    {
        var state = State(tenant);
        lock (state)
        {
            if (state.Sessions < limits.MaxSessions)
            {
                state.Sessions++;
                return new SessionSlot(state);
            }
        }

        Refused(tenant, TenantLimit.Sessions);
        return null;
    }

    /// <summary>Sessions open for the tenant now (tests, and the slot-leak check).</summary>
    public int OpenSessions(string tenant)
    {
        if (!_tenants.TryGetValue(tenant, out var state))
        {
            return 0;
        }

        lock (state)
        {
            return state.Sessions;
        }
    }

    /// <summary>A refusal the caller decided (message size): the metric, and a warning at most once a minute per tenant and limit.</summary>
    public void Refused(string tenant, TenantLimit limit)
    {
        RefusedCounter.Add(1, new KeyValuePair<string, object?>("tenant", tenant), new KeyValuePair<string, object?>("limit", Label(limit)));
        if (!_gates.GetOrAdd((tenant, limit), static _ => new LogWindow(LogInterval)).ShouldWrite(time, out var suppressed))
        {
            return;
        }

        LimitsLog.LimitReached(logger, tenant, Label(limit), suppressed);
    }

    public static string Label(TenantLimit limit) => limit switch
    {
        TenantLimit.Messages => "messages",
        TenantLimit.Recipients => "recipients",
        TenantLimit.Sessions => "sessions",
        _ => "size",
    };

    bool Acquire(string tenant, TenantLimits limits, TenantLimit limit)
    {
        var state = State(tenant);
        var (limiter, permits) = limit == TenantLimit.Messages
            ? (state.Messages, limits.MessagesPerMinute)
            : (state.Recipients, limits.RecipientsPerMinute);

        // The limit as configured now (a reload may have changed it); the permits already in the window still count.
        limiter.PermitLimit = permits;
        using var lease = limiter.AttemptAcquire(1);
        if (!lease.IsAcquired)
        {
            Refused(tenant, limit);
        }

        return lease.IsAcquired;
    }

    TenantState State(string tenant) => _tenants.GetOrAdd(tenant, static (_, time) => new TenantState(
        new SlidingWindowLimiter(time, int.MaxValue, Window, Segments),
        new SlidingWindowLimiter(time, int.MaxValue, Window, Segments)), time);

    sealed class TenantState(SlidingWindowLimiter messages, SlidingWindowLimiter recipients)
    {
        public SlidingWindowLimiter Messages { get; } = messages;

        public SlidingWindowLimiter Recipients { get; } = recipients;

        /// <summary>Guarded by a lock on the state.</summary>
        public int Sessions { get; set; }
    }

    sealed class SessionSlot(TenantState state) : IDisposable
    {
        int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                lock (state)
                {
                    state.Sessions--;
                }
            }
        }
    }

    static partial class LimitsLog
    {
        [LoggerMessage(EventId = EventIds.Policy + 20, Level = LogLevel.Warning,
            Message = "Tenant {Tenant} reached its {Limit} limit and was refused; {Suppressed} more refusal(s) since the previous warning (at most one a minute per tenant and limit)")]
        public static partial void LimitReached(ILogger logger, string tenant, string limit, int suppressed);
    }
}
