using SmtpGateway.Configuration;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery.Inbound;

public sealed partial class InboundRouter
{
    /// <summary>Bound on the polite QUIT after the transaction.</summary>
    static readonly TimeSpan QuitTimeout = TimeSpan.FromSeconds(5);

    static readonly Lazy<string> MachineHeloName = new(DefaultHeloName);

    /// <summary>
    /// One SMTP transaction with the tenant's server on a fresh connection (inbound volume per tenant is small; a pool
    /// would only keep sockets open to servers we rarely talk to). It reuses the outbound machinery: SmtpConnector for
    /// connect, greeting and the STARTTLS policy, GatewaySmtpClient for the transaction, which sends the spooled bytes
    /// unchanged (RawMessageCarrier), keeps the envelope sender (the null sender stays MAIL FROM:&lt;&gt;, RFC 5321
    /// section 4.5.5) and reads one reply per RCPT (section 3.3), so 4yz → Deferred and 5yz → Bounced per recipient.
    /// Never AUTH: the tenant's server receives this mail as it would from any MX.
    /// </summary>
    async Task<IReadOnlyList<RecipientResult>> ForwardAsync(SpooledMessage message, IReadOnlyList<string> recipients, string tenant, InboundForwardConfig config, CancellationToken cancellationToken)
    {
        var id = message.Envelope.Id;
        if (string.IsNullOrWhiteSpace(config.Host) || config.Port is < 1 or > 65535)
        {
            InboundLog.ForwardUnreachable(_logger, id, tenant, config.Host ?? "", config.Port, "Forward:Host or Forward:Port is not configured");
            return recipients.Select(r => RecipientResult.FromReply(r, DeliveryReplies.ForwardNotConfigured)).ToArray();
        }

        var tls = config.StartTls switch
        {
            TlsPolicy.Required => WireTls.Required,
            TlsPolicy.Verify => WireTls.Verify,
            _ => WireTls.Opportunistic,
        };
        var helo = string.IsNullOrWhiteSpace(config.HeloName) ? MachineHeloName.Value : config.HeloName;
        var key = new SmtpPoolKey(tenant, helo, SourceAddress: null, config.Host, config.Port, tls);
        var connectTimeout = config.ConnectTimeout > TimeSpan.Zero ? config.ConnectTimeout : TimeSpan.FromSeconds(30);

        GatewaySmtpClient client;
        try
        {
            client = await _connector.ConnectAsync(key, [], connectTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (SmtpConnectException ex)
        {
            // 4.4.1 no answer / refused, 4.4.3 DNS, 4.7.x TLS policy: all transient (the connector says so with 451).
            InboundLog.ForwardUnreachable(_logger, id, tenant, config.Host, config.Port, ex.Text);
            return recipients.Select(r => RecipientResult.FromReply(r, ex.Reply)).ToArray();
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested && ex is not OperationCanceledException)
        {
            var reply = DeliveryReplies.CannotConnect($"{config.Host}:{config.Port}", ex.GetType().Name);
            InboundLog.ForwardUnreachable(_logger, id, tenant, config.Host, config.Port, DeliveryOutcomes.ReplyText(reply));
            return recipients.Select(r => RecipientResult.FromReply(r, reply)).ToArray();
        }

        var peer = client.RemoteAddress is { } address ? $"{config.Host}[{address}]:{config.Port}" : $"{config.Host}:{config.Port}";
        try
        {
            var transaction = await client.SendSpooledAsync(message, recipients, cancellationToken).ConfigureAwait(false);
            if (!transaction.Exact)
            {
                InboundLog.ForwardNotExact(_logger, id, tenant);
            }

            InboundLog.Forwarded(_logger, id, tenant, peer);
            var tlsDescription = client.TlsDescription;
            return transaction.Results.Select(r => r with { RemoteHost = peer, Tls = tlsDescription }).ToArray();
        }
        finally
        {
            await QuitAsync(client).ConfigureAwait(false);
        }
    }

    async Task QuitAsync(GatewaySmtpClient client)
    {
        try
        {
            if (client.IsConnected)
            {
                // QUIT (RFC 5321 section 4.1.1.10) lets the server close its side cleanly; bounded, since the result is already known.
                using var timeout = new CancellationTokenSource(QuitTimeout, _time);
                await client.DisconnectAsync(true, timeout.Token).ConfigureAwait(false);
            }
        }
        catch (Exception)
        {
            // Best effort: the outcome is decided and Dispose releases the socket either way.
        }
        finally
        {
            client.Dispose();
        }
    }
}
