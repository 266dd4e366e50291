using SmtpGateway.Identity;

namespace SmtpGateway.Admin.Dashboard;

/// <summary>What the dashboard counts per tenant and minute.</summary>
public enum ActivityCounter
{
    /// <summary>Messages answered 250 (queued).</summary>
    Accepted,

    /// <summary>Recipients delivered.</summary>
    Delivered,

    /// <summary>Recipients deferred (a retry follows).</summary>
    Deferred,

    /// <summary>Recipients bounced or expired (no retry follows).</summary>
    Bounced,
}

/// <summary>One tenant's last hour, oldest minute first: <see cref="TenantActivity.Minutes"/> values per counter.</summary>
public sealed record ActivitySeries(string Tenant, long[] Accepted, long[] Delivered, long[] Deferred, long[] Bounced);

/// <summary>
/// Per-tenant counts for the dashboard: 60 one-minute buckets of accepted, delivered, deferred and bounced, in memory only
/// (a restart starts an empty hour; Prometheus keeps the long history). Bounded: only tenants in the current tenant snapshot
/// get their own series; anything else (a tenant removed by a reload, the default tenant, a label from an older build) is
/// added to the one <see cref="Unknown"/> series, so memory cannot grow with what the counters are fed.
/// </summary>
public sealed class TenantActivity
{
    public const int Minutes = 60;

    /// <summary>Not a valid tenant id (those are a-z, 0-9, '-' and '_'), so it can never collide with a tenant.</summary>
    public const string Unknown = "(unknown)";

    static readonly long TicksPerMinute = TimeSpan.FromMinutes(1).Ticks;
    static readonly int Counters = Enum.GetValues<ActivityCounter>().Length;

    readonly TimeProvider _time;
    readonly Func<TenantSnapshot> _tenants;
    readonly Lock _lock = new();
    readonly Dictionary<string, Ring> _series = new(StringComparer.Ordinal);

    public TenantActivity(TimeProvider time, Func<TenantSnapshot> tenants)
    {
        _time = time;
        _tenants = tenants;
    }

    /// <summary>Adds <paramref name="amount"/> to the current minute of <paramref name="tenant"/> (null or not configured: <see cref="Unknown"/>).</summary>
    public void Add(string? tenant, ActivityCounter counter, long amount = 1)
    {
        var key = tenant is not null && _tenants().Find(tenant) is not null ? tenant : Unknown;
        var minute = CurrentMinute();
        lock (_lock)
        {
            if (!_series.TryGetValue(key, out var ring))
            {
                _series[key] = ring = new Ring();
            }

            ring.Add(minute, (int)counter, amount);
        }
    }

    /// <summary>
    /// Every configured tenant (zeros when it had no traffic), then <see cref="Unknown"/> when it counted anything in the
    /// hour. Series of tenants no longer configured are dropped here.
    /// </summary>
    public IReadOnlyList<ActivitySeries> Snapshot()
    {
        var snapshot = _tenants();
        var minute = CurrentMinute();
        var result = new List<ActivitySeries>(snapshot.Tenants.Count + 1);
        lock (_lock)
        {
            foreach (var gone in _series.Keys.Where(k => k != Unknown && snapshot.Find(k) is null).ToList())
            {
                _series.Remove(gone);
            }

            foreach (var tenant in snapshot.Tenants.Keys.Order(StringComparer.Ordinal))
            {
                result.Add(_series.TryGetValue(tenant, out var ring) ? ring.Read(tenant, minute) : Empty(tenant));
            }

            if (_series.TryGetValue(Unknown, out var unknown))
            {
                var series = unknown.Read(Unknown, minute);
                if (series.Accepted.Any(v => v > 0) || series.Delivered.Any(v => v > 0) || series.Deferred.Any(v => v > 0) || series.Bounced.Any(v => v > 0))
                {
                    result.Add(series);
                }
            }
        }

        return result;
    }

    /// <summary>Start of the oldest minute in a <see cref="Snapshot"/> taken now.</summary>
    public DateTimeOffset WindowStart() => new((CurrentMinute() - Minutes + 1) * TicksPerMinute, TimeSpan.Zero);

    long CurrentMinute() => _time.GetUtcNow().UtcTicks / TicksPerMinute;

    static ActivitySeries Empty(string tenant) => new(tenant, new long[Minutes], new long[Minutes], new long[Minutes], new long[Minutes]);

    /// <summary>60 buckets indexed by minute modulo 60; a bucket whose stamp is not the minute asked for is stale and reads as zero.</summary>
    sealed class Ring
    {
        readonly long[] _stamps = new long[Minutes];
        readonly long[] _counts = new long[Minutes * Counters];

        public Ring() => Array.Fill(_stamps, -1);

        public void Add(long minute, int counter, long amount)
        {
            var slot = (int)(minute % Minutes);
            if (_stamps[slot] != minute)
            {
                // Roll-over: the slot last held a minute at least an hour old.
                _stamps[slot] = minute;
                Array.Clear(_counts, slot * Counters, Counters);
            }

            _counts[(slot * Counters) + counter] += amount;
        }

        public ActivitySeries Read(string tenant, long now)
        {
            var series = Empty(tenant);
            for (var i = 0; i < Minutes; i++)
            {
                var minute = now - Minutes + 1 + i;
                var slot = (int)(minute % Minutes);
                if (_stamps[slot] != minute)
                {
                    continue;
                }

                var at = slot * Counters;
                series.Accepted[i] = _counts[at + (int)ActivityCounter.Accepted];
                series.Delivered[i] = _counts[at + (int)ActivityCounter.Delivered];
                series.Deferred[i] = _counts[at + (int)ActivityCounter.Deferred];
                series.Bounced[i] = _counts[at + (int)ActivityCounter.Bounced];
            }

            return series;
        }
    }
}
