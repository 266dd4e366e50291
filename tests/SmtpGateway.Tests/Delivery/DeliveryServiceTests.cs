using System.Collections.Concurrent;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Spool;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Delivery;

/// <summary>A transport that answers from a table and records what it was asked.</summary>
public sealed class ScriptedTransport : IDeliveryTransport
{
    public Func<string, int, string> Reply { get; set; } = (_, _) => "250 2.0.0 Ok";

    public ConcurrentQueue<string[]> Calls { get; } = new();

    /// <summary>When set, the attempt waits for it (or for cancellation).</summary>
    public TaskCompletionSource? Gate { get; set; }

    public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Replies stand for each recipient's RCPT answer (true), or for a MAIL/DATA answer copied to all (false).</summary>
    public bool RcptStage { get; set; } = true;

    public async Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken)
    {
        Calls.Enqueue([.. recipients]);
        var call = Calls.Count;
        Entered.TrySetResult();
        if (Gate is { } gate)
        {
            await gate.Task.WaitAsync(cancellationToken);
        }

        return recipients.Select(r =>
        {
            var reply = Reply(r, call);
            return RecipientResult.FromReply(r, int.Parse(reply[..3], System.Globalization.CultureInfo.InvariantCulture), reply[4..]) with { AboutRecipient = RcptStage };
        }).ToArray();
    }
}

public sealed class DeliveryServiceTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly ManualTimeProvider _time = new();
    readonly FileSpool _spool;
    readonly ScriptedTransport _transport = new();

    public DeliveryServiceTests() => _spool = NewSpool(_dir.Combine("spool"), _time);

    public void Dispose()
    {
        _spool.Dispose();
        _dir.Dispose();
    }

    static DeliveryConfig Config(IEnumerable<TimeSpan>? schedule = null, double jitter = 0, TimeSpan? maxAge = null, int workers = 2) => new()
    {
        Workers = workers,
        Retry = new RetryConfig
        {
            Schedule = (schedule ?? [TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(15)]).ToList(),
            Jitter = jitter,
            MaxAge = maxAge ?? TimeSpan.FromDays(5),
        },
    };

    DeliveryService NewService(DeliveryConfig config, FileSpool? spool = null, Func<double>? random = null) =>
        new(spool ?? _spool, _transport, config, _time, NullLogger.Instance, random ?? (() => 0.5));

    async Task<string> CommitAsync(string[] recipients)
    {
        var envelope = NewEnvelope(_spool, _time, recipients);
        await _spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
        while (_spool.Ready.TryRead(out _))
        {
        }

        return envelope.Id;
    }

    async Task<DeliveryState> StateAsync(string id) => (await _spool.LoadAsync(id, CancellationToken.None))!.State;

    [Fact]
    public void Outcome_is_mapped_once_from_the_reply_code()
    {
        Assert.Equal(DeliveryOutcome.Delivered, DeliveryOutcomes.FromReplyCode(250));
        Assert.Equal(DeliveryOutcome.Delivered, DeliveryOutcomes.FromReplyCode(251));
        Assert.Equal(DeliveryOutcome.Deferred, DeliveryOutcomes.FromReplyCode(421));
        Assert.Equal(DeliveryOutcome.Deferred, DeliveryOutcomes.FromReplyCode(451));
        Assert.Equal(DeliveryOutcome.Bounced, DeliveryOutcomes.FromReplyCode(550));
        Assert.Equal(DeliveryOutcome.Bounced, DeliveryOutcomes.FromReplyCode(554));
        Assert.Equal(DeliveryOutcome.Deferred, DeliveryOutcomes.FromReplyCode(354));
        Assert.Equal(DeliveryOutcome.Deferred, DeliveryOutcomes.FromReplyCode(0));
        Assert.Equal("550 5.1.1 a b", DeliveryOutcomes.FormatReply(550, "5.1.1 a\r\nb"));
    }

    [Fact]
    public void Backoff_follows_the_schedule_and_repeats_its_last_entry()
    {
        var policy = new RetryPolicy(Config().Retry, () => 0);
        Assert.Equal(TimeSpan.FromMinutes(1), policy.NextDelay(1));
        Assert.Equal(TimeSpan.FromMinutes(5), policy.NextDelay(2));
        Assert.Equal(TimeSpan.FromMinutes(15), policy.NextDelay(3));
        Assert.Equal(TimeSpan.FromMinutes(15), policy.NextDelay(4));
        Assert.Equal(TimeSpan.FromMinutes(15), policy.NextDelay(40));
    }

    [Fact]
    public void Jitter_stays_within_its_fraction_and_spreads()
    {
        var policy = new RetryPolicy(Config(jitter: 0.2).Retry, new Random(42).NextDouble);
        var delays = Enumerable.Range(0, 1000).Select(_ => policy.NextDelay(2)).ToArray();
        Assert.All(delays, d => Assert.InRange(d, TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(6)));
        Assert.True(delays.Distinct().Count() > 900, "jitter should spread retries");
        Assert.True(delays.Max() > TimeSpan.FromMinutes(5.9) && delays.Min() < TimeSpan.FromMinutes(5.1));
    }

    [Fact]
    public async Task Deferred_attempts_back_off_with_growing_delays()
    {
        _transport.Reply = (_, _) => "451 4.3.0 Try later";
        using var service = NewService(Config());
        var id = await CommitAsync(["a@example.net"]);

        var gaps = new List<TimeSpan>();
        for (var attempt = 1; attempt <= 4; attempt++)
        {
            await service.ProcessAsync(id, CancellationToken.None);
            var state = await StateAsync(id);
            Assert.Equal(attempt, state.Attempts);
            gaps.Add(state.NextAttemptAt - state.LastAttemptAt!.Value);

            // Not due yet: a wake-up now must not attempt again.
            await service.ProcessAsync(id, CancellationToken.None);
            Assert.Equal(attempt, _transport.Calls.Count);
            _time.Advance(state.NextAttemptAt - _time.GetUtcNow());
        }

        Assert.Equal([TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(15), TimeSpan.FromMinutes(15)], gaps);
        Assert.Equal(RecipientStatus.Pending, (await StateAsync(id)).Recipients[0].Status);
        Assert.Equal("451 4.3.0 Try later", (await StateAsync(id)).Recipients[0].LastReply);
    }

    [Fact]
    public async Task Jitter_is_applied_to_the_persisted_next_attempt()
    {
        _transport.Reply = (_, _) => "451 4.3.0 Try later";
        using var service = NewService(Config(jitter: 0.2), random: () => 0.5);
        var id = await CommitAsync(["a@example.net"]);

        await service.ProcessAsync(id, CancellationToken.None);

        var state = await StateAsync(id);
        Assert.Equal(TimeSpan.FromMinutes(1.1), state.NextAttemptAt - state.LastAttemptAt!.Value);
    }

    [Fact]
    public async Task Only_still_pending_recipients_are_retried()
    {
        _transport.Reply = (rcpt, call) => (rcpt, call) switch
        {
            ("busy@example.net", 1) => "450 4.2.1 Mailbox busy",
            ("nobody@example.net", _) => "550 5.1.1 No such user",
            _ => "250 2.0.0 Ok",
        };
        using var service = NewService(Config());
        var id = await CommitAsync(["ok@example.net", "busy@example.net", "nobody@example.net"]);

        await service.ProcessAsync(id, CancellationToken.None);
        var state = await StateAsync(id);
        Assert.Equal([RecipientStatus.Delivered, RecipientStatus.Pending, RecipientStatus.Failed], state.Recipients.Select(r => r.Status));

        _time.Advance(TimeSpan.FromMinutes(1));
        await service.ProcessAsync(id, CancellationToken.None);

        Assert.Equal([["ok@example.net", "busy@example.net", "nobody@example.net"], ["busy@example.net"]], _transport.Calls.ToArray());

        // Done, with a failed recipient: kept in failed/ with the per-recipient record.
        Assert.Empty(_spool.List(SpoolArea.Queue));
        var failed = Assert.Single(_spool.List(SpoolArea.Failed));
        Assert.Equal([RecipientStatus.Delivered, RecipientStatus.Delivered, RecipientStatus.Failed], failed.State.Recipients.Select(r => r.Status));
        Assert.Equal("550 5.1.1 No such user", failed.State.Recipients[2].LastReply);
        Assert.Equal(2, failed.State.Attempts);
    }

    [Fact]
    public async Task Delivered_to_all_removes_the_message()
    {
        using var service = NewService(Config());
        var id = await CommitAsync(["a@example.net", "b@example.net"]);

        await service.ProcessAsync(id, CancellationToken.None);

        Assert.Null(await _spool.LoadAsync(id, CancellationToken.None));
        Assert.Empty(_spool.List(SpoolArea.Queue));
        Assert.Empty(_spool.List(SpoolArea.Failed));
    }

    [Fact]
    public async Task Recipients_still_deferred_at_MaxAge_fail()
    {
        _transport.Reply = (_, _) => "451 4.4.1 No answer";
        using var service = NewService(Config(schedule: [TimeSpan.FromMinutes(25)], maxAge: TimeSpan.FromHours(1)));
        var id = await CommitAsync(["a@example.net"]);

        // Attempts at 0, 25 and 50 minutes; the next would be at 75, but the last one is moved to the expiry time (60).
        var times = new List<DateTimeOffset>();
        var start = _time.GetUtcNow();
        while (await _spool.LoadAsync(id, CancellationToken.None) is { } message)
        {
            times.Add(_time.GetUtcNow());
            await service.ProcessAsync(id, CancellationToken.None);
            if (await _spool.LoadAsync(id, CancellationToken.None) is { } after)
            {
                _time.Advance(after.State.NextAttemptAt - _time.GetUtcNow());
            }

            Assert.True(times.Count < 10);
        }

        Assert.Equal([0, 25, 50, 60], times.Select(t => (t - start).TotalMinutes));
        var failed = Assert.Single(_spool.List(SpoolArea.Failed));
        var recipient = Assert.Single(failed.State.Recipients);
        Assert.Equal(RecipientStatus.Failed, recipient.Status);
        Assert.Equal("451 4.4.1 No answer", recipient.LastReply);
        Assert.Equal(4, failed.State.Attempts);
    }

    [Fact]
    public async Task Scheduled_retry_survives_a_restart()
    {
        _transport.Reply = (_, call) => call == 1 ? "451 4.3.0 Try later" : "250 2.0.0 Ok";
        string id;
        using (var service = NewService(Config()))
        {
            id = await CommitAsync(["a@example.net"]);
            await service.ProcessAsync(id, CancellationToken.None);
        }

        // A new process: recovery finds the persisted schedule and waits for it.
        using var spool = NewSpool(_dir.Combine("spool"), _time);
        await spool.RecoverAsync(CancellationToken.None);
        Assert.False(spool.Ready.TryRead(out _));
        _time.Advance(TimeSpan.FromSeconds(59));
        Assert.False(spool.Ready.TryRead(out _));
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(spool.Ready.TryRead(out var due));
        Assert.Equal(id, due);

        using var restarted = NewService(Config(), spool);
        await restarted.ProcessAsync(id, CancellationToken.None);
        Assert.Null(await spool.LoadAsync(id, CancellationToken.None));
        Assert.Equal(2, _transport.Calls.Count);
    }

    [Fact]
    public async Task Hosted_workers_deliver_commits_and_retries_driven_by_the_clock()
    {
        _transport.Reply = (rcpt, call) => rcpt == "slow@example.net" && call == 1 ? "451 4.3.0 Try later" : "250 2.0.0 Ok";
        using var service = NewService(Config(workers: 4));
        await _spool.RecoverAsync(CancellationToken.None);
        await service.StartAsync(CancellationToken.None);
        try
        {
            var envelope = NewEnvelope(_spool, _time, ["slow@example.net"]);
            await _spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
            await Poll.UntilAsync(() => _transport.Calls.Count == 1 && service.InFlightCount == 0);
            Assert.Single(_spool.List(SpoolArea.Queue));

            _time.Advance(TimeSpan.FromMinutes(1));
            await Poll.UntilAsync(() => _spool.List(SpoolArea.Queue).Count == 0);
            Assert.Equal(2, _transport.Calls.Count);
        }
        finally
        {
            await service.StopAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task Shutdown_abandons_the_attempt_in_flight_without_recording_it()
    {
        _transport.Gate = new TaskCompletionSource();
        using var service = NewService(Config(workers: 1));
        await _spool.RecoverAsync(CancellationToken.None);
        await service.StartAsync(CancellationToken.None);
        var envelope = NewEnvelope(_spool, _time, ["a@example.net"]);
        await _spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
        await _transport.Entered.Task.WaitAsync(TimeSpan.FromSeconds(5));

        // The host gives up at once (its shutdown token is already cancelled): the attempt is cancelled.
        using var hostTimeout = new CancellationTokenSource();
        await hostTimeout.CancelAsync();
        await service.StopAsync(hostTimeout.Token).WaitAsync(TimeSpan.FromSeconds(5));
        await Poll.UntilAsync(() => service.InFlightCount == 0);

        var message = await _spool.LoadAsync(envelope.Id, CancellationToken.None);
        Assert.NotNull(message);
        Assert.Equal(0, message.State.Attempts);
        Assert.False(File.Exists(Path.Combine(_spool.RootDirectory, "state", envelope.Id + ".json")));
    }

    [Fact]
    public async Task Shutdown_lets_an_attempt_in_flight_finish_and_record()
    {
        _transport.Gate = new TaskCompletionSource();
        using var service = NewService(Config(workers: 1));
        await _spool.RecoverAsync(CancellationToken.None);
        await service.StartAsync(CancellationToken.None);
        var envelope = NewEnvelope(_spool, _time, ["a@example.net"]);
        await _spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
        await _transport.Entered.Task.WaitAsync(TimeSpan.FromSeconds(5));

        var stopping = service.StopAsync(CancellationToken.None);
        _transport.Gate.SetResult();
        await stopping.WaitAsync(TimeSpan.FromSeconds(5));

        Assert.Null(await _spool.LoadAsync(envelope.Id, CancellationToken.None));
    }
}
