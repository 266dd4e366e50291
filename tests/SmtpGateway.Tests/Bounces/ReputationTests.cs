using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Bounces;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Bounces;

/// <summary>Issue #7 bounce-rate pause (ReputationTracker) and what an outcome does to a tenant (TenantOutcomes).</summary>
public sealed class ReputationTests : IDisposable
{
    static readonly DateTimeOffset Start = new(2030, 1, 1, 12, 0, 0, TimeSpan.Zero);

    readonly TempDirectory _dir = new();
    readonly FakeTimeProvider _time = new(Start);
    readonly List<TenantPause> _alerts = [];
    readonly List<IDisposable> _lists = [];

    public void Dispose()
    {
        foreach (var list in _lists)
        {
            list.Dispose();
        }

        _dir.Dispose();
    }

    static ReputationConfig Strict(double rate = 0.5, int volume = 10) => new() { MaxBounceRate = rate, MinimumVolume = volume, Window = TimeSpan.FromHours(1) };

    ReputationTracker New(Func<string, ReputationConfig>? config = null) =>
        new(_dir.Path, config ?? (_ => Strict()), _time, p =>
        {
            lock (_alerts)
            {
                _alerts.Add(p);
            }
        });

    string PauseFile(string tenant) => ReputationTracker.PausePath(_dir.Path, tenant);

    static List<TenantPause?> Record(ReputationTracker tracker, string tenant, ReputationOutcome outcome, int count) =>
        [.. Enumerable.Range(0, count).Select(_ => tracker.Record(tenant, outcome))];


    [Fact]
    public void Below_the_minimum_volume_a_tenant_is_never_paused()
    {
        var tracker = New();

        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Bounced, 9), Assert.Null);
        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Complained, 50), Assert.Null); // complaints add to the rate, not the volume

        Assert.False(tracker.IsPaused("tenant-a"));
        Assert.False(File.Exists(PauseFile("tenant-a")));
        Assert.Empty(_alerts);
    }

    [Fact]
    public void Over_the_threshold_the_tenant_is_paused_exactly_once_with_a_pause_file_and_one_alert()
    {
        var tracker = New();
        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Delivered, 5), Assert.Null);
        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Bounced, 5), Assert.Null); // 5/10 is not over 0.5
        Assert.False(tracker.IsPaused("tenant-a"));

        var pause = tracker.Record("tenant-a", ReputationOutcome.Bounced); // 6/11

        Assert.NotNull(pause);
        Assert.Equal(new TenantPause("tenant-a", Start, Math.Round(6.0 / 11, 4), 6, 0, 5, 0.5), pause);
        Assert.True(tracker.IsPaused("tenant-a"));
        Assert.Equal(pause, ReputationTracker.ReadPause(_dir.Path, "tenant-a"));
        Assert.Equal(pause, Assert.Single(_alerts));

        // Still paused, still one alert, whatever follows.
        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Bounced, 20), Assert.Null);
        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Complained, 5), Assert.Null);
        Assert.Single(_alerts);
        Assert.True(tracker.IsPaused("tenant-a"));
    }

    [Fact]
    public void A_pause_survives_a_restart()
    {
        var first = New();
        Assert.NotNull(Record(first, "tenant-a", ReputationOutcome.Bounced, 10)[^1]);

        var restarted = New();

        Assert.True(restarted.IsPaused("tenant-a"));
        Assert.Null(restarted.Record("tenant-a", ReputationOutcome.Bounced)); // already paused: no second alert
        Assert.Single(_alerts);
    }

    [Fact]
    public void Complaints_count_in_the_rate()
    {
        var tracker = New();
        Record(tracker, "tenant-a", ReputationOutcome.Delivered, 10);
        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Complained, 5), Assert.Null); // 5/10

        var pause = tracker.Record("tenant-a", ReputationOutcome.Complained); // 6/10

        Assert.NotNull(pause);
        Assert.Equal((0L, 6L, 10L), (pause.Bounced, pause.Complained, pause.Delivered));
    }

    [Fact]
    public void Deferred_outcomes_do_not_count()
    {
        var tracker = New();
        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Deferred, 1000), Assert.Null);
        Record(tracker, "tenant-a", ReputationOutcome.Delivered, 5);
        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Bounced, 5), Assert.Null); // 5/10: deferrals added nothing either way

        var pause = tracker.Record("tenant-a", ReputationOutcome.Bounced);

        Assert.NotNull(pause);
        Assert.Equal((6L, 0L, 5L), (pause.Bounced, pause.Complained, pause.Delivered));
    }

    [Fact]
    public void Outcomes_older_than_the_window_are_forgotten()
    {
        var tracker = New();
        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Bounced, 9), Assert.Null);

        _time.Advance(TimeSpan.FromMinutes(61));

        // With the old nine this would be 10 bounces out of 10; alone it is below the minimum volume.
        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Bounced, 9), Assert.Null);
        Assert.False(tracker.IsPaused("tenant-a"));

        _time.Advance(TimeSpan.FromMinutes(30));
        var pause = tracker.Record("tenant-a", ReputationOutcome.Bounced); // with the nine of 30 minutes ago: 10 of 10
        Assert.NotNull(pause);
        Assert.Equal(10, pause.Bounced);
    }

    [Fact]
    public void Resume_lifts_the_pause_within_about_a_second_and_starts_a_fresh_window()
    {
        var tracker = New();
        Assert.NotNull(Record(tracker, "tenant-a", ReputationOutcome.Bounced, 10)[^1]);
        Assert.True(tracker.IsPaused("tenant-a"));

        Assert.True(ReputationTracker.Resume(_dir.Path, "tenant-a")); // what `smtpgw queue resume` does
        Assert.False(ReputationTracker.Resume(_dir.Path, "tenant-a"));
        Assert.False(File.Exists(PauseFile("tenant-a")));
        Assert.Null(ReputationTracker.ReadPause(_dir.Path, "tenant-a"));

        // The pause file is looked at once a second: not noticed just before that, noticed at it.
        _time.Advance(TimeSpan.FromMilliseconds(999));
        Assert.True(tracker.IsPaused("tenant-a"));
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.False(tracker.IsPaused("tenant-a"));

        // A fresh window: the ten old bounces are gone, so nine new ones are below the minimum volume again.
        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Bounced, 9), Assert.Null);
        Assert.False(tracker.IsPaused("tenant-a"));
        var again = tracker.Record("tenant-a", ReputationOutcome.Bounced);
        Assert.NotNull(again);
        Assert.Equal(10, again.Bounced);
        Assert.Equal(2, _alerts.Count);
        Assert.True(File.Exists(PauseFile("tenant-a")));
    }

    [Fact]
    public void Max_bounce_rate_zero_disables_the_pause()
    {
        var tracker = New(_ => Strict(rate: 0, volume: 1));

        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Bounced, 500), Assert.Null);
        Assert.All(Record(tracker, "tenant-a", ReputationOutcome.Complained, 500), Assert.Null);

        Assert.False(tracker.IsPaused("tenant-a"));
        Assert.False(File.Exists(PauseFile("tenant-a")));
        Assert.Empty(_alerts);
    }

    [Fact]
    public void Tenants_are_independent()
    {
        var tracker = New(t => t == "tenant-b" ? Strict(rate: 0.9, volume: 10) : Strict());
        Record(tracker, "tenant-b", ReputationOutcome.Delivered, 5);
        Record(tracker, "tenant-b", ReputationOutcome.Bounced, 5);

        Assert.NotNull(Record(tracker, "tenant-a", ReputationOutcome.Bounced, 10)[^1]);

        Assert.True(tracker.IsPaused("tenant-a"));
        Assert.False(tracker.IsPaused("tenant-b"));
        Assert.False(File.Exists(PauseFile("tenant-b")));
        Assert.All(Record(tracker, "tenant-b", ReputationOutcome.Bounced, 10), Assert.Null); // 15/20 is under tenant-b's 0.9
        Assert.False(tracker.IsPaused("tenant-b"));
        Assert.Equal("tenant-a", Assert.Single(_alerts).Tenant);
    }

    [Theory]
    [InlineData("5.1.1", true)]
    [InlineData("5.1.10", true)]
    [InlineData("5.1.2", true)]
    [InlineData("5.2.1", true)]
    [InlineData("5.4.4", true)]
    [InlineData("5.0.0", true)]
    [InlineData("5.2.2", false)]
    [InlineData("5.7.1", false)]
    [InlineData("5.7.26", false)]
    [InlineData("5.3.0", false)]
    [InlineData("4.1.1", false)]
    [InlineData("4.2.2", false)]
    [InlineData("", false)]
    [InlineData(null, false)]
    public void IsAddressFailure_is_true_only_for_statuses_about_the_address(string? status, bool expected) =>
        Assert.Equal(expected, TenantOutcomes.IsAddressFailure(status));

    (TenantOutcomes Outcomes, SuppressionList Suppression, ReputationTracker Reputation) NewOutcomes()
    {
        var suppression = new SuppressionList(_dir.Path, _time);
        _lists.Add(suppression);
        var reputation = New(_ => Strict(volume: 2));
        return (new TenantOutcomes(suppression, reputation), suppression, reputation);
    }

    [Fact]
    public void A_user_unknown_reply_suppresses_the_recipient_and_a_policy_block_does_not()
    {
        var (outcomes, suppression, reputation) = NewOutcomes();

        Assert.True(outcomes.OnAttempt("tenant-a", "U@Example.net", DeliveryOutcome.Bounced, "550 5.1.1 No such user", "Q1"));
        Assert.False(outcomes.OnAttempt("tenant-a", "v@example.net", DeliveryOutcome.Bounced, "550 5.7.1 spam", "Q2"));
        Assert.False(outcomes.OnAttempt("tenant-a", "u@example.net", DeliveryOutcome.Bounced, "550 5.1.1 No such user", "Q3")); // already listed

        var entry = Assert.Single(suppression.List("tenant-a"));
        Assert.Equal(("u@example.net", "hard-bounce"), (entry.Address, entry.Reason));
        Assert.Contains("5.1.1", entry.Detail, StringComparison.Ordinal);
        Assert.Contains("Q1", entry.Detail, StringComparison.Ordinal);
        Assert.False(suppression.Contains("tenant-a", "v@example.net"));
        Assert.False(suppression.Contains("tenant-b", "u@example.net"));
        Assert.True(reputation.IsPaused("tenant-a")); // all three counted as bounces (3/3, volume 2)
    }

    [Theory]
    [InlineData(DeliveryOutcome.Bounced, "550 User unknown", true)] // no enhanced code: 5.0.0
    [InlineData(DeliveryOutcome.Bounced, "550 5.2.2 Mailbox full", false)]
    [InlineData(DeliveryOutcome.Bounced, "554 5.7.1 Message rejected as spam", false)]
    [InlineData(DeliveryOutcome.Deferred, "450 4.1.1 Try again", false)]
    [InlineData(DeliveryOutcome.Delivered, "250 2.0.0 Ok", false)]
    public void Only_permanent_address_failures_of_our_own_attempts_suppress(DeliveryOutcome outcome, string reply, bool suppressed)
    {
        var (outcomes, suppression, _) = NewOutcomes();

        Assert.Equal(suppressed, outcomes.OnAttempt("tenant-a", "u@example.net", outcome, reply, "Q1"));
        Assert.Equal(suppressed, suppression.Contains("tenant-a", "u@example.net"));
    }

    [Fact]
    public void Deferred_attempts_never_pause_but_delivered_ones_count_against_bounces()
    {
        var (outcomes, suppression, reputation) = NewOutcomes();

        for (var i = 0; i < 50; i++)
        {
            outcomes.OnAttempt("tenant-a", $"r{i}@example.net", DeliveryOutcome.Deferred, "451 4.3.0 later", "Q1");
        }

        outcomes.OnAttempt("tenant-a", "a@example.net", DeliveryOutcome.Delivered, "250 ok", "Q1");
        outcomes.OnAttempt("tenant-a", "b@example.net", DeliveryOutcome.Bounced, "550 5.7.1 no", "Q1"); // 1/2: not over 0.5

        Assert.False(reputation.IsPaused("tenant-a"));
    }

    [Fact]
    public void A_complaint_report_suppresses_with_reason_complaint()
    {
        var (outcomes, suppression, _) = NewOutcomes();
        var finding = new BounceFinding(BounceKind.Complaint, "U@Example.NET", null, null, "mail.example.net", "abuse", "arf");

        Assert.True(outcomes.OnReport("tenant-a", finding, "018F6B2C3D4E0000001A"));

        var entry = Assert.Single(suppression.List("tenant-a"));
        Assert.Equal(("u@example.net", "complaint"), (entry.Address, entry.Reason));
        Assert.Contains("abuse", entry.Detail, StringComparison.Ordinal);
        Assert.Contains("018F6B2C3D4E0000001A", entry.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void Reports_without_a_recipient_or_about_a_full_mailbox_do_not_suppress()
    {
        var (outcomes, suppression, _) = NewOutcomes();

        Assert.False(outcomes.OnReport("tenant-a", new BounceFinding(BounceKind.HardBounce, null, "5.1.1", null, null, null, "dsn"), "Q1"));
        Assert.False(outcomes.OnReport("tenant-a", new BounceFinding(BounceKind.Complaint, null, null, null, null, "abuse", "arf"), "Q1"));
        Assert.False(outcomes.OnReport("tenant-a", new BounceFinding(BounceKind.HardBounce, "u@example.net", "5.2.2", null, null, null, "dsn"), "Q1"));
        Assert.False(outcomes.OnReport("tenant-a", new BounceFinding(BounceKind.SoftBounce, "u@example.net", "4.2.2", null, null, null, "dsn"), "Q1"));
        Assert.False(outcomes.OnReport("tenant-a", new BounceFinding(BounceKind.Delivered, "u@example.net", "2.0.0", null, null, null, "dsn"), "Q1"));
        Assert.Empty(suppression.List("tenant-a"));

        // A hard bounce without a status is taken as 5.0.0, an address failure.
        Assert.True(outcomes.OnReport("tenant-a", new BounceFinding(BounceKind.HardBounce, "u@example.net", null, null, null, null, "text"), "Q1"));
    }
}
