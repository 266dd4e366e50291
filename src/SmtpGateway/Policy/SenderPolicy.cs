using SmtpGateway.Identity;
using SmtpGateway.Listener;

namespace SmtpGateway.Policy;

/// <summary>A rule's answer: accept (Reply null) or a reply from the catalogue, with what the audit log needs.</summary>
public readonly record struct PolicyDecision(SmtpReply? Reply, string? Reason = null, bool CrossTenant = false, string? OtherTenant = null)
{
    public static PolicyDecision Accept => default;

    public bool Accepted => Reply is null;
}

/// <summary>
/// Pure isolation rules over (session, envelope, tenant snapshot). No I/O: the Listener gathers the facts and
/// applies the decision; tests drive every row of the two-tenant matrix without sockets.
/// </summary>
public static class SenderPolicy
{
    public static readonly SmtpReply SenderNotOwned = new(550, "5.7.1", "Sender address is not authorized for this account");
    public static readonly SmtpReply HeaderFromNotOwned = new(550, "5.7.1", "From header address is not authorized for this account");
    public static readonly SmtpReply HeaderFromMissing = new(550, "5.7.1", "Message needs exactly one From header with an address");
    public static readonly SmtpReply NullSenderRefused = new(550, "5.7.1", "Null sender is not allowed for submission");
    public static readonly SmtpReply TokenNoLongerValid = new(530, "5.7.0", "Authentication required: session credentials expired or revoked");
    public static readonly SmtpReply OtherTenantRecipients = new(452, "4.5.3", "Recipients for another domain group must be sent in a separate transaction");

    /// <summary>Issue #3 "Sender binding" for MAIL FROM. Unauthenticated sessions (inbound) are judged at RCPT.</summary>
    public static PolicyDecision MailFrom(TenantSession? session, string address, TenantSnapshot tenants)
    {
        if (session is null)
        {
            return PolicyDecision.Accept;
        }

        if (address.Length == 0)
        {
            return new PolicyDecision(NullSenderRefused, "null sender");
        }

        return Owned(session, address, tenants, SenderNotOwned);
    }

    /// <summary>Every address in the From header must pass the same test as MAIL FROM (RFC 5322 section 3.6.2).</summary>
    public static PolicyDecision HeaderFrom(TenantSession session, IReadOnlyList<string>? fromAddresses, TenantSnapshot tenants)
    {
        if (fromAddresses is null || fromAddresses.Count == 0)
        {
            return new PolicyDecision(HeaderFromMissing, "no usable From header");
        }

        foreach (var address in fromAddresses)
        {
            var decision = Owned(session, address, tenants, HeaderFromNotOwned);
            if (!decision.Accepted)
            {
                return decision;
            }
        }

        return PolicyDecision.Accept;
    }

    /// <summary>
    /// Relay control. A tenant session may send anywhere. Anyone else may only reach a tenant's own domains (inbound
    /// mail), with the classic open-relay tricks refused: quoted or routed local parts ("@", "%", "!"), address
    /// literals, and (by the grammar) source routes and trailing dots. One transaction serves one tenant.
    /// </summary>
    public static PolicyDecision Recipient(TenantSession? session, SmtpPath recipient, TenantSnapshot tenants, string? transactionTenant, out string? recipientTenant)
    {
        recipientTenant = session?.TenantId;
        if (session is not null)
        {
            return PolicyDecision.Accept;
        }

        var local = recipient.LocalPart;
        if (local.StartsWith('"') || local.IndexOfAny(['@', '%', '!']) >= 0)
        {
            return new PolicyDecision(SmtpReplies.RelayDenied, "routing characters in local part");
        }

        if (recipient.Domain.StartsWith('['))
        {
            return new PolicyDecision(SmtpReplies.RelayDenied, "address literal recipient");
        }

        var domain = DomainName.Normalize(recipient.Domain);
        var tenant = tenants.FindByDomain(domain);
        if (tenant is null || !tenant.ReceivesFor(domain!))
        {
            return new PolicyDecision(SmtpReplies.RelayDenied, "recipient domain is not a tenant domain");
        }

        if (transactionTenant is not null && transactionTenant != tenant.Id)
        {
            return new PolicyDecision(OtherTenantRecipients, "recipients of two tenants in one transaction");
        }

        recipientTenant = tenant.Id;
        return PolicyDecision.Accept;
    }

    static PolicyDecision Owned(TenantSession session, string address, TenantSnapshot tenants, SmtpReply refusal)
    {
        var at = address.LastIndexOf('@');
        var domain = at < 0 ? null : DomainName.Normalize(address[(at + 1)..]);
        var tenant = tenants.Find(session.TenantId);
        if (domain is null || tenant is null || !tenant.OwnsSendingDomain(domain))
        {
            var owner = tenants.FindByDomain(domain);
            var cross = owner is not null && owner.Id != session.TenantId;
            return new PolicyDecision(refusal, cross ? $"domain belongs to tenant '{owner!.Id}'" : "domain not owned by tenant", cross, owner?.Id);
        }

        if (session.SenderScope.Count > 0)
        {
            var local = address[..at];
            var inScope = session.SenderScope.Any(s => s.Contains('@', StringComparison.Ordinal)
                ? string.Equals(s, $"{local}@{domain}", StringComparison.OrdinalIgnoreCase)
                : s == domain);
            if (!inScope)
            {
                return new PolicyDecision(refusal, "outside the token's sender scope");
            }
        }

        return PolicyDecision.Accept;
    }
}
