using SmtpGateway.Identity;
using SmtpGateway.Smtp;

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
    /// <summary>RFC 5321 section 4.5.1: every domain that receives mail must accept its postmaster (RFC 2142: abuse too).</summary>
    static readonly string[] RoleMailboxes = ["postmaster", "abuse"];

    /// <summary>Issue #3 "Sender binding" for MAIL FROM. Unauthenticated sessions (inbound) are judged at RCPT.</summary>
    public static PolicyDecision MailFrom(TenantSession? session, string address, TenantSnapshot tenants)
    {
        if (session is null)
        {
            return PolicyDecision.Accept;
        }

        if (address.Length == 0)
        {
            return new PolicyDecision(SmtpReplies.NullSenderRefused, "null sender");
        }

        return Owned(session, address, tenants, SmtpReplies.SenderNotOwned);
    }

    /// <summary>Every address in the From header must pass the same test as MAIL FROM (RFC 5322 section 3.6.2).</summary>
    public static PolicyDecision HeaderFrom(TenantSession session, IReadOnlyList<string>? fromAddresses, TenantSnapshot tenants)
    {
        if (fromAddresses is null || fromAddresses.Count == 0)
        {
            return new PolicyDecision(SmtpReplies.HeaderFromMissing, "no usable From header");
        }

        foreach (var address in fromAddresses)
        {
            var decision = Owned(session, address, tenants, SmtpReplies.HeaderFromNotOwned);
            if (!decision.Accepted)
            {
                return decision;
            }
        }

        return PolicyDecision.Accept;
    }

    /// <summary>Sender, Resent-From and Resent-Sender name who sent the message too: each address must be the tenant's.</summary>
    public static PolicyDecision OtherSenders(TenantSession session, IReadOnlyList<string> addresses, TenantSnapshot tenants)
    {
        foreach (var address in addresses)
        {
            var decision = Owned(session, address, tenants, SmtpReplies.OtherSenderNotOwned);
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
    /// <param name="session">The session's tenant, or null for an unauthenticated (inbound) session.</param>
    /// <param name="recipient">The RCPT path.</param>
    /// <param name="tenants">The session's tenant snapshot.</param>
    /// <param name="transactionTenant">Tenant of the recipients accepted so far in this transaction.</param>
    /// <param name="suppressed">Fact: the recipient is on the session tenant's suppression list.</param>
    /// <param name="isReturnPath">Fact-finder: (tenant, local part) is a valid return path of that tenant (a MAC check).</param>
    /// <param name="recipientTenant">The tenant the recipient belongs to.</param>
    public static PolicyDecision Recipient(TenantSession? session, SmtpPath recipient, TenantSnapshot tenants, string? transactionTenant, bool suppressed,
        Func<string, string, bool>? isReturnPath, out string? recipientTenant)
    {
        recipientTenant = session?.TenantId;
        if (session is not null)
        {
            return suppressed ? new PolicyDecision(SmtpReplies.Suppressed, "suppressed recipient") : PolicyDecision.Accept;
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

        // The bounce domain receives only what answers our own mail: return paths with a valid tag (and its role mailboxes).
        // Anything else there is a forgery or a guess, refused before DATA so that nobody can make us attribute a bounce.
        // When the bounce domain is also a sending domain, its other mailboxes are ordinary inbound mail; only the
        // return-path shape ("b+...") is reserved there.
        if (domain == tenant.BounceDomain)
        {
            var tagShaped = local.StartsWith(Envelope.ReturnPath.Prefix, StringComparison.OrdinalIgnoreCase);
            var ordinary = !tagShaped && (tenant.Domains.Contains(domain!) || RoleMailboxes.Contains(local, StringComparer.OrdinalIgnoreCase));
            if (!ordinary && (isReturnPath is null || !isReturnPath(tenant.Id, local)))
            {
                return new PolicyDecision(SmtpReplies.UnknownReturnPath, "unknown or forged return path");
            }
        }

        if (transactionTenant is not null && transactionTenant != tenant.Id)
        {
            return new PolicyDecision(SmtpReplies.OtherTenantRecipients, "recipients of two tenants in one transaction");
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
