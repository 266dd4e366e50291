using System.Collections.Concurrent;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Diagnostics;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery;

/// <summary>
/// Delivery workers: take due message ids from the spool, attempt the still-pending recipients through the
/// transport, record each outcome, and schedule what was deferred (RFC 5321 section 4.5.4.1) until
/// RetryConfig.MaxAge. Every decision is persisted by the spool before the next attempt can start,
/// so a restart resumes the schedule. Delivery is at-least-once: an attempt whose result was not
/// recorded (crash, shutdown) is simply made again.
/// </summary>
public sealed class DeliveryService : BackgroundService
{
    /// <summary>How long an in-flight attempt may run on after shutdown begins before it is abandoned.</summary>
    internal static readonly TimeSpan ShutdownGrace = TimeSpan.FromSeconds(10);

    /// <summary>A wake-up this early (timer resolution, clock steps) still counts as due.</summary>
    static readonly TimeSpan EarlyWakeTolerance = TimeSpan.FromSeconds(1);

    const string DefaultTenant = "default";

    readonly ISpoolQueue _spool;
    readonly IDeliveryTransport _transport;
    readonly RetryPolicy _retry;
    readonly int _workers;
    readonly string _mode;
    readonly TimeProvider _time;
    readonly ILogger _logger;
    readonly ConcurrentDictionary<string, byte> _inFlight = new(StringComparer.Ordinal);
    readonly CancellationTokenSource _abort;
    readonly DeliveryEventLog? _events;
    readonly DsnGenerator? _dsn;
    readonly QueueControl? _control;
    readonly DeliveryHooks _hooks;
    readonly FairReadyQueue _fair;

    /// <summary>How often parked messages of paused tenants are checked for release (the pause file is re-read each second).</summary>
    internal static readonly TimeSpan HoldRecheck = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Ids of held messages, per paused tenant. Parked in memory rather than rescheduled: a paused tenant with a large
    /// queue must not keep the shared workers reloading its messages. After a restart, recovery parks them again.
    /// </summary>
    readonly ConcurrentDictionary<string, ConcurrentDictionary<string, DateTimeOffset>> _held = new(StringComparer.Ordinal);

    public DeliveryService(ISpoolQueue spool, IDeliveryTransport transport, IOptions<GatewayConfig> options, TimeProvider time, ILogger<DeliveryService> logger)
        : this(spool, transport, options.Value.Delivery, time, logger, random: null)
    {
    }

    internal DeliveryService(ISpoolQueue spool, IDeliveryTransport transport, DeliveryConfig config, TimeProvider time, ILogger logger, Func<double>? random,
        DeliveryEventLog? events = null, DsnGenerator? dsn = null, QueueControl? control = null, DeliveryHooks? hooks = null)
    {
        _hooks = hooks ?? new DeliveryHooks();
        _spool = spool;
        _transport = transport;
        _events = events;
        _dsn = dsn;
        _control = control;
        _retry = new RetryPolicy(config.Retry, random);
        _workers = Math.Max(1, config.Workers);
        _fair = new FairReadyQueue(config.MaxWorkersPerTenant > 0 ? config.MaxWorkersPerTenant : _workers / 2);
        _mode = config.Mode.ToString();
        _time = time;
        _logger = logger;

        // Created on the TimeProvider so that the shutdown grace period (CancelAfter) runs on the same clock as everything else.
        _abort = new CancellationTokenSource(Timeout.InfiniteTimeSpan, time);
    }

    /// <summary>Ids being attempted right now.</summary>
    internal int InFlightCount => _inFlight.Count;

    /// <summary>The per-tenant ready lists the workers take from (tests).</summary>
    internal FairReadyQueue Ready => _fair;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        DeliveryLog.Started(_logger, _workers, _mode);
        var workers = Enumerable.Range(0, _workers).Select(_ => WorkerAsync(stoppingToken)).ToList();
        workers.Add(SortAsync(stoppingToken));
        if (_control is not null)
        {
            workers.Add(_control.RunAsync(this, ClearBackoff, stoppingToken));
        }

        if (_hooks.IsHeld is not null)
        {
            workers.Add(ReleaseHeldAsync(stoppingToken));
        }

        await Task.WhenAll(workers).ConfigureAwait(false);
        DeliveryLog.Stopped(_logger);
    }

    /// <summary>Moves the spool's ready ids into the per-tenant lists (the tenant comes from the spool's memory, not from disk).</summary>
    async Task SortAsync(CancellationToken stoppingToken)
    {
        var ready = _spool.Ready;
        try
        {
            while (await ready.WaitToReadAsync(stoppingToken).ConfigureAwait(false))
            {
                while (!stoppingToken.IsCancellationRequested && ready.TryRead(out var id))
                {
                    _fair.Add(id, _spool.TenantOf(id) ?? DefaultTenant);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Shutdown: ids still in memory are on disk and come back on recovery.
        }
    }

    async Task WorkerAsync(CancellationToken stoppingToken)
    {
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                var (id, tenant) = await _fair.TakeAsync(stoppingToken).ConfigureAwait(false);
                try
                {
                    await ProcessAsync(id, _abort.Token).ConfigureAwait(false);
                }
                finally
                {
                    _fair.Done(tenant);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Shutdown: stop taking new work. Ids not taken are on disk and come back on recovery.
        }
    }

    /// <summary>
    /// Stops taking work at once; lets attempts in flight finish for up to <see cref="ShutdownGrace"/> (or until the host's
    /// shutdown timeout), then cancels them. A cancelled attempt records nothing and is repeated after restart.
    /// </summary>
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        _abort.CancelAfter(ShutdownGrace);
        using var registration = cancellationToken.Register(static state => ((CancellationTokenSource)state!).Cancel(), _abort);
        await base.StopAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Hands parked messages back to the workers once their tenant is no longer paused (`smtpgw queue resume`).</summary>
    async Task ReleaseHeldAsync(CancellationToken stoppingToken)
    {
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                await Task.Delay(HoldRecheck, _time, stoppingToken).ConfigureAwait(false);
                await ReleaseResumedAsync().ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    /// <summary>One pass of the release loop: every parked message of a tenant that is no longer paused goes back to the queue.</summary>
    internal async Task ReleaseResumedAsync()
    {
        foreach (var (tenant, ids) in _held)
        {
            if (ids.IsEmpty || _hooks.TenantPaused?.Invoke(tenant) != false)
            {
                continue;
            }

            foreach (var id in ids.Keys)
            {
                if (ids.TryRemove(id, out var since))
                {
                    await ReleaseAsync(id, since).ConfigureAwait(false);
                }
            }
        }
    }

    /// <summary>Records how long the message was held (so its retry period is extended by that) and makes it due now.</summary>
    async Task ReleaseAsync(string id, DateTimeOffset since)
    {
        var now = _time.GetUtcNow();
        if (TryClaim(id))
        {
            try
            {
                if (await _spool.LoadAsync(id, CancellationToken.None).ConfigureAwait(false) is { } message)
                {
                    await _spool.SaveAsync(message.State with { HeldFor = message.State.HeldFor + (now - since), NextAttemptAt = now }, CancellationToken.None).ConfigureAwait(false);
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or SpoolWriteException)
            {
                // Not recorded: the message still goes out, with the retry period counted from its arrival.
                DeliveryLog.AttemptFailed(_logger, id, now, ex);
            }
            finally
            {
                Release(id);
            }
        }

        _spool.Schedule(id, now);
    }

    /// <summary>Messages parked for <paramref name="tenant"/> (tests).</summary>
    internal int HeldCount(string tenant) => _held.TryGetValue(tenant, out var ids) ? ids.Count : 0;

    /// <summary>`queue retry`: the operator says the destinations are worth trying again now.</summary>
    internal void ClearBackoff()
    {
        if ((_transport is TenantRouter router ? router.Outbound : _transport) is IOutboundTransport smtp)
        {
            smtp.Engine.Backoff.Clear();
        }
    }

    public override void Dispose()
    {
        _events?.Dispose();
        _abort.Dispose();
        base.Dispose();
    }

    /// <summary>One attempt of one message. Tests call it directly; workers call it for each ready id.</summary>
    internal async Task ProcessAsync(string id, CancellationToken abort)
    {
        // The same id can be in the ready channel twice (a stale wake-up): only one attempt at a time.
        if (!_inFlight.TryAdd(id, 0))
        {
            return;
        }

        try
        {
            var message = await _spool.LoadAsync(id, abort, forDelivery: true).ConfigureAwait(false);
            if (message is null)
            {
                return;
            }

            var state = message.State;
            if (state.NextAttemptAt > _time.GetUtcNow() + EarlyWakeTolerance)
            {
                // Woken before its time (the durable schedule moved on): go back to sleep until then.
                _spool.Schedule(id, state.NextAttemptAt);
                return;
            }

            // A paused tenant's outbound mail is held, not dropped and not attempted: no attempt is counted, nothing expires.
            if (_hooks.IsHeld?.Invoke(message.Envelope) == true)
            {
                // Keyed by id: looked at again while still paused (queue retry, restart), it keeps the time it was first held.
                _held.GetOrAdd(message.Envelope.TenantId ?? DefaultTenant, _ => new(StringComparer.Ordinal)).TryAdd(id, _time.GetUtcNow());
                return;
            }

            var tenant = message.Envelope.TenantId ?? DefaultTenant;
            using var scope = _logger.BeginScope(new LogScope(LogScope.Of("QueueId", id), LogScope.Of("TenantId", tenant)));

            var pending = state.Recipients.Where(r => r.Status == RecipientStatus.Pending).Select(r => r.Address).ToArray();
            if (pending.Length > 0)
            {
                var results = await _transport.DeliverAsync(message, pending, abort).ConfigureAwait(false);
                List<DsnRecipient> failed = [];
                List<DeliveryEvent> events = [];
                state = Record(message, state, pending, results, tenant, failed, events);

                // The DSN is queued before the failure is recorded: if the process dies in between, the attempt is made
                // again and at worst a second report goes out (at-least-once), but a recorded failure never lacks its report.
                string? dsnId = null;
                if (failed.Count > 0 && _dsn is not null)
                {
                    try
                    {
                        dsnId = await _dsn.QueueAsync(message, failed, CancellationToken.None).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is SpoolWriteException or IOException or UnauthorizedAccessException)
                    {
                        // No report could be stored: the failed recipients stay pending (their reply kept), so the next attempt
                        // fails them again and tries the report again. Delivered recipients stay delivered: no duplicates.
                        DeliveryLog.DsnFailed(_logger, id, ex);
                        var unreported = failed.Select(f => f.Recipient).ToHashSet(StringComparer.Ordinal);
                        var retryAt = _time.GetUtcNow() + _retry.BaseDelay(1);
                        state = state with
                        {
                            NextAttemptAt = state.NextAttemptAt > retryAt ? state.NextAttemptAt : retryAt,
                            Recipients = state.Recipients.Select(r => r.Status == RecipientStatus.Failed && unreported.Contains(r.Address) && r.UpdatedAt == state.LastAttemptAt
                                ? r with { Status = RecipientStatus.Pending }
                                : r).ToList(),
                        };
                        events.RemoveAll(e => e.Event is "bounced" or "expired");
                    }
                }

                // One JSON line per recipient outcome (events/<tenant>.jsonl); bounces and expiries name their DSN.
                foreach (var e in events)
                {
                    _events?.Write(e.Event is "bounced" or "expired" && dsnId is not null ? e with { DsnId = dsnId } : e);
                }
            }

            // Persisted whatever happens next: written even when shutdown is under way, because the attempt was made.
            await _spool.SaveAsync(state, CancellationToken.None).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (abort.IsCancellationRequested)
        {
            DeliveryLog.Abandoned(_logger, id);
        }
        catch (Exception ex)
        {
            // Spool I/O trouble or a transport bug: nothing was recorded, so the message is tried again later.
            var retryAt = _time.GetUtcNow() + _retry.BaseDelay(1);
            DeliveryLog.AttemptFailed(_logger, id, retryAt, ex);
            _spool.Schedule(id, retryAt);
        }
        finally
        {
            _inFlight.TryRemove(id, out _);
        }
    }

    /// <summary>Claims <paramref name="id"/> so that no attempt starts on it (queue tools); false while an attempt is in flight.</summary>
    internal bool TryClaim(string id) => _inFlight.TryAdd(id, 0);

    internal void Release(string id) => _inFlight.TryRemove(id, out _);

    DeliveryState Record(SpooledMessage message, DeliveryState state, string[] pending, IReadOnlyList<RecipientResult> results, string tenant,
        List<DsnRecipient> failed, List<DeliveryEvent> events)
    {
        var now = _time.GetUtcNow();
        var attempts = state.Attempts + 1;
        var retryFrom = message.Envelope.ReceivedAt + state.HeldFor;
        var expired = _retry.IsExpired(retryFrom, now);
        var nextAttemptAt = _retry.NextAttemptAt(attempts, retryFrom, now);

        // Results are positional (one per pending recipient); a short list from a faulty transport counts as deferred.
        var byAddress = new Dictionary<string, Queue<RecipientResult>>(StringComparer.Ordinal);
        for (var i = 0; i < pending.Length; i++)
        {
            var result = i < results.Count ? results[i] : RecipientResult.FromReply(pending[i], DeliveryReplies.NoResultFromTransport);
            if (!byAddress.TryGetValue(pending[i], out var queue))
            {
                byAddress[pending[i]] = queue = new Queue<RecipientResult>();
            }

            queue.Enqueue(result);
        }

        var recipients = new List<RecipientState>(state.Recipients.Count);
        foreach (var recipient in state.Recipients)
        {
            if (recipient.Status != RecipientStatus.Pending || !byAddress.TryGetValue(recipient.Address, out var queue) || queue.Count == 0)
            {
                recipients.Add(recipient);
                continue;
            }

            var result = queue.Dequeue();
            var expiring = result.Outcome == DeliveryOutcome.Deferred && expired;
            var name = result.Outcome switch
            {
                DeliveryOutcome.Delivered => "delivered",
                DeliveryOutcome.Bounced => "bounced",
                _ => expiring ? "expired" : "deferred",
            };

            // What the outcome means for the tenant (reputation, suppression): only for mail the tenant sent.
            var envelope = message.Envelope;
            var tenantSent = !envelope.Inbound && envelope.MailFrom.Length > 0 && envelope.TenantId is not null;
            bool? suppressed = null;
            string? returnPath = null;
            try
            {
                if (tenantSent && _hooks.Outcomes is { } outcomes)
                {
                    var added = outcomes.OnAttempt(envelope.TenantId!, recipient.Address, expiring ? DeliveryOutcome.Bounced : result.Outcome, result.Reply, state.Id,
                        result.AboutRecipient && !expiring);
                    suppressed = added ? true : null;
                }

                // The transport names the reverse-path it sent; a transport that sends none (drop) leaves the resolver to say it.
                returnPath = !tenantSent ? null : result.ReturnPath ?? _hooks.ReturnPaths?.Invoke(envelope, recipient.Address);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException or Hsm.HsmException)
            {
                // Bookkeeping after the fact (suppression file, pause file, key file): the attempt was made and must be
                // recorded, or delivered recipients would be sent again and the message would never expire.
                DeliveryLog.BookkeepingFailed(_logger, state.Id, ex);
            }
            events.Add(new DeliveryEvent
            {
                Time = now, Event = name, Id = state.Id, Tenant = tenant, From = envelope.MailFrom, Recipient = recipient.Address,
                Reply = result.Reply, Host = result.RemoteHost, Tls = result.Tls, Attempt = attempts,
                NextAttemptAt = name == "deferred" ? nextAttemptAt : null,
                ReturnPath = returnPath == envelope.MailFrom ? null : returnPath,
                Suppressed = suppressed,
            });
            if (name is "bounced" or "expired")
            {
                failed.Add(new DsnRecipient(recipient.Address, result.Reply, result.RemoteHost, expiring));
            }

            switch (result.Outcome)
            {
                case DeliveryOutcome.Delivered:
                    recipients.Add(recipient with { Status = RecipientStatus.Delivered, LastReply = result.Reply, UpdatedAt = now });
                    DeliveryLog.Delivered(_logger, state.Id, recipient.Address, result.Reply);
                    DeliveryMetrics.Delivered(tenant, now - envelope.ReceivedAt);
                    break;
                case DeliveryOutcome.Bounced:
                    recipients.Add(recipient with { Status = RecipientStatus.Failed, LastReply = result.Reply, UpdatedAt = now });
                    DeliveryLog.Bounced(_logger, state.Id, recipient.Address, result.Reply);
                    DeliveryMetrics.Outcome(tenant, "bounced");
                    break;
                case DeliveryOutcome.Deferred when expired:
                    // RFC 5321 section 4.5.4.1: give up after the retry period; the 4xx reply stays as the reason (RFC 3464 status 4.4.7).
                    recipients.Add(recipient with { Status = RecipientStatus.Failed, LastReply = result.Reply, UpdatedAt = now });
                    DeliveryLog.Expired(_logger, state.Id, recipient.Address, attempts, result.Reply);
                    DeliveryMetrics.Outcome(tenant, "expired");
                    break;
                default:
                    recipients.Add(recipient with { LastReply = result.Reply, UpdatedAt = now });
                    DeliveryLog.Deferred(_logger, state.Id, recipient.Address, result.Reply, attempts, nextAttemptAt);
                    DeliveryMetrics.Outcome(tenant, "deferred");
                    break;
            }
        }

        return state with { Attempts = attempts, LastAttemptAt = now, NextAttemptAt = nextAttemptAt, Recipients = recipients };
    }
}
