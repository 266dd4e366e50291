using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using MailKit.Security;
using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;
using SmtpGateway.Smtp;

namespace SmtpGateway.Delivery;

/// <summary>
/// Opens one SMTP session for a pool key: binds the tenant's source address (its egress identity), connects to each
/// address in turn until one answers, greets with the tenant's EHLO name and applies the TLS level:
/// <list type="bullet">
/// <item>Opportunistic: STARTTLS when offered, any certificate (RFC 7435); a failed handshake is retried once in
/// plaintext on the same address, since refusing would only push the mail to plaintext elsewhere;</item>
/// <item>Required: STARTTLS must be offered and succeed (any certificate), else 4.7.10 / 4.7.5; never plaintext;</item>
/// <item>Verify: as Required, and the certificate must chain to a trusted root (system roots plus
/// Delivery:Tls:TrustAnchorsPath) and match the MX host name (RFC 6125; RFC 7672 section 3.2.3 and RFC 8461
/// section 4.2 name the MX host as the reference identity).</item>
/// <item>Implicit: TLS from the first byte (RFC 8314 section 3.3, a smarthost on port 465), verified as for Verify.</item>
/// </list>
/// A next hop given by name (smarthost, Forward) is resolved once through <paramref name="destinations"/>, which refuses
/// loopback, private, link-local and metadata addresses unless allowed; the socket connects to a checked address only.
/// </summary>
/// <param name="path">The destination guard's path label for hops resolved here (smarthost or forward).</param>
/// <param name="commandTimeout">Delivery:CommandTimeout, the wait for each reply; null: its default.</param>
internal sealed class SmtpConnector(X509Certificate2Collection? trustAnchors, TimeProvider time, ILogger logger, DestinationPolicy destinations,
    string path = DestinationGuard.Smarthost, TimeSpan? commandTimeout = null)
{
    readonly int _timeoutMilliseconds = (int)(commandTimeout ?? new DeliveryConfig().CommandTimeout).TotalMilliseconds;

    /// <summary>Opens a session for the key, trying the addresses in order; throws <see cref="SmtpConnectException"/> when none works.</summary>
    public delegate Task<GatewaySmtpClient> ConnectFunc(SmtpPoolKey key, IReadOnlyList<IPAddress> addresses, TimeSpan connectTimeout, CancellationToken cancellationToken);

    public async Task<GatewaySmtpClient> ConnectAsync(SmtpPoolKey key, IReadOnlyList<IPAddress> addresses, TimeSpan connectTimeout, CancellationToken cancellationToken)
    {
        if (addresses.Count == 0)
        {
            addresses = await ResolveHostAsync(key, cancellationToken).ConfigureAwait(false);
        }

        // A socket bound to an IPv4 source cannot reach an IPv6 address, and vice versa.
        var usable = key.SourceAddress is { } source ? addresses.Where(a => a.AddressFamily == source.AddressFamily).ToList() : addresses.ToList();
        if (usable.Count == 0)
        {
            throw new SmtpConnectException(DeliveryReplies.NoAddressInFamily(key.Host));
        }

        SmtpConnectException? last = null;
        foreach (var address in usable)
        {
            try
            {
                return await ConnectOneAsync(key, address, key.Tls, connectTimeout, cancellationToken).ConfigureAwait(false);
            }
            catch (SmtpConnectException ex) when (ex.InnerException is SslHandshakeException or System.Security.Authentication.AuthenticationException && key.Tls == WireTls.Opportunistic)
            {
                // RFC 7435 section 3: opportunistic TLS that fails falls back to what would have been sent anyway.
                DeliveryLog.TlsFallback(logger, key.Host, address.ToString(), ex.Text);
                try
                {
                    return await ConnectOneAsync(key, address, WireTls.None, connectTimeout, cancellationToken).ConfigureAwait(false);
                }
                catch (SmtpConnectException plain)
                {
                    last = plain;
                }
            }
            catch (SmtpConnectException ex)
            {
                last = ex;
            }

            DeliveryLog.ConnectFailed(logger, key.Host, address.ToString(), key.Port, last.Text);
        }

        throw last ?? new SmtpConnectException(DeliveryReplies.NoAddress(key.Host));
    }

    async Task<GatewaySmtpClient> ConnectOneAsync(SmtpPoolKey key, IPAddress address, WireTls tls, TimeSpan connectTimeout, CancellationToken cancellationToken)
    {
        var peer = $"{key.Host}[{address}]:{key.Port}";
        string? certificateProblem = null;
        var client = new GatewaySmtpClient
        {
            LocalDomain = key.HeloName,
            Timeout = _timeoutMilliseconds,
            CheckCertificateRevocation = false,
            RemoteAddress = address,
        };
        client.ServerCertificateValidationCallback = tls is WireTls.Verify or WireTls.Implicit
            ? (_, certificate, chain, errors) => Validate(certificate, chain, errors, out certificateProblem)
            : static (_, _, _, _) => true;

        var options = tls switch
        {
            WireTls.None => SecureSocketOptions.None,
            WireTls.Opportunistic => SecureSocketOptions.StartTlsWhenAvailable,
            WireTls.Implicit => SecureSocketOptions.SslOnConnect,
            _ => SecureSocketOptions.StartTls,
        };

        var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using var timeout = new CancellationTokenSource(connectTimeout, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        try
        {
            if (key.SourceAddress is { } source)
            {
                socket.Bind(new IPEndPoint(source, 0));
            }

            await socket.ConnectAsync(new IPEndPoint(address, key.Port), linked.Token).ConfigureAwait(false);

            // The MX host name (not the address) is what TLS checks the certificate against.
            await client.ConnectAsync(new OutboundSocketStream(socket, time), key.Host, key.Port, options, linked.Token).ConfigureAwait(false);
            client.Socket = socket;
            return client;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            Dispose(client, socket);
            throw;
        }
        catch (Exception ex)
        {
            Dispose(client, socket);
            throw ex switch
            {
                OperationCanceledException => new SmtpConnectException(DeliveryReplies.NoGreeting(peer, connectTimeout), ex),
                SocketException s => new SmtpConnectException(DeliveryReplies.CannotConnect(peer, s.SocketErrorCode.ToString()), ex),

                // MailKit's way of saying STARTTLS was not offered (StartTls options).
                NotSupportedException => new SmtpConnectException(DeliveryReplies.StartTlsNotOffered(peer, tls.ToString()), ex),

                // The handshake failed, or a certificate did not verify (the callback said why).
                SslHandshakeException or System.Security.Authentication.AuthenticationException => new SmtpConnectException(
                    certificateProblem is not null
                        ? DeliveryReplies.CertificateNotVerified(peer, key.Host, certificateProblem)
                        : DeliveryReplies.TlsHandshakeFailed(peer), ex),
                MailKit.Net.Smtp.SmtpCommandException c => new SmtpConnectException(DeliveryReplies.SessionRefused(peer, DeliveryOutcomes.FormatReply((int)c.StatusCode, c.Message)), ex),
                _ => new SmtpConnectException(DeliveryReplies.SessionFailed(peer, ex.GetType().Name), ex),
            };
        }
    }

    bool Validate(X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors, out string? problem)
    {
        problem = null;
        if (certificate is null || errors.HasFlag(SslPolicyErrors.RemoteCertificateNotAvailable))
        {
            problem = "no certificate";
            return false;
        }

        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch))
        {
            problem = "name mismatch";
            return false;
        }

        if (!errors.HasFlag(SslPolicyErrors.RemoteCertificateChainErrors))
        {
            return true;
        }

        if (TrustAnchors.ChainsTo(trustAnchors, certificate, chain))
        {
            return true;
        }

        problem = "untrusted chain";
        return false;
    }

    static void Dispose(GatewaySmtpClient client, Socket socket)
    {
        client.Dispose();
        socket.Dispose();
    }

    async Task<IReadOnlyList<IPAddress>> ResolveHostAsync(SmtpPoolKey key, CancellationToken cancellationToken)
    {
        try
        {
            return await destinations.ResolveAsync(path, key.Tenant, key.Host, key.Port, cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException ex)
        {
            throw new SmtpConnectException(DeliveryReplies.CannotResolve(key.Host, ex.SocketErrorCode.ToString()), ex);
        }
        catch (DestinationRefusedException ex)
        {
            throw new SmtpConnectException(ex.Reply, ex);
        }
    }

    /// <summary>Loads the PEM trust anchors for Verify, or null when none are configured.</summary>
    public static X509Certificate2Collection? LoadTrustAnchors(string? path)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            return null;
        }

        var collection = new X509Certificate2Collection();
        collection.ImportFromPemFile(path);
        return collection;
    }
}
