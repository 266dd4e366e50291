using System.Net;
using Microsoft.Extensions.Logging;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Policy;
using SmtpGateway.Smtp;

namespace SmtpGateway.Submission.Stages;

/// <summary>
/// Who the client is: a tenant by AUTH token, or by client network on the legacy relay listener. The only place that sets
/// <see cref="SubmissionContext.Tenant"/>; later stages take the tenant from the context, never from the message.
/// </summary>
internal sealed class IdentityStage(IdentityServices identity, TenantRateLimits rates, Auditor audit, ILogger logger)
{
    public IdentityConfig Config => identity.Config;

    public TenantSnapshot CurrentTenants() => identity.Tenants();

    /// <summary>
    /// The tenant's limits as configured now: the counters are shared by all its sessions, so a reload applies to sessions
    /// already open (the snapshot the conversation began with answers only for a tenant the reload removed).
    /// </summary>
    public TenantLimits LimitsOf(SubmissionContext context, string tenant) =>
        (identity.Tenants().Find(tenant) ?? context.Tenants.Find(tenant))?.Limits ?? TenantLimits.Defaults;

    /// <summary>Legacy relay: the client network names the tenant (issue #3), audited as such.</summary>
    public void MatchNetwork(SubmissionContext context)
    {
        if (context.Tenants.FindByAddress(context.ClientAddress) is { } legacy)
        {
            if (rates.TryOpenSession(legacy.Id, LimitsOf(context, legacy.Id)) is not { } slot)
            {
                // Over the tenant's MaxSessions: refused before the banner, rather than let an idle session wait for MAIL.
                audit.Write(context, AuditActions.LegacyRelay, "refused", "tenant session limit", legacy.Id, context.ClientAddress.ToString(), crossTenant: false);
                context.ConnectRefusal = SmtpReplies.TenantSessionsAtConnect;
                return;
            }

            context.HoldSessionSlot(slot);
            context.Tenant = new TenantSession(legacy.Id, TenantSessionKind.Network, null, []);
            audit.Write(context, AuditActions.LegacyRelay, "ok", "client network", legacy.Id, context.ClientAddress.ToString(), crossTenant: false);
        }
    }

    /// <summary>True when an agent token or client network already chose the tenant (AUTH is then refused).</summary>
    public static bool HasIdentity(SubmissionContext context) => context.Tenant is not null;

    public bool IsBlocked(IPAddress client) => identity.Throttle.IsBlocked(client);

    public async ValueTask<AuthVerdict> AuthenticateAsync(SubmissionContext context, string mechanism, string authorizationIdentity, string user, string password, CancellationToken cancellationToken)
    {
        var result = await identity.Authenticator.AuthenticateAsync(
            new AuthRequest(context.SessionId, context.ClientAddress, context.Listener, mechanism, authorizationIdentity, user, password, Auditor.ChannelName(context.Channel)), cancellationToken).ConfigureAwait(false);
        if (result.Succeeded)
        {
            if (rates.TryOpenSession(result.Session!.TenantId, LimitsOf(context, result.Session.TenantId)) is not { } slot)
            {
                // Good credentials, too many sessions: RFC 4954 section 6 temporary failure, and no strike against the address.
                return new AuthVerdict(false, TimeSpan.Zero, false, Temporary: true, Refusal: SmtpReplies.TenantSessionsAtAuth);
            }

            context.HoldSessionSlot(slot);
            context.Tenant = result.Session;
            SubmissionLog.Authenticated(logger, context.SessionId, mechanism, context.Tenant!.TenantId);
            return new AuthVerdict(true, TimeSpan.Zero, false);
        }

        if (result.Temporary)
        {
            // Our outage, not the client's guess: no strike against its address, and the answer says "try again".
            SubmissionLog.AuthUnavailable(logger, context.SessionId, mechanism, result.FailureReason ?? "");
            return new AuthVerdict(false, TimeSpan.Zero, false, Temporary: true);
        }

        SubmissionLog.AuthFailed(logger, context.SessionId, mechanism, context.ClientAddress);

        // Slow down guessing: each failure past the threshold waits longer before the (uniform) answer.
        var delay = identity.Throttle.RecordFailure(context.ClientAddress);
        return new AuthVerdict(false, delay, identity.Throttle.IsBlocked(context.ClientAddress));
    }

    /// <summary>Issue #3: a revoked or expired token is refused again at the next MAIL FROM of a session that used it.</summary>
    public SmtpReply? Recheck(SubmissionContext context, string subject)
    {
        if (context.Tenant?.Token is not { } token)
        {
            return null;
        }

        var check = identity.StillValid(token);
        if (check.Valid)
        {
            return null;
        }

        if (check.Temporary)
        {
            // Revocations cannot be read now (issue 12, fail closed): no mail until they can, but the session keeps its AUTH.
            audit.Write(context, AuditActions.TokenCheck, "error", check.Reason, context.Tenant.TenantId, subject, crossTenant: false);
            return SmtpReplies.TokenCheckUnavailable;
        }

        audit.Write(context, AuditActions.TokenCheck, "refused", check.Reason, context.Tenant.TenantId, subject, crossTenant: false);
        context.Tenant = null;
        context.HoldSessionSlot(null);
        return SmtpReplies.TokenNoLongerValid;
    }
}
