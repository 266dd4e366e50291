using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Spool;
using SmtpGateway.Vault;

namespace SmtpGateway.Delivery;

/// <summary>Relays every message through the configured smarthost (or the tenant's own) over pooled MailKit connections.</summary>
public sealed class SmarthostTransport : IDeliveryTransport, IOutboundTransport, IAsyncDisposable
{
    readonly OutboundDelivery _engine;

    /// <param name="config">Gateway configuration (smarthost, limits, trust anchors).</param>
    /// <param name="egress">Tenants' egress.</param>
    /// <param name="time">Clock.</param>
    /// <param name="logger">Delivery logger.</param>
    /// <param name="credentials">The vault, for tenants whose smarthost names a credential; null when none is registered.</param>
    internal SmarthostTransport(GatewayConfig config, EgressDirectory egress, TimeProvider time, ILogger logger, IUpstreamCredentials? credentials = null)
    {
        var trust = SmtpConnector.LoadTrustAnchors(config.Delivery.Tls.TrustAnchorsPath);
        var connector = new SmtpConnector(trust, time, logger, DestinationPolicy.For(config.Delivery, logger), DestinationGuard.Smarthost, config.Delivery.CommandTimeout);
        _engine = new OutboundDelivery(config.Delivery.Smarthost, config.Delivery.Mx, resolver: null, egress, config.Delivery, connector.ConnectAsync, time, logger,
            credentials);
    }

    /// <summary>For tests: the gateway's smarthost only, no tenant settings.</summary>
    internal SmarthostTransport(SmarthostConfig config, string serverName, TimeProvider time, ILogger logger)
        : this(new GatewayConfig { ServerName = serverName, Delivery = { Mode = DeliveryMode.Smarthost, Smarthost = config } },
            new EgressDirectory(() => TenantSnapshot.Empty, config.HeloName ?? serverName, null), time, logger)
    {
    }

    internal SmtpConnectionPool Pool => _engine.Pool;

    OutboundDelivery IOutboundTransport.Engine => _engine;

    internal OutboundDelivery Engine => _engine;

    /// <inheritdoc />
    public Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken) =>
        _engine.DeliverAsync(message, recipients, cancellationToken);

    public ValueTask DisposeAsync() => _engine.DisposeAsync();
}
