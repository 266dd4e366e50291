using System.Diagnostics.Metrics;
using System.Text.Json;
using System.Text.Json.Serialization;
using SmtpGateway.Configuration;
using SmtpGateway.Diagnostics;
using SmtpGateway.Identity;

namespace SmtpGateway.Bounces;

public enum ReputationOutcome
{
    Delivered,
    Deferred,
    Bounced,
    Complained,
}

/// <summary>Why a tenant's outbound queue is held: DataDirectory/reputation/&lt;tenant&gt;.paused.</summary>
public sealed record TenantPause(string Tenant, DateTimeOffset At, double Rate, long Bounced, long Complained, long Delivered, double Threshold);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(TenantPause))]
internal sealed partial class ReputationJsonContext : JsonSerializerContext;

/// <summary>
/// Per-tenant outcome counters (metrics, and a sliding window of one-sixtieth buckets for the bounce rate) and the pause
/// switch. A pause is a file, so it survives a restart and the CLI can lift it (`smtpgw queue resume`) on a running gateway;
/// the gateway looks for the file at most once a second per tenant.
/// </summary>
public sealed class ReputationTracker
{
    const int Buckets = 60;

    /// <summary>How often a tenant's pause file is looked at (a resume by the CLI is noticed within this).</summary>
    static readonly TimeSpan PauseCheckInterval = TimeSpan.FromSeconds(1);

    static readonly Counter<long> Outcomes = Telemetry.Meter.CreateCounter<long>(
        Telemetry.TenantOutcomes, "{recipient}", "Per-tenant reputation outcomes; outcome=delivered|deferred|bounced|complained.");

    static readonly UpDownCounter<long> Paused = Telemetry.Meter.CreateUpDownCounter<long>(
        Telemetry.TenantPaused, "{tenant}", "Tenants whose outbound queue is held for their bounce rate.");

    readonly string _directory;
    readonly Func<string, ReputationConfig> _config;
    readonly TimeProvider _time;
    readonly Action<TenantPause>? _paused;
    readonly Lock _lock = new();
    readonly Dictionary<string, TenantWindow> _tenants = new(StringComparer.Ordinal);

    /// <param name="dataDirectory">Gateway data directory.</param>
    /// <param name="config">The tenant's reputation settings (current snapshot).</param>
    /// <param name="time">Clock.</param>
    /// <param name="paused">Called once when a tenant becomes paused (alert event, log).</param>
    public ReputationTracker(string dataDirectory, Func<string, ReputationConfig> config, TimeProvider time, Action<TenantPause>? paused = null)
    {
        _directory = Path.Combine(dataDirectory, "reputation");
        _config = config;
        _time = time;
        _paused = paused;
    }

    /// <summary>Reads each tenant's reputation settings from the current tenant snapshot; a tenant not in it gets the defaults.</summary>
    /// <param name="dataDirectory">Gateway data directory.</param>
    /// <param name="tenants">The current tenant snapshot.</param>
    /// <param name="time">Clock.</param>
    /// <param name="paused">Called once when a tenant becomes paused (alert event, log).</param>
    public ReputationTracker(string dataDirectory, Func<TenantSnapshot> tenants, TimeProvider time, Action<TenantPause>? paused = null)
        : this(dataDirectory, tenant => tenants().Find(tenant)?.Reputation ?? DefaultConfig, time, paused)
    {
    }

    static ReputationConfig DefaultConfig { get; } = new();

    /// <summary>The metric label of each outcome, made once rather than two strings per recipient.</summary>
    static readonly string[] OutcomeLabels = Enum.GetNames<ReputationOutcome>().Select(n => n.ToLowerInvariant()).ToArray();

    public static string PausePath(string dataDirectory, string tenant) => Path.Combine(dataDirectory, "reputation", tenant + ".paused");

    /// <summary>Counts one outcome; returns the pause when this outcome tipped the tenant over its threshold.</summary>
    public TenantPause? Record(string tenant, ReputationOutcome outcome)
    {
        Outcomes.Add(1, new KeyValuePair<string, object?>("outcome", OutcomeLabels[(int)outcome]), new KeyValuePair<string, object?>("tenant", tenant));
        if (outcome == ReputationOutcome.Deferred)
        {
            return null;
        }

        var config = _config(tenant);
        TenantPause? pause = null;
        lock (_lock)
        {
            var window = Window(tenant);

            // Before counting: noticing a resume clears the window, which must not take this outcome with it.
            var paused = IsPausedLocked(tenant, window);
            var now = _time.GetUtcNow();
            var bucket = window.Bucket(now, config.Window);
            switch (outcome)
            {
                case ReputationOutcome.Delivered: bucket.Delivered++; break;
                case ReputationOutcome.Bounced: bucket.Bounced++; break;
                case ReputationOutcome.Complained: bucket.Complained++; break;
            }

            if (config.MaxBounceRate <= 0 || outcome == ReputationOutcome.Delivered || paused)
            {
                return null;
            }

            var (delivered, bounced, complained) = window.Totals(now, config.Window);
            var volume = delivered + bounced;
            if (volume < config.MinimumVolume)
            {
                return null;
            }

            var rate = (double)(bounced + complained) / volume;
            if (rate <= config.MaxBounceRate)
            {
                return null;
            }

            pause = new TenantPause(tenant, now, Math.Round(rate, 4), bounced, complained, delivered, config.MaxBounceRate);
            Directory.CreateDirectory(_directory);
            var path = PausePath(Path.GetDirectoryName(_directory)!, tenant);
            File.WriteAllBytes(path, JsonSerializer.SerializeToUtf8Bytes(pause, ReputationJsonContext.Default.TenantPause));
            window.Paused = true;
            window.PauseCheckedAt = _time.GetTimestamp();
            Paused.Add(1, new KeyValuePair<string, object?>("tenant", tenant));
        }

        _paused?.Invoke(pause);
        return pause;
    }

    /// <summary>True while the tenant's outbound queue is held.</summary>
    public bool IsPaused(string tenant)
    {
        lock (_lock)
        {
            return IsPausedLocked(tenant, Window(tenant));
        }
    }

    /// <summary>Delivered, bounced and complained in the tenant's current window: what the pause threshold is judged on (dashboard).</summary>
    public (long Delivered, long Bounced, long Complained) WindowTotals(string tenant)
    {
        var window = _config(tenant).Window;
        lock (_lock)
        {
            return _tenants.TryGetValue(tenant, out var counts) ? counts.Totals(_time.GetUtcNow(), window) : default;
        }
    }

    /// <summary>The recorded pause of <paramref name="tenant"/>, if any (CLI and admin).</summary>
    public static TenantPause? ReadPause(string dataDirectory, string tenant)
    {
        var path = PausePath(dataDirectory, tenant);
        try
        {
            return File.Exists(path) ? JsonSerializer.Deserialize(File.ReadAllBytes(path), ReputationJsonContext.Default.TenantPause) : null;
        }
        catch (JsonException)
        {
            return new TenantPause(tenant, File.GetLastWriteTimeUtc(path), double.NaN, 0, 0, 0, double.NaN);
        }
    }

    /// <summary>Lifts a pause (CLI); the gateway notices within a second and starts a fresh window.</summary>
    public static bool Resume(string dataDirectory, string tenant)
    {
        var path = PausePath(dataDirectory, tenant);
        if (!File.Exists(path))
        {
            return false;
        }

        File.Delete(path);
        return true;
    }

    bool IsPausedLocked(string tenant, TenantWindow window)
    {
        var now = _time.GetTimestamp();
        if (window.PauseCheckedAt is { } checkedAt && _time.GetElapsedTime(checkedAt, now) < PauseCheckInterval)
        {
            return window.Paused;
        }

        window.PauseCheckedAt = now;
        var paused = File.Exists(PausePath(Path.GetDirectoryName(_directory)!, tenant));
        if (window.Paused && !paused)
        {
            // Resumed by the operator: judge the tenant on what it sends from now on.
            window.Clear();
            Paused.Add(-1, new KeyValuePair<string, object?>("tenant", tenant));
        }
        else if (!window.Paused && paused)
        {
            Paused.Add(1, new KeyValuePair<string, object?>("tenant", tenant));
        }

        window.Paused = paused;
        return paused;
    }

    TenantWindow Window(string tenant)
    {
        if (!_tenants.TryGetValue(tenant, out var window))
        {
            _tenants[tenant] = window = new TenantWindow();
        }

        return window;
    }

    sealed class Counts
    {
        public long Start;
        public long Delivered;
        public long Bounced;
        public long Complained;
    }

    sealed class TenantWindow
    {
        readonly Queue<Counts> _buckets = new();

        public bool Paused { get; set; }

        /// <summary>TimeProvider timestamp of the last look at the pause file; null before the first.</summary>
        public long? PauseCheckedAt { get; set; }

        public Counts Bucket(DateTimeOffset now, TimeSpan window)
        {
            var width = Math.Max(1, window.Ticks / Buckets);
            var start = now.UtcTicks / width * width;
            Prune(now, window);
            if (_buckets.Count > 0 && _buckets.Last().Start == start)
            {
                return _buckets.Last();
            }

            var bucket = new Counts { Start = start };
            _buckets.Enqueue(bucket);
            return bucket;
        }

        public (long Delivered, long Bounced, long Complained) Totals(DateTimeOffset now, TimeSpan window)
        {
            Prune(now, window);
            long d = 0, b = 0, c = 0;
            foreach (var bucket in _buckets)
            {
                d += bucket.Delivered;
                b += bucket.Bounced;
                c += bucket.Complained;
            }

            return (d, b, c);
        }

        public void Clear() => _buckets.Clear();

        void Prune(DateTimeOffset now, TimeSpan window)
        {
            var oldest = now.UtcTicks - window.Ticks;
            while (_buckets.Count > 0 && _buckets.Peek().Start < oldest)
            {
                _buckets.Dequeue();
            }
        }
    }
}
