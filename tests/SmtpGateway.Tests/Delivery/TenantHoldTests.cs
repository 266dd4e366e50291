using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Bounces;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Spool;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Delivery;

/// <summary>
/// Issue #7 reputation through the delivery workers: bounces of our own attempts pause the tenant once its rate passes the
/// threshold; a paused tenant's outbound mail is held (not attempted, not counted, not expired) while other tenants and
/// reports to the paused tenant's own senders (DSNs, null sender) still go; `queue resume` releases it.
/// </summary>
public sealed class TenantHoldTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly ManualTimeProvider _time = new();
    readonly FileSpool _spool;
    readonly ScriptedTransport _transport = new();
    readonly DeliveryEventLog _events;
    readonly SuppressionList _suppression;
    readonly ReputationTracker _reputation;
    readonly List<TenantPause> _pauses = [];
    readonly DeliveryService _service;

    public TenantHoldTests()
    {
        _spool = NewSpool(_dir.Combine("spool"), _time);
        _events = new DeliveryEventLog(_dir.Combine("events"), NullLogger.Instance);
        _suppression = new SuppressionList(_dir.Path, _time);
        var config = new ReputationConfig { MaxBounceRate = 0.5, MinimumVolume = 4, Window = TimeSpan.FromHours(1) };
        _reputation = new ReputationTracker(_dir.Path, _ => config, _time, _pauses.Add);
        var hooks = new DeliveryHooks(
            IsHeld: e => !e.Inbound && e.MailFrom.Length > 0 && e.TenantId is { } t && _reputation.IsPaused(t),
            Outcomes: new TenantOutcomes(_suppression, _reputation))
        {
            TenantPaused = _reputation.IsPaused,
        };
        var delivery = new DeliveryConfig { Retry = new RetryConfig { Schedule = [TimeSpan.FromMinutes(1)], Jitter = 0, MaxAge = TimeSpan.FromMinutes(10) } };
        _service = new DeliveryService(_spool, _transport, delivery, _time, NullLogger.Instance, () => 0.5, _events, dsn: null, control: null, hooks);
    }

    public void Dispose()
    {
        _service.Dispose();
        _suppression.Dispose();
        _spool.Dispose();
        _dir.Dispose();
    }

    async Task<string> SendAsync(string tenant, string recipient, string mailFrom = "app@tenant.example")
    {
        var envelope = NewEnvelope(_spool, _time, [recipient], mailFrom, tenant);
        await _spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
        await _service.ProcessAsync(envelope.Id, CancellationToken.None);
        return envelope.Id;
    }

    [Fact]
    public async Task A_refusal_of_MAIL_FROM_or_DATA_counts_as_a_bounce_but_suppresses_no_address()
    {
        _transport.RcptStage = false;
        _transport.Reply = (_, _) => "550 5.1.0 Sender address rejected";
        await SendAsync("tenant-a", "good@example.net");
        _transport.Reply = (_, _) => "554 Transaction failed";
        await SendAsync("tenant-a", "good2@example.net");

        Assert.Empty(_suppression.List("tenant-a"));

        // The same status to RCPT is about the address.
        _transport.RcptStage = true;
        _transport.Reply = (_, _) => "550 5.1.1 No such user";
        await SendAsync("tenant-a", "gone@example.net");
        Assert.True(_suppression.Contains("tenant-a", "gone@example.net"));
    }

    [Fact]
    public async Task Bounces_past_the_threshold_hold_the_tenant_until_resume_and_suppress_the_bad_addresses()
    {
        _transport.Reply = (rcpt, _) => rcpt.StartsWith("gone", StringComparison.Ordinal) ? "550 5.1.1 No such user" : "250 2.0.0 Ok";
        await SendAsync("tenant-a", "ok1@example.net");
        await SendAsync("tenant-a", "gone1@example.net");
        await SendAsync("tenant-a", "gone2@example.net");
        Assert.Empty(_pauses); // 2 of 3: under the minimum volume
        await SendAsync("tenant-a", "gone3@example.net");

        var pause = Assert.Single(_pauses);
        Assert.Equal("tenant-a", pause.Tenant);
        Assert.Equal(0.75, pause.Rate);
        Assert.True(_suppression.Contains("tenant-a", "gone1@example.net"));
        Assert.False(_suppression.Contains("tenant-b", "gone1@example.net"));
        var suppressedEvents = File.ReadAllLines(_events.PathFor("tenant-a")).Select(l => JsonDocument.Parse(l).RootElement)
            .Count(e => e.TryGetProperty("suppressed", out var s) && s.GetBoolean());
        Assert.Equal(3, suppressedEvents);

        // Held: no attempt, nothing counted against the message, and it stays queued.
        var calls = _transport.Calls.Count;
        var held = await SendAsync("tenant-a", "later@example.net");
        Assert.Equal(calls, _transport.Calls.Count);
        var state = Assert.Single(_spool.List(SpoolArea.Queue), e => e.Id == held).State;
        Assert.Equal(0, state.Attempts);
        Assert.Equal(1, _service.HeldCount("tenant-a")); // parked in memory, not rescheduled over and over

        // Long past the message's maximum age: still held, never expired.
        _time.Advance(TimeSpan.FromMinutes(30));
        await _service.ProcessAsync(held, CancellationToken.None);
        Assert.Equal(calls, _transport.Calls.Count);
        Assert.Contains(_spool.List(SpoolArea.Queue), e => e.Id == held);

        // Other tenants and our own reports to the tenant's senders (null sender) are not held.
        await SendAsync("tenant-b", "ok@example.net");
        await SendAsync("tenant-a", "app@tenant.example", mailFrom: "");
        Assert.Equal(calls + 2, _transport.Calls.Count);

        // Still paused: the release pass leaves it parked.
        await _service.ReleaseResumedAsync();
        Assert.Equal(1, _service.HeldCount("tenant-a"));

        // The operator resumes (as the CLI does); within a second the held message goes back to the queue. Its retry period
        // is extended by the 30 minutes it was held: a first deferral now does not expire it (MaxAge is 10 minutes).
        Assert.True(ReputationTracker.Resume(_dir.Path, "tenant-a"));
        await _service.ReleaseResumedAsync();
        Assert.Equal(1, _service.HeldCount("tenant-a")); // the pause file was looked at less than a second ago
        _time.Advance(TimeSpan.FromSeconds(1));
        await _service.ReleaseResumedAsync();
        Assert.Equal(0, _service.HeldCount("tenant-a"));
        Assert.True(Assert.Single(_spool.List(SpoolArea.Queue), e => e.Id == held).State.HeldFor >= TimeSpan.FromMinutes(30));
        _transport.Reply = (_, _) => "451 4.7.1 Try later";
        await _service.ProcessAsync(held, CancellationToken.None);
        Assert.Equal(["later@example.net"], _transport.Calls.Last());
        var last = JsonDocument.Parse(File.ReadAllLines(_events.PathFor("tenant-a")).Last()).RootElement;
        Assert.Equal("deferred", last.GetProperty("event").GetString());
        Assert.False(_reputation.IsPaused("tenant-a"));
    }
}
