using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Diagnostics;
using SmtpGateway.Identity;
using SmtpGateway.Policy;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Policy;

/// <summary>Issue 12: the per-tenant counters, on a fake clock.</summary>
public sealed class TenantRateLimitsTests
{
    readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
    readonly CapturingLogger _log = new();

    static TenantLimits Limits(int messages = 100, int recipients = 100, int sessions = 10) => new(messages, recipients, sessions, 1_000_000, 4);

    [Fact]
    public void Messages_per_minute_refuse_the_next_one_and_refill_when_the_minute_has_passed()
    {
        var rates = new TenantRateLimits(_clock, _log);
        var limits = Limits(messages: 3);
        for (var i = 0; i < 3; i++)
        {
            Assert.True(rates.TryAcquireMessage("tenant-a", limits));
        }

        Assert.False(rates.TryAcquireMessage("tenant-a", limits));

        // A sliding window: half a minute later the three are still in it.
        _clock.Advance(TimeSpan.FromSeconds(30));
        Assert.False(rates.TryAcquireMessage("tenant-a", limits));

        _clock.Advance(TimeSpan.FromSeconds(30));
        Assert.True(rates.TryAcquireMessage("tenant-a", limits));
    }

    [Fact]
    public void The_window_slides_permits_taken_later_return_later()
    {
        var rates = new TenantRateLimits(_clock, _log);
        var limits = Limits(recipients: 2);
        Assert.True(rates.TryAcquireRecipient("tenant-a", limits));
        _clock.Advance(TimeSpan.FromSeconds(30));
        Assert.True(rates.TryAcquireRecipient("tenant-a", limits));
        Assert.False(rates.TryAcquireRecipient("tenant-a", limits));

        // One minute after the first: only the first has left the window.
        _clock.Advance(TimeSpan.FromSeconds(30));
        Assert.True(rates.TryAcquireRecipient("tenant-a", limits));
        Assert.False(rates.TryAcquireRecipient("tenant-a", limits));

        // After a long idle time everything is free again, once.
        _clock.Advance(TimeSpan.FromHours(5));
        Assert.True(rates.TryAcquireRecipient("tenant-a", limits));
        Assert.True(rates.TryAcquireRecipient("tenant-a", limits));
        Assert.False(rates.TryAcquireRecipient("tenant-a", limits));
    }

    [Fact]
    public void A_large_limit_is_paced_a_second_at_a_time_not_spent_in_one_burst()
    {
        var rates = new TenantRateLimits(_clock, _log);
        var limits = Limits(messages: 6_000);
        var taken = 0;
        while (rates.TryAcquireMessage("tenant-a", limits))
        {
            taken++;
        }

        // A second's worth (6,000 / 60) at once, then the pace: 100 a second, never the minute's 6,000 in a burst.
        Assert.Equal(100, taken);
        _clock.Advance(TimeSpan.FromMilliseconds(500));
        Assert.Equal(50, Enumerable.Range(0, 200).Count(_ => rates.TryAcquireMessage("tenant-a", limits)));
        _clock.Advance(TimeSpan.FromHours(1));
        Assert.Equal(100, Enumerable.Range(0, 200).Count(_ => rates.TryAcquireMessage("tenant-a", limits)));
    }

    [Fact]
    public void The_pace_never_lets_more_than_the_limit_through_in_one_minute()
    {
        var rates = new TenantRateLimits(_clock, _log);
        var limits = Limits(messages: 20);
        var taken = 0;

        // 10 at once (the burst floor), then one every 3 s: at 59 s the window holds 20 and refuses the rest.
        for (var second = 0; second < 60; second++)
        {
            taken += Enumerable.Range(0, 50).Count(_ => rates.TryAcquireMessage("tenant-a", limits));
            _clock.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.Equal(20, taken);
    }

    [Fact]
    public void A_tenant_at_its_limit_does_not_affect_another_tenant_or_its_own_other_limit()
    {
        var rates = new TenantRateLimits(_clock, _log);
        var limits = Limits(messages: 2, recipients: 2);
        Assert.True(rates.TryAcquireMessage("tenant-a", limits));
        Assert.True(rates.TryAcquireMessage("tenant-a", limits));
        Assert.False(rates.TryAcquireMessage("tenant-a", limits));

        Assert.True(rates.TryAcquireMessage("tenant-b", limits));
        Assert.True(rates.TryAcquireMessage("tenant-b", limits));
        Assert.True(rates.TryAcquireRecipient("tenant-a", limits));
        Assert.False(rates.TryAcquireMessage("tenant-b", limits));
    }

    [Fact]
    public void A_changed_limit_applies_at_the_next_call_to_the_counts_already_made()
    {
        var rates = new TenantRateLimits(_clock, _log);
        Assert.True(rates.TryAcquireMessage("tenant-a", Limits(messages: 1)));
        Assert.False(rates.TryAcquireMessage("tenant-a", Limits(messages: 1)));

        // A reload raised it: the message already sent still counts against the new limit.
        var raised = Limits(messages: 3);
        Assert.True(rates.TryAcquireMessage("tenant-a", raised));
        Assert.True(rates.TryAcquireMessage("tenant-a", raised));
        Assert.False(rates.TryAcquireMessage("tenant-a", raised));

        // And lowered again: nothing more this minute, the next minute one.
        Assert.False(rates.TryAcquireMessage("tenant-a", Limits(messages: 2)));
        _clock.Advance(TenantRateLimits.Window);
        Assert.True(rates.TryAcquireMessage("tenant-a", Limits(messages: 1)));
        Assert.False(rates.TryAcquireMessage("tenant-a", Limits(messages: 1)));
    }

    [Fact]
    public void Session_slots_are_counted_per_tenant_and_released_once()
    {
        var rates = new TenantRateLimits(_clock, _log);
        var limits = Limits(sessions: 2);
        var first = rates.TryOpenSession("tenant-a", limits);
        var second = rates.TryOpenSession("tenant-a", limits);
        Assert.NotNull(first);
        Assert.NotNull(second);
        Assert.Null(rates.TryOpenSession("tenant-a", limits));
        Assert.NotNull(rates.TryOpenSession("tenant-b", limits));

        first!.Dispose();
        first.Dispose();
        Assert.Equal(1, rates.OpenSessions("tenant-a"));
        var third = rates.TryOpenSession("tenant-a", limits);
        Assert.NotNull(third);

        // A reload that lowers MaxSessions counts the sessions already open.
        Assert.Null(rates.TryOpenSession("tenant-a", Limits(sessions: 1)));
        second!.Dispose();
        third!.Dispose();
        Assert.Equal(0, rates.OpenSessions("tenant-a"));
        Assert.NotNull(rates.TryOpenSession("tenant-a", Limits(sessions: 1)));
    }

    [Fact]
    public void Refusals_warn_once_a_minute_per_tenant_and_limit_and_say_how_many_were_left_out()
    {
        var rates = new TenantRateLimits(_clock, _log);
        var limits = Limits(messages: 1, recipients: 1);
        Assert.True(rates.TryAcquireMessage("tenant-a", limits));
        for (var i = 0; i < 5; i++)
        {
            Assert.False(rates.TryAcquireMessage("tenant-a", limits));
        }

        Assert.True(rates.TryAcquireRecipient("tenant-a", limits));
        Assert.False(rates.TryAcquireRecipient("tenant-a", limits));
        Assert.True(rates.TryAcquireMessage("tenant-b", limits));
        Assert.False(rates.TryAcquireMessage("tenant-b", limits));

        var warnings = _log.Entries.Where(e => e.Level == LogLevel.Warning).Select(e => e.Message).ToList();
        Assert.Equal(3, warnings.Count);
        Assert.Single(warnings, w => w.Contains("Tenant tenant-a reached its messages limit", StringComparison.Ordinal));
        Assert.Single(warnings, w => w.Contains("Tenant tenant-a reached its recipients limit", StringComparison.Ordinal));
        Assert.Single(warnings, w => w.Contains("Tenant tenant-b reached its messages limit", StringComparison.Ordinal));

        // A minute later (and after the window refilled), the next refusal warns again and counts the four left out.
        _clock.Advance(TimeSpan.FromMinutes(1));
        Assert.True(rates.TryAcquireMessage("tenant-a", limits));
        Assert.False(rates.TryAcquireMessage("tenant-a", limits));
        var last = _log.Entries.Last(e => e.Level == LogLevel.Warning).Message;
        Assert.Contains("tenant-a reached its messages limit", last, StringComparison.Ordinal);
        Assert.Contains("4 more refusal(s)", last, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_refusal_is_counted_in_the_metric_with_tenant_and_limit()
    {
        var tenant = $"metric-{Guid.NewGuid():N}"[..20];
        var seen = new ConcurrentQueue<(long Value, string? Tenant, string? Limit)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == Telemetry.MeterName && instrument.Name == Telemetry.LimitsRefused)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            string? t = null, limit = null;
            foreach (var tag in tags)
            {
                if (tag.Key == "tenant")
                {
                    t = tag.Value as string;
                }
                else if (tag.Key == "limit")
                {
                    limit = tag.Value as string;
                }
            }

            if (t == tenant)
            {
                seen.Enqueue((value, t, limit));
            }
        });
        listener.Start();

        var rates = new TenantRateLimits(_clock, _log);
        var limits = Limits(messages: 1, sessions: 1);
        Assert.True(rates.TryAcquireMessage(tenant, limits));
        Assert.False(rates.TryAcquireMessage(tenant, limits));
        Assert.False(rates.TryAcquireMessage(tenant, limits));
        using var slot = rates.TryOpenSession(tenant, limits);
        Assert.Null(rates.TryOpenSession(tenant, limits));
        rates.Refused(tenant, TenantLimit.Size);

        Assert.Equal(["messages", "messages", "sessions", "size"], seen.Select(s => s.Limit!).ToArray());
        Assert.All(seen, s => Assert.Equal(1, s.Value));
    }
}
