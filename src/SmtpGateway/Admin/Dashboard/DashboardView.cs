using System.Text.Json.Serialization;
using SmtpGateway.Bounces;
using SmtpGateway.Identity;

namespace SmtpGateway.Admin.Dashboard;

/// <summary>GET /api/v1/dashboard: everything the page draws, in one answer.</summary>
public sealed record DashboardSnapshot(
    DateTimeOffset GeneratedAt,
    DateTimeOffset WindowStart,
    int BucketSeconds,
    IReadOnlyList<TenantDashboard> Tenants,
    IReadOnlyList<CrossTenantRefusal> CrossTenantRefusals);

/// <summary>One tenant (or <see cref="TenantActivity.Unknown"/>): its last hour per minute, queue and reputation.</summary>
public sealed record TenantDashboard(
    string Tenant,
    bool Configured,
    ActivityTotals Totals,
    ActivitySeries Series,
    int QueueDepth,
    bool Paused,
    ReputationView? Reputation);

public sealed record ActivityTotals(long Accepted, long Delivered, long Deferred, long Bounced);

/// <summary>
/// The numbers the pause is judged on: (bounced + complained) / (delivered + bounced) over <see cref="WindowSeconds"/>,
/// against <see cref="Threshold"/> (0: pausing is off), once the volume reaches <see cref="MinimumVolume"/>. Rates are null
/// while nothing was delivered or bounced.
/// </summary>
public sealed record ReputationView(
    long Delivered,
    long Bounced,
    long Complained,
    double? BounceRate,
    double? ComplaintRate,
    double? Rate,
    double Threshold,
    int MinimumVolume,
    double WindowSeconds);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(DashboardSnapshot))]
internal sealed partial class DashboardJsonContext : JsonSerializerContext;

/// <summary>Puts the dashboard's answer together from the stores that already exist; nothing here writes.</summary>
public sealed class DashboardView(
    TimeProvider time,
    Func<TenantSnapshot> tenants,
    TenantActivity activity,
    CrossTenantRefusals refusals,
    ReputationTracker reputation,
    Func<IReadOnlyDictionary<string, int>> queueDepths)
{
    public DashboardSnapshot Build()
    {
        var snapshot = tenants();
        var depths = queueDepths();
        var rows = new List<TenantDashboard>();
        foreach (var series in activity.Snapshot())
        {
            var model = series.Tenant == TenantActivity.Unknown ? null : snapshot.Find(series.Tenant);
            var totals = new ActivityTotals(series.Accepted.Sum(), series.Delivered.Sum(), series.Deferred.Sum(), series.Bounced.Sum());
            var depth = model is null ? 0 : depths.GetValueOrDefault(series.Tenant);
            rows.Add(model is null
                ? new TenantDashboard(series.Tenant, false, totals, series, depth, false, null)
                : new TenantDashboard(series.Tenant, true, totals, series, depth, reputation.IsPaused(series.Tenant), Reputation(series.Tenant, model)));
        }

        return new DashboardSnapshot(time.GetUtcNow(), activity.WindowStart(), 60, rows, refusals.Recent());
    }

    ReputationView Reputation(string tenant, TenantModel model)
    {
        var (delivered, bounced, complained) = reputation.WindowTotals(tenant);
        var volume = delivered + bounced;
        double? Ratio(long n) => volume == 0 ? null : Math.Round((double)n / volume, 4);
        var config = model.Reputation;
        return new ReputationView(delivered, bounced, complained, Ratio(bounced), Ratio(complained), Ratio(bounced + complained),
            config.MaxBounceRate, config.MinimumVolume, config.Window.TotalSeconds);
    }
}
