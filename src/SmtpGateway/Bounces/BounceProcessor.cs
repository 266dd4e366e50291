using Microsoft.Extensions.Logging;
using SmtpGateway.Delivery;
using SmtpGateway.Envelope;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;

namespace SmtpGateway.Bounces;

/// <summary>
/// What happens to the tenant after an outcome: reputation counters, the bounce-rate pause, and suppression of recipients
/// that hard-bounced or complained. Fed by our own delivery attempts (synchronous 5xx) and by reports that arrive at
/// return paths (<see cref="BounceProcessor"/>), so both kinds of bounce count the same.
/// </summary>
public sealed class TenantOutcomes : ITenantOutcomeSink
{
    readonly SuppressionList _suppression;
    readonly ReputationTracker _reputation;

    public TenantOutcomes(SuppressionList suppression, ReputationTracker reputation)
    {
        _suppression = suppression;
        _reputation = reputation;
    }

    public SuppressionList Suppression => _suppression;

    public ReputationTracker Reputation => _reputation;

    /// <summary>
    /// A status that says the address itself is bad (RFC 3463): 5.1.x addressing (no such user, bad domain), 5.2.1 mailbox
    /// disabled, 5.4.4 unroutable, and 5.0.0 (the generic permanent failure most MTAs use for "user unknown"). Not suppressed:
    /// 5.2.2 mailbox full, 5.7.x policy (a content or reputation block says nothing about the address), 5.3.x/5.6.x —
    /// the next message to that address may well be delivered.
    /// </summary>
    public static bool IsAddressFailure(string? status) =>
        status is not null && (status.StartsWith("5.1.", StringComparison.Ordinal) || status is "5.2.1" or "5.4.4" or "5.0.0");

    /// <summary>Our own attempt ended for one recipient of an outbound message.</summary>
    /// <param name="tenant">The sending tenant.</param>
    /// <param name="recipient">The recipient.</param>
    /// <param name="outcome">What the attempt decided.</param>
    /// <param name="reply">The reply that decided it.</param>
    /// <param name="queueId">The message.</param>
    /// <param name="aboutRecipient">The reply answered this recipient's RCPT; only such a reply can suppress the address.</param>
    /// <returns>True when the recipient was added to the suppression list.</returns>
    public bool OnAttempt(string tenant, string recipient, DeliveryOutcome outcome, string reply, string queueId, bool aboutRecipient = true)
    {
        switch (outcome)
        {
            case DeliveryOutcome.Delivered:
                _reputation.Record(tenant, ReputationOutcome.Delivered);
                return false;
            case DeliveryOutcome.Deferred:
                _reputation.Record(tenant, ReputationOutcome.Deferred);
                return false;
            default:
                _reputation.Record(tenant, ReputationOutcome.Bounced);
                var status = StatusOf(reply);
                return aboutRecipient && IsAddressFailure(status) && Suppress(tenant, recipient, "hard-bounce", $"{status} in reply to {queueId}");
        }
    }

    /// <summary>A report about one recipient arrived; returns whether the recipient was suppressed.</summary>
    public bool OnReport(string tenant, BounceFinding finding, string queueId)
    {
        switch (finding.Kind)
        {
            case BounceKind.HardBounce:
                _reputation.Record(tenant, ReputationOutcome.Bounced);
                return finding.Recipient is { } r && IsAddressFailure(finding.Status ?? "5.0.0")
                    && Suppress(tenant, r, "hard-bounce", $"{finding.Status ?? "5.0.0"} report on {queueId}");
            case BounceKind.Complaint:
                // RFC 5965: the recipient said it does not want this mail. Never mail them again without the operator.
                _reputation.Record(tenant, ReputationOutcome.Complained);
                return finding.Recipient is { } c && Suppress(tenant, c, "complaint", $"{finding.FeedbackType ?? "abuse"} report on {queueId}");
            case BounceKind.SoftBounce:
                _reputation.Record(tenant, ReputationOutcome.Deferred);
                return false;
            default:
                return false;
        }
    }

    bool Suppress(string tenant, string recipient, string reason, string detail)
    {
        if (!_suppression.Add(tenant, recipient, reason, detail))
        {
            return false;
        }

        BounceMetrics.Suppressed(tenant, reason);
        return true;
    }

    /// <summary>"550 5.1.1 No such user" → "5.1.1"; RecipientResult replies carry the enhanced code after the basic one.</summary>
    static string? StatusOf(string reply)
    {
        var parts = reply.Split(' ', 3, StringSplitOptions.RemoveEmptyEntries);
        foreach (var part in parts.Take(2))
        {
            if (part.Length >= 5 && part[1] == '.' && char.IsAsciiDigit(part[0]))
            {
                return part;
            }
        }

        // No enhanced code: only the classic "no such mailbox" replies to RCPT (RFC 5321 section 4.2.2: 550, 551, 553) count
        // as the generic permanent failure; anything else (554 transaction failed...) says nothing about the address.
        return parts.Length > 0 && parts[0] is "550" or "551" or "553" ? "5.0.0" : null;
    }
}

/// <summary>
/// Handles mail received at a tenant's return paths: verifies the tag again (the key may have been retired meanwhile),
/// parses the report with MimeKit (<see cref="BounceParser"/>), attributes it to the tenant, original message and
/// recipient, and records it: an event in the tenant's own event log, reputation, suppression. The report itself is then
/// done with (Delivered): it was addressed to the gateway, not to a mailbox.
/// </summary>
public sealed partial class BounceProcessor : IReturnPathMailbox
{
    readonly ReturnPath _returnPaths;
    readonly TenantOutcomes _outcomes;
    readonly Action<DeliveryEvent>? _events;
    readonly TimeProvider _time;
    readonly ILogger _logger;

    public BounceProcessor(ReturnPath returnPaths, TenantOutcomes outcomes, Action<DeliveryEvent>? events, TimeProvider time, ILogger logger)
    {
        _returnPaths = returnPaths;
        _outcomes = outcomes;
        _events = events;
        _time = time;
        _logger = logger;
    }

    /// <summary>True when <paramref name="recipient"/> is addressed to <paramref name="tenant"/>'s bounce domain with a return-path local part.</summary>
    public static bool IsReturnPathAddress(TenantModel tenant, string recipient)
    {
        var at = recipient.LastIndexOf('@');
        return at > 0 && tenant.BounceDomain is { } bounce
            && DomainName.Normalize(recipient[(at + 1)..]) == bounce
            && recipient.StartsWith(ReturnPath.Prefix, StringComparison.OrdinalIgnoreCase);
    }

    bool IReturnPathMailbox.IsReturnPathAddress(TenantModel tenant, string recipient) => IsReturnPathAddress(tenant, recipient);

    /// <summary>
    /// Processes <paramref name="message"/> for its return-path recipients; one result per recipient. The report is parsed
    /// once, whatever the number of return paths it was sent to, and each (message, recipient) is counted at most once:
    /// otherwise one message to the same return path a hundred times over (or the same report replayed) would count a
    /// hundred bounces and could pause a tenant on an outsider's say-so.
    /// </summary>
    public async Task<IReadOnlyList<RecipientResult>> ProcessAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken)
    {
        var tenant = message.Envelope.TenantId;
        var results = new RecipientResult[recipients.Count];
        var tags = new Dictionary<string, VerpTag>(StringComparer.OrdinalIgnoreCase);
        try
        {
            for (var i = 0; i < recipients.Count; i++)
            {
                var recipient = recipients[i];
                var local = recipient[..recipient.LastIndexOf('@')];
                if (tags.ContainsKey(local))
                {
                    results[i] = RecipientResult.FromReply(recipient, DeliveryReplies.ReportProcessed);
                    continue;
                }

                var tag = tenant is null ? null : _returnPaths.Verify(tenant, local);
                if (tag is null)
                {
                    // Accepted at RCPT, invalid now (key retired in between): nothing to attribute; do not bounce a bounce.
                    Log.Unattributable(_logger, message.Envelope.Id, "tag no longer valid");
                    results[i] = RecipientResult.FromReply(recipient, DeliveryReplies.ReportDiscarded);
                    continue;
                }

                tags[local] = tag;
                results[i] = RecipientResult.FromReply(recipient, DeliveryReplies.ReportProcessed);
            }

            if (tags.Count > 0)
            {
                IReadOnlyList<BounceFinding> findings;
                var content = message.OpenContent();
                await using (content.ConfigureAwait(false))
                {
                    // MimeKit parses synchronously; the parser reads at most 5 MiB of it.
                    findings = BounceParser.Parse(content, address => tags.Values.Any(t => _returnPaths.IsRecipient(t, address)));
                }

                cancellationToken.ThrowIfCancellationRequested();
                foreach (var tag in tags.Values)
                {
                    Record(message, tag, [.. findings.Where(f => f.Recipient is null || _returnPaths.IsRecipient(tag, f.Recipient))]);
                }
            }
        }
        catch (HsmException ex)
        {
            // The tenant's token cannot check tags now. A genuine report must not be taken for a forgery and dropped, so
            // the whole message is deferred and comes back when the token answers; a report recorded in part before the
            // failure is not counted twice then (FirstReport).
            Log.Deferred(_logger, message.Envelope.Id, ex.Message);
            return [.. recipients.Select(r => RecipientResult.FromReply(r, DeliveryReplies.ReportDeferred))];
        }

        return results;
    }

    void Record(SpooledMessage report, VerpTag tag, IReadOnlyList<BounceFinding> findings)
    {
        // Only a report that names the recipient the tag was made for counts against the tenant (reputation, suppression):
        // a report that names nobody we can recognise is recorded as an event and nothing more.
        var finding = findings.FirstOrDefault(f => f.Recipient is not null && f.Kind != BounceKind.Unknown);
        if (finding is null)
        {
            var anything = findings.FirstOrDefault(f => f.Kind != BounceKind.Unknown);
            Log.Unattributable(_logger, report.Envelope.Id, findings.Count == 0 ? "not a report" : anything is null ? "report states nothing usable" : "report names no recipient of ours");
            BounceMetrics.Report(tag.Tenant, "unrecognized-report");
            _events?.Invoke(Event(report, tag, "unrecognized-report", anything, anything is null ? "no bounce or complaint found" : $"{anything.Kind} without a recognisable recipient", null));
            return;
        }

        if (!FirstReport(tag, finding.Kind))
        {
            Log.Duplicate(_logger, report.Envelope.Id, tag.Tenant, tag.QueueId);
            BounceMetrics.Report(tag.Tenant, "duplicate-report");
            return;
        }

        var suppressed = _outcomes.OnReport(tag.Tenant, finding, tag.QueueId);
        var name = finding.Kind switch
        {
            BounceKind.HardBounce => "bounced",
            BounceKind.SoftBounce => "soft-bounced",
            BounceKind.Complaint => "complained",
            BounceKind.Delivered => "delivery-report",
            _ => "unrecognized-report",
        };
        BounceMetrics.Report(tag.Tenant, name);
        var reply = string.Join(' ', new[] { finding.Status, finding.Diagnostic }.Where(s => !string.IsNullOrEmpty(s)));
        Log.Attributed(_logger, report.Envelope.Id, tag.Tenant, tag.QueueId, name, finding.Recipient is not null, suppressed);
        _events?.Invoke(Event(report, tag, name, finding, reply.Length == 0 ? finding.Format : reply, suppressed));
    }

    /// <summary>
    /// Reports already counted, by (tenant, queue id, recipient fingerprint, kind): a delayed DSN and then a failure for
    /// the same message both count, the same report twice does not. Bounded in memory (a restart forgets it, which at
    /// worst lets one replay count once more); past <see cref="MaxRemembered"/> the oldest half is forgotten.
    /// </summary>
    bool FirstReport(VerpTag tag, BounceKind kind)
    {
        var key = $"{tag.Tenant}\0{tag.QueueId}\0{tag.RecipientHash}\0{kind}";
        var now = _time.GetUtcNow().UtcTicks;
        if (!_seen.TryAdd(key, now))
        {
            return false;
        }

        if (_seen.Count > MaxRemembered)
        {
            var cutoff = _seen.Values.Order().ElementAt(_seen.Count / 2);
            foreach (var (k, at) in _seen)
            {
                if (at < cutoff)
                {
                    _seen.TryRemove(k, out _);
                }
            }
        }

        return true;
    }

    internal const int MaxRemembered = 200_000;
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> _seen = new(StringComparer.Ordinal);

    DeliveryEvent Event(SpooledMessage report, VerpTag tag, string name, BounceFinding? finding, string reply, bool? suppressed) => new()
    {
        Time = _time.GetUtcNow(),
        Event = name,
        Id = tag.QueueId,
        Tenant = tag.Tenant,
        From = report.Envelope.MailFrom,
        Recipient = finding?.Recipient ?? "",
        Reply = reply,
        Host = finding?.ReportingMta,
        Attempt = 0,
        Source = "report",
        ReportId = report.Envelope.Id,
        FeedbackType = finding?.FeedbackType,
        Suppressed = suppressed,
    };

    static partial class Log
    {
        [LoggerMessage(EventId = Diagnostics.EventIds.Bounces + 0, Level = LogLevel.Information,
            Message = "Report {ReportId} for tenant {TenantId}, message {QueueId}: {Kind} (recipient identified: {RecipientFound}, suppressed: {Suppressed})")]
        public static partial void Attributed(ILogger logger, string reportId, string tenantId, string queueId, string kind, bool recipientFound, bool suppressed);

        [LoggerMessage(EventId = Diagnostics.EventIds.Bounces + 1, Level = LogLevel.Warning, Message = "Report {ReportId} could not be attributed: {Reason}")]
        public static partial void Unattributable(ILogger logger, string reportId, string reason);

        [LoggerMessage(EventId = Diagnostics.EventIds.Bounces + 2, Level = LogLevel.Warning, Message = "Report {ReportId} for tenant {TenantId}, message {QueueId} repeats one already counted; ignored")]
        public static partial void Duplicate(ILogger logger, string reportId, string tenantId, string queueId);

        [LoggerMessage(EventId = Diagnostics.EventIds.Bounces + 3, Level = LogLevel.Warning, Message = "Report {ReportId} deferred: the tenant's HSM token cannot check return paths now ({Reason})")]
        public static partial void Deferred(ILogger logger, string reportId, string reason);
    }
}
