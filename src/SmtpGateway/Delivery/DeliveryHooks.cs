using SmtpGateway.Identity;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery;

/// <summary>
/// What an outcome of our own delivery attempt means for the tenant that sent the mail (reputation, suppression).
/// Delivery owns this interface and only reports through it; Bounces implements it, so the dependency runs one way.
/// </summary>
public interface ITenantOutcomeSink
{
    /// <summary>Our own attempt ended for one recipient of an outbound message.</summary>
    /// <param name="tenant">The sending tenant.</param>
    /// <param name="recipient">The recipient.</param>
    /// <param name="outcome">What the attempt decided.</param>
    /// <param name="reply">The reply that decided it.</param>
    /// <param name="queueId">The message.</param>
    /// <param name="aboutRecipient">The reply answered this recipient's RCPT; only such a reply can suppress the address.</param>
    /// <returns>True when the recipient was added to the suppression list.</returns>
    bool OnAttempt(string tenant, string recipient, DeliveryOutcome outcome, string reply, string queueId, bool aboutRecipient = true);
}

/// <summary>
/// Where inbound mail addressed to a tenant's return paths (bounces, complaints) goes instead of the tenant's inbound
/// route. Delivery owns this interface (<see cref="TenantRouter"/> calls it); Bounces implements it.
/// </summary>
public interface IReturnPathMailbox
{
    /// <summary>True when <paramref name="recipient"/> is one of <paramref name="tenant"/>'s return paths.</summary>
    bool IsReturnPathAddress(TenantModel tenant, string recipient);

    /// <summary>Handles the reports; one result per recipient, in order.</summary>
    Task<IReadOnlyList<RecipientResult>> ProcessAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken);
}

/// <summary>The tenant's VERP return path for one recipient of one queued message (Envelope's ReturnPath.For).</summary>
public delegate string TenantReturnPath(string tenant, string bounceDomain, string queueId, string recipient);

/// <summary>
/// Envelope isolation hooks (issue #7): whether a message's tenant is paused (held), what each outcome does to the tenant
/// (reputation, suppression), and the return path each recipient was sent with (for the event log).
/// </summary>
public sealed record DeliveryHooks(Func<SpoolEnvelope, bool>? IsHeld = null, ITenantOutcomeSink? Outcomes = null, ReturnPathResolver? ReturnPaths = null)
{
    /// <summary>Whether the tenant is still paused; held messages are released when it says no.</summary>
    public Func<string, bool>? TenantPaused { get; init; }

    /// <summary>
    /// The full gateway's hooks. Only mail a tenant sent (outbound, non-null reverse-path, a tenant on the envelope) is
    /// held while the tenant is paused or gets a VERP return path: inbound mail and our own DSNs (null reverse-path)
    /// belong to no tenant's reputation, and a DSN must never get a return path that could bounce again.
    /// </summary>
    /// <param name="tenants">The current tenant snapshot (bounce domains).</param>
    /// <param name="returnPath">Makes a tenant's VERP return path.</param>
    /// <param name="tenantPaused">Whether a tenant's outbound queue is held.</param>
    /// <param name="outcomes">What each outcome does to the tenant.</param>
    public static DeliveryHooks ForTenants(Func<TenantSnapshot> tenants, TenantReturnPath returnPath, Func<string, bool> tenantPaused, ITenantOutcomeSink outcomes)
    {
        ArgumentNullException.ThrowIfNull(tenants);
        ArgumentNullException.ThrowIfNull(returnPath);
        ArgumentNullException.ThrowIfNull(tenantPaused);
        ReturnPathResolver resolver = (envelope, recipient) =>
            envelope.Inbound || envelope.MailFrom.Length == 0 || envelope.TenantId is not { } tenant
                || tenants().Find(tenant)?.BounceDomain is not { } bounceDomain
                ? envelope.MailFrom
                : returnPath(tenant, bounceDomain, envelope.Id, recipient);
        return new DeliveryHooks(
            IsHeld: envelope => !envelope.Inbound && envelope.MailFrom.Length > 0 && envelope.TenantId is { } t && tenantPaused(t),
            Outcomes: outcomes,
            ReturnPaths: resolver)
        {
            TenantPaused = tenantPaused,
        };
    }
}
