using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery;

/// <summary>Relays every message through the configured smarthost over pooled MailKit connections.</summary>
public sealed class SmarthostTransport : IDeliveryTransport, IAsyncDisposable
{
    const string DefaultTenant = "default";

    readonly SmarthostConfig _config;
    readonly ILogger _logger;
    readonly SmtpConnectionPool _pool;

    public SmarthostTransport(IOptions<GatewayConfig> options, TimeProvider time, ILogger<SmarthostTransport> logger)
        : this(options.Value.Delivery.Smarthost, options.Value.ServerName, time, logger)
    {
    }

    internal SmarthostTransport(SmarthostConfig config, string serverName, TimeProvider time, ILogger logger)
    {
        _config = config;
        _logger = logger;

        // RFC 5321 section 4.1.1.1: EHLO carries our fully-qualified name.
        _pool = new SmtpConnectionPool(config, config.HeloName ?? serverName, time, logger);
    }

    internal SmtpConnectionPool Pool => _pool;

    /// <inheritdoc />
    public async Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(recipients);
        var key = new SmtpPoolKey(message.Envelope.TenantId ?? DefaultTenant, _config.Host, _config.Port);

        PooledSmtpConnection connection;
        try
        {
            connection = await _pool.RentAsync(key, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            DeliveryLog.ConnectFailed(_logger, key.Host, key.Port, ex.Message);

            // RFC 3463 4.4.1: no answer from host (refused, unreachable, timeout, TLS failure before the first transaction).
            return recipients.Select(r => RecipientResult.FromReply(r, 451, $"4.4.1 Cannot connect to {key.Host}:{key.Port} ({ex.GetType().Name})")).ToArray();
        }

        var reusable = false;
        try
        {
            connection.Transactions++;
            var result = await connection.Client.SendSpooledAsync(message, recipients, cancellationToken).ConfigureAwait(false);
            reusable = result.Reusable;
            if (!result.Reusable)
                DeliveryLog.TransactionBroken(_logger, message.Envelope.Id, key.Host, key.Port, result.Results.FirstOrDefault().Reply ?? "");
            if (!result.Exact)
                DeliveryLog.RawFallback(_logger, message.Envelope.Id);
            return result.Results;
        }
        finally
        {
            // A cancelled or failed transaction leaves the connection in an unknown state: it is closed, not pooled.
            await _pool.ReturnAsync(connection, reusable).ConfigureAwait(false);
        }
    }

    public ValueTask DisposeAsync() => _pool.DisposeAsync();
}
