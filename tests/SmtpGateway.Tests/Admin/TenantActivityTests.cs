using System.Diagnostics.Metrics;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Admin.Dashboard;
using SmtpGateway.Audit;
using SmtpGateway.Bounces;
using SmtpGateway.Configuration;
using SmtpGateway.Diagnostics;
using SmtpGateway.Identity;
using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Admin;

public sealed class TenantActivityTests
{
    // Mid-minute, so that a few seconds either way stay in the same bucket.
    readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 4, 22, 0, 30, TimeSpan.Zero));
    TenantSnapshot _tenants = Tenants("tenant-a", "tenant-b");

    static TenantSnapshot Tenants(params string[] ids)
    {
        var errors = new List<string>();
        var snapshot = TenantSnapshot.Build(
            ids.ToDictionary(id => id, id => new TenantConfig { Domains = [id + ".example"], BounceDomain = "bounces." + id + ".example" }),
            errors);
        Assert.Empty(errors);
        return snapshot;
    }

    TenantActivity NewActivity() => new(_time, () => _tenants);

    static ActivitySeries Of(IReadOnlyList<ActivitySeries> snapshot, string tenant) => Assert.Single(snapshot, s => s.Tenant == tenant);

    [Fact]
    public void Counts_land_in_the_current_minute_which_is_the_last_of_sixty()
    {
        var activity = NewActivity();
        activity.Add("tenant-a", ActivityCounter.Accepted);
        activity.Add("tenant-a", ActivityCounter.Accepted);
        activity.Add("tenant-a", ActivityCounter.Delivered, 3);
        activity.Add("tenant-b", ActivityCounter.Bounced);

        var snapshot = activity.Snapshot();
        var a = Of(snapshot, "tenant-a");
        Assert.Equal(TenantActivity.Minutes, a.Accepted.Length);
        Assert.Equal(2, a.Accepted[^1]);
        Assert.Equal(3, a.Delivered[^1]);
        Assert.Equal(0, a.Deferred.Sum());
        Assert.Equal(2, a.Accepted.Sum());
        Assert.Equal(1, Of(snapshot, "tenant-b").Bounced[^1]);
        Assert.Equal(new DateTimeOffset(2026, 12, 4, 21, 1, 0, TimeSpan.Zero), activity.WindowStart());
    }

    [Fact]
    public void A_minute_moves_one_bucket_left_and_an_hour_later_it_is_gone()
    {
        var activity = NewActivity();
        activity.Add("tenant-a", ActivityCounter.Deferred, 5);

        _time.Advance(TimeSpan.FromMinutes(1));
        activity.Add("tenant-a", ActivityCounter.Deferred);
        var a = Of(activity.Snapshot(), "tenant-a");
        Assert.Equal(5, a.Deferred[^2]);
        Assert.Equal(1, a.Deferred[^1]);

        // 59 minutes after the first count it is still the oldest bucket; at 60 it has left the hour.
        _time.Advance(TimeSpan.FromMinutes(58));
        a = Of(activity.Snapshot(), "tenant-a");
        Assert.Equal(5, a.Deferred[0]);
        Assert.Equal(6, a.Deferred.Sum());

        _time.Advance(TimeSpan.FromMinutes(1));
        a = Of(activity.Snapshot(), "tenant-a");
        Assert.Equal(1, a.Deferred.Sum());
        Assert.Equal(1, a.Deferred[0]);
    }

    [Fact]
    public void A_bucket_reused_after_an_hour_starts_from_zero()
    {
        var activity = NewActivity();
        activity.Add("tenant-a", ActivityCounter.Accepted, 7);

        // Same slot (minute modulo 60), one hour on: the old count must not add to the new one.
        _time.Advance(TimeSpan.FromHours(1));
        activity.Add("tenant-a", ActivityCounter.Accepted);
        var a = Of(activity.Snapshot(), "tenant-a");
        Assert.Equal(1, a.Accepted[^1]);
        Assert.Equal(1, a.Accepted.Sum());

        // Hours of silence: everything reads zero, nothing is replayed.
        _time.Advance(TimeSpan.FromHours(5));
        Assert.Equal(0, Of(activity.Snapshot(), "tenant-a").Accepted.Sum());
    }

    [Fact]
    public void Every_configured_tenant_is_listed_even_without_traffic()
    {
        var snapshot = NewActivity().Snapshot();
        Assert.Equal(["tenant-a", "tenant-b"], snapshot.Select(s => s.Tenant));
        Assert.All(snapshot, s => Assert.Equal(0, s.Accepted.Sum() + s.Delivered.Sum() + s.Deferred.Sum() + s.Bounced.Sum()));
    }

    [Fact]
    public void Tenants_outside_the_snapshot_share_one_bounded_unknown_series()
    {
        var activity = NewActivity();
        for (var i = 0; i < 10_000; i++)
        {
            activity.Add("ghost-" + i, ActivityCounter.Accepted);
        }

        activity.Add(null, ActivityCounter.Delivered);

        var snapshot = activity.Snapshot();
        Assert.Equal(["tenant-a", "tenant-b", TenantActivity.Unknown], snapshot.Select(s => s.Tenant));
        var unknown = Of(snapshot, TenantActivity.Unknown);
        Assert.Equal(10_000, unknown.Accepted.Sum());
        Assert.Equal(1, unknown.Delivered.Sum());
    }

    [Fact]
    public void A_tenant_removed_by_a_reload_leaves_the_dashboard()
    {
        var activity = NewActivity();
        activity.Add("tenant-b", ActivityCounter.Accepted);
        _tenants = Tenants("tenant-a");

        Assert.Equal(["tenant-a"], activity.Snapshot().Select(s => s.Tenant));

        // Its later counts go to the unknown series, not back to a series of its own.
        activity.Add("tenant-b", ActivityCounter.Accepted);
        Assert.Equal(["tenant-a", TenantActivity.Unknown], activity.Snapshot().Select(s => s.Tenant));
    }

    [Fact]
    public void The_meter_feed_counts_accepted_and_delivery_outcomes_by_tenant_label()
    {
        // Tenant ids of this test only: other tests record on the same process-wide meter at the same time.
        _tenants = Tenants("feed-a", "feed-b");
        var activity = NewActivity();
        using var feed = new ActivityMeterFeed(activity);
        feed.Start();
        using var meter = new Meter(Telemetry.MeterName);
        var accepted = meter.CreateCounter<long>(Telemetry.MessagesAccepted);
        var outcomes = meter.CreateCounter<long>(Telemetry.DeliveryOutcomes);
        var other = meter.CreateCounter<long>(Telemetry.DkimSignatures);

        accepted.Add(1, new("listener", "submission"), new("tenant", "feed-a"));
        accepted.Add(1, new("listener", "submission"), new("tenant", "feed-a"));
        outcomes.Add(1, new("outcome", "delivered"), new("tenant", "feed-a"));
        outcomes.Add(1, new("outcome", "deferred"), new("tenant", "feed-b"));
        outcomes.Add(1, new("outcome", "bounced"), new("tenant", "feed-b"));
        outcomes.Add(1, new("outcome", "expired"), new("tenant", "feed-b"));
        other.Add(1, new KeyValuePair<string, object?>("tenant", "feed-a"));

        var snapshot = activity.Snapshot();
        var a = Of(snapshot, "feed-a");
        var b = Of(snapshot, "feed-b");
        Assert.Equal((2, 1, 0, 0), (a.Accepted.Sum(), a.Delivered.Sum(), a.Deferred.Sum(), a.Bounced.Sum()));
        Assert.Equal((0, 0, 1, 2), (b.Accepted.Sum(), b.Delivered.Sum(), b.Deferred.Sum(), b.Bounced.Sum()));
    }

    [Fact]
    public void Cross_tenant_refusals_keep_the_newest_in_a_fixed_ring_and_pass_every_event_on()
    {
        var refusals = new CrossTenantRefusals();
        var inner = new RecordingAuditLog();
        var tap = new CrossTenantAuditTap(inner, refusals, _time);
        for (var i = 0; i < CrossTenantRefusals.Capacity + 5; i++)
        {
            tap.Write(new AuditEvent { Action = AuditActions.SendAs, Result = "refused", Reason = "r" + i, Tenant = "tenant-a", Subject = "x@tenant-b.example", CrossTenant = true });
        }

        tap.Write(new AuditEvent { Action = AuditActions.Auth, Result = "ok", Tenant = "tenant-a" });

        Assert.Equal(CrossTenantRefusals.Capacity + 6, inner.Events.Count);
        var recent = refusals.Recent();
        Assert.Equal(CrossTenantRefusals.Capacity, recent.Count);
        Assert.Equal("r" + (CrossTenantRefusals.Capacity + 4), recent[0].Reason);
        Assert.Equal("r5", recent[^1].Reason);
        Assert.Equal(_time.GetUtcNow(), recent[0].Time);
        Assert.Equal(_time.GetUtcNow(), inner.Events[0].Time);
    }

    [Fact]
    public void The_view_reports_rates_against_the_pause_threshold_and_the_queue_per_tenant()
    {
        using var dir = new TempDirectory();
        var reputation = new ReputationTracker(dir.Path, t => _tenants.Find(t)?.Reputation ?? new ReputationConfig(), _time);
        for (var i = 0; i < 8; i++)
        {
            reputation.Record("tenant-a", ReputationOutcome.Delivered);
        }

        reputation.Record("tenant-a", ReputationOutcome.Bounced);
        reputation.Record("tenant-a", ReputationOutcome.Bounced);
        reputation.Record("tenant-a", ReputationOutcome.Complained);
        var view = new DashboardView(_time, () => _tenants, NewActivity(), new CrossTenantRefusals(), reputation,
            () => new Dictionary<string, int> { ["tenant-b"] = 4 });

        var built = view.Build();
        var a = Assert.Single(built.Tenants, t => t.Tenant == "tenant-a");
        Assert.NotNull(a.Reputation);
        Assert.Equal(0.2, a.Reputation.BounceRate);
        Assert.Equal(0.1, a.Reputation.ComplaintRate);
        Assert.Equal(0.3, a.Reputation.Rate);
        Assert.Equal(0.10, a.Reputation.Threshold);
        Assert.False(a.Paused); // below the minimum volume (100): no verdict yet
        var b = Assert.Single(built.Tenants, t => t.Tenant == "tenant-b");
        Assert.Equal(4, b.QueueDepth);
        Assert.Null(b.Reputation!.Rate);
    }

    sealed class RecordingAuditLog : IAuditLog
    {
        public List<AuditEvent> Events { get; } = [];

        public void Write(AuditEvent auditEvent) => Events.Add(auditEvent);
    }
}
