using SmtpGateway.Identity;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery;

/// <summary>
/// The transport delivery workers call. Outbound mail (sent by a tenant) goes to the configured outbound transport (MX,
/// smarthost or drop). Inbound mail (unauthenticated, for a tenant's domains) never leaves that way: recipients at the
/// tenant's return paths go to the <see cref="IReturnPathMailbox"/> (Bounces), every other recipient to the tenant's
/// inbound route — so a message addressed to a tenant cannot be relayed back out through MX, and a report is never
/// forwarded as mail.
/// </summary>
public sealed class TenantRouter : IDeliveryTransport
{
    readonly IDeliveryTransport _outbound;
    readonly IDeliveryTransport _inbound;
    readonly IReturnPathMailbox _bounces;
    readonly Func<TenantSnapshot> _tenants;

    public TenantRouter(IDeliveryTransport outbound, IDeliveryTransport inbound, IReturnPathMailbox bounces, Func<TenantSnapshot> tenants)
    {
        _outbound = outbound;
        _inbound = inbound;
        _bounces = bounces;
        _tenants = tenants;
    }

    public IDeliveryTransport Outbound => _outbound;

    public async Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(recipients);
        if (!message.Envelope.Inbound)
        {
            return await _outbound.DeliverAsync(message, recipients, cancellationToken).ConfigureAwait(false);
        }

        var tenant = message.Envelope.TenantId is { } id ? _tenants().Find(id) : null;
        var reports = new List<int>();
        var mail = new List<int>();
        for (var i = 0; i < recipients.Count; i++)
        {
            (tenant is not null && _bounces.IsReturnPathAddress(tenant, recipients[i]) ? reports : mail).Add(i);
        }

        var results = new RecipientResult[recipients.Count];
        if (reports.Count > 0)
        {
            Place(results, recipients, reports, await _bounces.ProcessAsync(message, [.. reports.Select(i => recipients[i])], cancellationToken).ConfigureAwait(false));
        }

        if (mail.Count > 0)
        {
            Place(results, recipients, mail, await _inbound.DeliverAsync(message, [.. mail.Select(i => recipients[i])], cancellationToken).ConfigureAwait(false));
        }

        return results;
    }

    static void Place(RecipientResult[] results, IReadOnlyList<string> recipients, List<int> indices, IReadOnlyList<RecipientResult> partial)
    {
        for (var i = 0; i < indices.Count; i++)
        {
            results[indices[i]] = i < partial.Count ? partial[i] : RecipientResult.FromReply(recipients[indices[i]], DeliveryReplies.NoResult);
        }
    }
}
