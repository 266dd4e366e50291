using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;
using SmtpGateway.Spool;
using SmtpGateway.Vault;

namespace SmtpGateway.Delivery;

/// <summary>Delivers to each recipient domain's mail exchangers (RFC 5321 section 5), or to a tenant's own smarthost.</summary>
public sealed class MxTransport : IDeliveryTransport, IOutboundTransport, IAsyncDisposable
{
    readonly OutboundDelivery _engine;

    /// <param name="config">Gateway configuration (MX settings, limits, trust anchors).</param>
    /// <param name="resolver">MX resolver.</param>
    /// <param name="egress">Tenants' egress (a tenant's own smarthost replaces MX for its mail).</param>
    /// <param name="time">Clock.</param>
    /// <param name="logger">Delivery logger.</param>
    /// <param name="connector">Opens sessions; tests pass their own.</param>
    /// <param name="credentials">The vault, for tenants whose smarthost names a credential; null when none is registered.</param>
    internal MxTransport(GatewayConfig config, IMxResolver resolver, EgressDirectory egress, TimeProvider time, ILogger logger,
        SmtpConnector.ConnectFunc? connector = null, IUpstreamCredentials? credentials = null)
    {
        var trust = SmtpConnector.LoadTrustAnchors(config.Delivery.Tls.TrustAnchorsPath);
        connector ??= new SmtpConnector(trust, time, logger, DestinationPolicy.For(config.Delivery, logger), DestinationGuard.Smarthost, config.Delivery.CommandTimeout).ConnectAsync;
        _engine = new OutboundDelivery(null, config.Delivery.Mx, resolver, egress, config.Delivery, connector, time, logger, credentials);
    }

    internal SmtpConnectionPool Pool => _engine.Pool;

    OutboundDelivery IOutboundTransport.Engine => _engine;

    internal OutboundDelivery Engine => _engine;

    /// <inheritdoc />
    public Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken) =>
        _engine.DeliverAsync(message, recipients, cancellationToken);

    public ValueTask DisposeAsync() => _engine.DisposeAsync();
}
