using Microsoft.Extensions.Logging;
using SmtpGateway.Audit;
using SmtpGateway.Policy;
using SmtpGateway.Smtp;

namespace SmtpGateway.Submission.Stages;

/// <summary>
/// Gathers the facts (suppression lists, return-path tags, header From) and applies the pure rules of
/// <see cref="SenderPolicy"/>; audits every refusal, cross-tenant ones marked as such.
/// </summary>
internal sealed class PolicyStage(IdentityStage identity, TenantRateLimits rates, long gatewayMaxMessageSize, EnvelopeServices? envelope, Auditor audit, ILogger logger)
{
    /// <param name="declaredSize">MAIL SIZE= (RFC 1870), or the length of a message built in code; null when not declared.</param>
    public Verdict Mail(SubmissionContext context, SmtpPath path, bool smtpUtf8, bool eightBit, long? declaredSize = null)
    {
        if (identity.Recheck(context, path.Address) is { } expired)
        {
            return Verdict.Refuse(expired);
        }

        var decision = SenderPolicy.MailFrom(context.Tenant, path.Address, context.Tenants);
        if (!decision.Accepted)
        {
            audit.Write(context, AuditActions.SendAs, "refused", decision.Reason, context.Tenant?.TenantId, path.Address, decision.CrossTenant);
            return Verdict.Refuse(decision.Reply!);
        }

        // Issue 12: the tenant's own limits; inbound mail (no tenant) counts against none. Size first, so a message that
        // could never be taken does not use up a permit.
        if (context.Tenant is { } tenant)
        {
            var limits = identity.LimitsOf(context, tenant.TenantId);
            if (declaredSize > limits.MaxMessageSize)
            {
                rates.Refused(tenant.TenantId, TenantLimit.Size);
                return Verdict.Refuse(SmtpReplies.TenantMessageTooBig);
            }

            if (!rates.TryAcquireMessage(tenant.TenantId, limits))
            {
                return Verdict.Answer(SmtpReplies.TenantMessageRate);
            }
        }

        context.BeginTransaction(path, smtpUtf8, eightBit);
        return Verdict.Accept(SmtpReplies.SenderOk);
    }

    public Verdict Recipient(SubmissionContext context, SmtpPath path)
    {
        var tenant = context.Tenant;
        bool suppressed;
        var throttled = false;
        PolicyDecision decision;
        string? recipientTenant;
        try
        {
            suppressed = tenant is not null && envelope is not null && envelope.Suppression.Contains(tenant.TenantId, path.Address);
            decision = SenderPolicy.Recipient(tenant, path, context.Tenants, context.TransactionTenant, suppressed, (t, local) => IsReturnPath(context, t, local, ref throttled), out recipientTenant);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or Hsm.HsmException)
        {
            // The suppression list or a return-path key file cannot be read, or the tenant's HSM token cannot check a tag:
            // local trouble, so try again later (RFC 3463 4.3.0); a genuine bounce must not be refused as forged.
            SubmissionLog.EnvelopeStateUnreadable(logger, context.SessionId, ex);
            return Verdict.Answer(SmtpReplies.LocalError);
        }

        if (throttled)
        {
            // Too many forged or stale tags from this address lately: no MAC is computed for it until they age out.
            return Verdict.Answer(SmtpReplies.ReturnPathChecksThrottled);
        }

        if (suppressed && !decision.Accepted)
        {
            // Issue #7: the refusal is an event in the tenant's own event log, so its app learns why the address is skipped.
            // Not a protocol error: a list with many suppressed addresses must not exhaust the session's error budget.
            envelope!.SuppressedRecipient?.Invoke(tenant!.TenantId, path.Address, context.SessionId);
            return Verdict.Answer(decision.Reply!);
        }

        if (!decision.Accepted)
        {
            if (decision.Reply!.IsTransient)
            {
                return Verdict.Answer(decision.Reply);
            }

            SubmissionLog.RelayDenied(logger, context.SessionId, context.ClientAddress);
            audit.Write(context, AuditActions.Relay, "refused", decision.Reason, null, path.Address, crossTenant: false);
            return Verdict.Refuse(decision.Reply);
        }

        // Counted only for a recipient that would be taken: a refused one costs the tenant nothing.
        if (tenant is not null && !rates.TryAcquireRecipient(tenant.TenantId, identity.LimitsOf(context, tenant.TenantId)))
        {
            return Verdict.Answer(SmtpReplies.TenantRecipientRate);
        }

        context.AddRecipient(path.Address, recipientTenant);
        return Verdict.Accept(SmtpReplies.RecipientOk);
    }

    /// <summary>The most octets this conversation's message may have: the gateway's limit, or its tenant's when lower.</summary>
    public long MaxMessageSize(SubmissionContext context) =>
        context.Tenant is { } tenant ? Math.Min(gatewayMaxMessageSize, identity.LimitsOf(context, tenant.TenantId).MaxMessageSize) : gatewayMaxMessageSize;

    /// <summary>DATA ran over <see cref="MaxMessageSize"/>: the tenant's reply (and refusal count) when its limit was the one reached.</summary>
    public SmtpReply TooBig(SubmissionContext context, long maxSize)
    {
        if (context.Tenant is { } tenant && maxSize < gatewayMaxMessageSize)
        {
            rates.Refused(tenant.TenantId, TenantLimit.Size);
            return SmtpReplies.TenantMessageTooBig;
        }

        return SmtpReplies.MessageTooBig;
    }

    /// <summary>Sender binding for the header From (issue #3), and Sender/Resent-* with it: checked before anything is queued.</summary>
    public SmtpReply? HeaderFrom(SubmissionContext context, Envelope.HeaderSection headers, out string? author)
    {
        author = null;
        if (context.Tenant is not { } tenant)
        {
            return null;
        }

        var addresses = Envelope.HeaderFrom.Addresses(headers, out var otherSenders);
        var decision = SenderPolicy.HeaderFrom(tenant, addresses, context.Tenants);
        if (decision.Accepted)
        {
            decision = SenderPolicy.OtherSenders(tenant, otherSenders, context.Tenants);
            if (decision.Accepted)
            {
                author = addresses![0];
                return null;
            }

            audit.Write(context, AuditActions.HeaderFrom, "refused", decision.Reason, tenant.TenantId, string.Join(",", otherSenders), decision.CrossTenant);
            return decision.Reply;
        }

        audit.Write(context, AuditActions.HeaderFrom, "refused", decision.Reason, tenant.TenantId, addresses is null ? "(none)" : string.Join(",", addresses), decision.CrossTenant);
        return decision.Reply;
    }

    /// <summary>
    /// The tag check of an unauthenticated RCPT to a bounce domain, which costs one HSM MAC unless the tag is known: a
    /// client address with too many failed checks in the window is not checked at all (<paramref name="throttled"/>).
    /// </summary>
    bool IsReturnPath(SubmissionContext context, string tenant, string local, ref bool throttled)
    {
        if (envelope is null)
        {
            return false;
        }

        var limiter = envelope.ReturnPathThrottle;
        if (limiter is not null && limiter.IsBlocked(context.ClientAddress))
        {
            throttled = true;
            return false;
        }

        if (envelope.ReturnPaths.Verify(tenant, local) is not null)
        {
            return true;
        }

        if (limiter is not null)
        {
            limiter.RecordFailure(context.ClientAddress);
            if (limiter.IsBlocked(context.ClientAddress))
            {
                // Logged once per episode: the address gets no further checks (nor failures, nor logs) until its count ages out.
                ReturnPathLog.ChecksThrottled(logger, context.SessionId, context.ClientAddress, tenant);
            }
        }

        return false;
    }
}
