using System.Net;
using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;
using SmtpGateway.Vault;

namespace SmtpGateway.Delivery;

/// <summary>One next hop to try: host name (pool key, TLS reference identity), port, addresses (empty: resolve the name when connecting).</summary>
internal sealed record NextHop(string Host, int Port, IReadOnlyList<IPAddress> Addresses);

/// <summary>The reverse-path (MAIL FROM) for one recipient of a spooled message: the tenant's VERP return path, or the envelope sender.</summary>
public delegate string ReturnPathResolver(SpoolEnvelope envelope, string recipient);

/// <summary>
/// The SMTP delivery engine behind <see cref="SmarthostTransport"/> and <see cref="MxTransport"/>.
/// For each message it takes the tenant's egress (EHLO name, source address, own smarthost, TLS policy) from the
/// spooled envelope's tenant, splits the recipients by route (one group per recipient domain for MX, one group for a
/// smarthost), and runs one transaction per group over a pooled connection keyed by (tenant, egress identity, host).
/// <list type="bullet">
/// <item>Hops are tried in order (MX preference, RFC 5321 section 5.1); the next hop is tried when no session could be
/// opened with this one (every address refused or timed out, a 421 or other non-220 greeting, a TLS policy failure),
/// and when the session was lost under the transaction (421 or dropped connection: RFC 5321 section 3.8), in which
/// case the whole transaction goes to the next hop.</item>
/// <item>A reply to MAIL, RCPT or the final dot is the answer for those recipients: 4yz is deferred (only those
/// recipients are retried later), 5yz bounced, 2yz delivered.</item>
/// <item>Hosts that keep failing for a tenant are skipped for a while by that tenant only (<see cref="DestinationBackoff"/>,
/// per egress identity: tenant, source address, host, port).</item>
/// <item>A tenant smarthost with a vault credential gets AUTH (RFC 4954) on each new connection, with the newest usable
/// version; the version is part of the pool key. A refusal defers (never bounces: the credential is the tenant's
/// configuration, not the recipient's), and a version still in its rotation grace window is tried once on a fresh
/// connection.</item>
/// </list>
/// </summary>
internal sealed class OutboundDelivery : IAsyncDisposable
{
    const string DefaultTenant = "default";

    readonly SmarthostConfig? _smarthost;
    readonly MxConfig _mx;
    readonly IMxResolver? _resolver;
    readonly EgressDirectory _egress;
    readonly DestinationBackoff _backoff;
    readonly SmtpConnectionPool _pool;
    readonly UpstreamAuthenticator _auth;
    readonly ILogger _logger;

    /// <param name="smarthost">The gateway's smarthost (Mode = Smarthost), or null for MX routing.</param>
    /// <param name="mx">MX settings (port, limits).</param>
    /// <param name="resolver">MX resolver; required when <paramref name="smarthost"/> is null.</param>
    /// <param name="egress">Tenants' egress settings.</param>
    /// <param name="delivery">Delivery settings (tenant cap, backoff).</param>
    /// <param name="connector">Opens sessions; tests pass their own.</param>
    /// <param name="time">Clock.</param>
    /// <param name="logger">Delivery logger.</param>
    /// <param name="credentials">The tenants' upstream credentials (the vault); null when none is registered, and then a tenant smarthost with a credential is deferred.</param>
    public OutboundDelivery(SmarthostConfig? smarthost, MxConfig mx, IMxResolver? resolver, EgressDirectory egress, DeliveryConfig delivery,
        SmtpConnector.ConnectFunc connector, TimeProvider time, ILogger logger, IUpstreamCredentials? credentials = null)
    {
        if (smarthost is null && resolver is null)
        {
            throw new ArgumentException("MX routing needs a resolver.", nameof(resolver));
        }

        _smarthost = smarthost;
        _mx = mx;
        _resolver = resolver;
        _egress = egress;
        _backoff = new DestinationBackoff(delivery.Backoff, time, logger);
        _pool = new SmtpConnectionPool(delivery.MaxConnectionsPerTenant, time, logger, connector);
        _auth = new UpstreamAuthenticator(credentials, time, logger);
        _logger = logger;
    }

    internal SmtpConnectionPool Pool => _pool;

    internal DestinationBackoff Backoff => _backoff;

    internal UpstreamAuthenticator Auth => _auth;

    /// <summary>
    /// Per-recipient return paths (issue #7). A VERP return path names one recipient, so recipients with different return
    /// paths go in separate transactions — on the same pooled connection, one after another (RFC 5321 section 3.3 allows
    /// any number of transactions per session).
    /// </summary>
    internal ReturnPathResolver? ReturnPaths { get; set; }

    public async Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(recipients);
        var tenant = message.Envelope.TenantId ?? DefaultTenant;
        var egress = _egress.For(tenant);
        var results = new RecipientResult[recipients.Count];

        // A tenant's own smarthost, else the gateway's: every recipient in one transaction.
        var smarthost = egress.Smarthost is { } own
            ? (own.Host, own.Port, Tls: OwnSmarthostTls(own, egress, recipients), Limits: SmarthostLimits(_smarthost ?? new SmarthostConfig()),
                Auth: own.Credential is null ? null : own)
            : _smarthost is { } gateway
                ? (gateway.Host, gateway.Port, Tls: Strictest(FromStartTls(gateway.StartTls), egress, recipients), Limits: SmarthostLimits(gateway), Auth: null)
                : default((string Host, int Port, WireTls Tls, DestinationLimits Limits, TenantSmarthost? Auth)?);
        if (smarthost is { } hop)
        {
            foreach (var (mailFrom, indices) in ByReturnPath(message.Envelope, recipients, Enumerable.Range(0, recipients.Count), results))
            {
                await AttemptAsync(message, recipients, indices, mailFrom, [new NextHop(hop.Host, hop.Port, [])], hop.Limits, hop.Tls, tenant, egress, results,
                    hop.Auth, cancellationToken).ConfigureAwait(false);
            }

            return results;
        }

        // MX: one route and one transaction per recipient domain (RFC 5321 section 5.1).
        var mxLimits = new DestinationLimits(_mx.MaxConnectionsPerHost, _mx.MaxMessagesPerConnection, _mx.IdleTimeout, _mx.ConnectTimeout);
        foreach (var group in Enumerable.Range(0, recipients.Count).GroupBy(i => DomainName.OfAddress(recipients[i]) ?? "", StringComparer.Ordinal))
        {
            var indices = group.ToArray();
            if (group.Key.Length == 0)
            {
                Fill(results, recipients, indices, DeliveryReplies.DomainNotRoutable, null);
                continue;
            }

            var route = await _resolver!.ResolveAsync(group.Key, cancellationToken).ConfigureAwait(false);
            if (route.Failed)
            {
                DeliveryLog.RouteFailed(_logger, message.Envelope.Id, group.Key, route.FailureCode, route.FailureText ?? "");
                Fill(results, recipients, indices, route.FailureCode, route.FailureText, null);
                continue;
            }

            var hops = route.Hosts.Select(h => new NextHop(h.Name, _mx.Port, h.Addresses)).ToArray();
            foreach (var (mailFrom, batch) in ByReturnPath(message.Envelope, recipients, indices, results))
            {
                await AttemptAsync(message, recipients, batch, mailFrom, hops, mxLimits, ToWire(egress.Tls.For(group.Key)), tenant, egress, results, auth: null, cancellationToken)
                    .ConfigureAwait(false);
            }
        }

        return results;
    }

    /// <summary>Recipients grouped by their return path, in first-seen order; one group with the envelope sender when there is no resolver.</summary>
    /// <remarks>
    /// A return path that cannot be made (the tenant's key file unreadable, its HSM token unavailable) defers those recipients with 451 4.3.0: never
    /// sent with the client's sender instead (bounces would escape attribution), and never an exception that would leave
    /// the attempt unrecorded (the message would then neither progress nor expire).
    /// </remarks>
    IEnumerable<(string MailFrom, int[] Indices)> ByReturnPath(SpoolEnvelope envelope, IReadOnlyList<string> recipients, IEnumerable<int> indices,
        RecipientResult[] results)
    {
        var resolver = ReturnPaths;
        if (resolver is null)
        {
            return [(envelope.MailFrom, indices.ToArray())];
        }

        var groups = new List<(string, List<int>)>();
        foreach (var i in indices)
        {
            string mailFrom;
            try
            {
                mailFrom = resolver(envelope, recipients[i]);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException or Hsm.HsmException)
            {
                DeliveryLog.ReturnPathFailed(_logger, envelope.Id, ex);
                results[i] = RecipientResult.FromReply(recipients[i], DeliveryReplies.ReturnPathUnavailable);
                continue;
            }

            var group = groups.FindIndex(g => g.Item1 == mailFrom);
            if (group < 0)
            {
                groups.Add((mailFrom, [i]));
            }
            else
            {
                groups[group].Item2.Add(i);
            }
        }

        return groups.Select(g => (g.Item1, g.Item2.ToArray()));
    }

    async Task AttemptAsync(SpooledMessage message, IReadOnlyList<string> all, int[] indices, string mailFrom, IReadOnlyList<NextHop> hops, DestinationLimits limits, WireTls tls,
        string tenant, TenantEgress egress, RecipientResult[] results, TenantSmarthost? auth, CancellationToken cancellationToken)
    {
        var recipients = indices.Select(i => all[i]).ToArray();
        IReadOnlyList<RecipientResult>? lost = null;
        (SmtpReply Reply, string? Host)? failure = null;
        var staleReplaced = false;
        for (var h = 0; h < hops.Count; h++)
        {
            var hop = hops[h];
            var key = new SmtpPoolKey(tenant, egress.HeloName, egress.SourceAddress, hop.Host, hop.Port, tls);
            if (_backoff.IsBackedOff(key.Identity, out var until))
            {
                failure ??= (DeliveryReplies.HopBackedOff(hop.Host, hop.Port, until), null);
                continue;
            }

            var rented = auth is null
                ? await RentAsync(key, hop, limits, cancellationToken).ConfigureAwait(false)
                : await RentAuthenticatedAsync(key, hop, limits, auth, message.Envelope.Id, cancellationToken).ConfigureAwait(false);
            if (rented.Connection is not { } connection)
            {
                failure = (rented.Failure!, rented.Host);
                lost = null;
                continue;
            }

            var reusable = false;
            GatewaySmtpClient.TransactionResult result;
            string peer = connection.Peer, tlsDescription = connection.Client.TlsDescription ?? "";
            bool retryStale;
            try
            {
                var reused = connection.Transactions++ > 0;
                result = await connection.Client.SendSpooledAsync(message, recipients, mailFrom, cancellationToken).ConfigureAwait(false);
                reusable = result.Reusable;

                // A pooled session can end while idle, after the pool's check (the peer's idle timeout racing it): the
                // MAIL then meets EOF or a reset before any reply. That says nothing about the host and nothing was sent,
                // so the transaction is tried once more at once on a new session, and only a second loss counts towards
                // backoff. A reply (a 421 to MAIL is a host saying "later") or a loss after one is handled as before.
                retryStale = result.LostBeforeReply && reused && !staleReplaced;

                // Recorded before the slot goes back: a worker waiting for it checks the backoff again (ClaimProbe).
                if (!result.SessionLost)
                {
                    _backoff.Success(key.Identity);
                }
                else if (!retryStale)
                {
                    _backoff.Failure(key.Identity);
                }
            }
            finally
            {
                // A cancelled or failed transaction leaves the connection in an unknown state: it is closed, not pooled.
                await _pool.ReturnAsync(connection, reusable).ConfigureAwait(false);
            }

            if (!result.Exact)
            {
                DeliveryLog.RawFallback(_logger, message.Envelope.Id);
            }

            var tagged = result.Results.Select(r => r with { RemoteHost = peer, Tls = tlsDescription.Length == 0 ? null : tlsDescription, ReturnPath = mailFrom }).ToArray();
            if (retryStale)
            {
                DeliveryLog.StaleSessionReplaced(_logger, message.Envelope.Id, peer, tagged.FirstOrDefault().Reply ?? "");
                staleReplaced = true;
                h--;
                continue;
            }

            if (result.SessionLost)
            {
                // RFC 5321 section 3.8: the session ended under the transaction; nothing it said binds the recipients.
                DeliveryLog.TransactionBroken(_logger, message.Envelope.Id, peer, tagged.FirstOrDefault().Reply ?? "");
                lost = tagged;
                failure = null;
                continue;
            }

            for (var i = 0; i < indices.Length; i++)
            {
                results[indices[i]] = tagged[i];
            }

            return;
        }

        if (lost is not null)
        {
            for (var i = 0; i < indices.Length; i++)
            {
                results[indices[i]] = lost[i];
            }

            return;
        }

        var (reply, host) = failure ?? (DeliveryReplies.NoNextHop, null);
        Fill(results, all, indices, reply, host);
    }

    /// <summary>A connection, or why none could be had (and from which host, for the result's RemoteHost).</summary>
    readonly record struct Rented(PooledSmtpConnection? Connection, SmtpReply? Failure, string? Host);

    async Task<Rented> RentAsync(SmtpPoolKey key, NextHop hop, DestinationLimits limits, CancellationToken cancellationToken)
    {
        try
        {
            // The backoff is checked again once the slot is held: workers that queued for it before a backoff started are
            // skipped without connecting, and after a backoff only one of them probes. A connect failure is recorded before
            // the slot is released, so the next waiter sees it.
            var connection = await _pool.RentAsync(key, hop.Addresses, limits, cancellationToken,
                backedOffUntil: () => _backoff.ClaimProbe(key.Identity, out var until) ? until : null,
                connectFailed: ex =>
                {
                    // A TLS policy failure is about this tenant's policy, not the host's health: no backoff at all.
                    if (!ex.Text.StartsWith("4.7.", StringComparison.Ordinal))
                    {
                        _backoff.Failure(key.Identity);
                    }
                }).ConfigureAwait(false);
            return new Rented(connection, null, null);
        }
        catch (SmtpConnectException ex) when (!cancellationToken.IsCancellationRequested)
        {
            return new Rented(null, ex.Reply, $"{hop.Host}:{hop.Port}");
        }
        catch (DestinationBackedOffException ex)
        {
            return new Rented(null, DeliveryReplies.HopBackedOff(hop.Host, hop.Port, ex.Until), null);
        }
    }

    /// <summary>
    /// A connection authenticated with the tenant's credential: an idle one of the same version, else a new one that
    /// AUTHs now. When the server refuses the version, the next usable one (the previous version, in its rotation grace
    /// window) is tried once, on a fresh connection: at most two AUTH attempts per delivery attempt.
    /// </summary>
    async Task<Rented> RentAuthenticatedAsync(SmtpPoolKey key, NextHop hop, DestinationLimits limits, TenantSmarthost smarthost, string queueId,
        CancellationToken cancellationToken)
    {
        var name = smarthost.Credential!;
        var (versions, unusable) = _auth.Candidates(key.Tenant, name);
        if (unusable is not null)
        {
            DeliveryLog.UpstreamAuthFailed(_logger, queueId, key.Tenant, DeliveryOutcomes.FormatReply(unusable));
            return new Rented(null, unusable, null);
        }

        var last = default(Rented);
        for (var i = 0; i < Math.Min(2, versions.Count); i++)
        {
            var version = versions[i];
            if (i > 0)
            {
                DeliveryLog.UpstreamAuthFallback(_logger, queueId, key.Tenant, UpstreamAuthenticator.Name(version));
            }

            var rented = await RentAsync(key with { Credential = new PoolCredential(version.Name, version.Version) }, hop, limits, cancellationToken)
                .ConfigureAwait(false);
            if (rented.Connection is not { } connection || connection.Client.IsAuthenticated)
            {
                // No session at all (not the credential's fault), or a pooled one already authenticated with this version.
                return rented;
            }

            UpstreamAuthResult result;
            try
            {
                result = await _auth.AuthenticateAsync(connection.Client, connection.Peer, version, smarthost.AuthMechanism, queueId, cancellationToken)
                    .ConfigureAwait(false);
            }
            catch
            {
                await _pool.ReturnAsync(connection, reusable: false).ConfigureAwait(false);
                throw;
            }

            if (result.Status == UpstreamAuthStatus.Authenticated)
            {
                // This version works: idle connections of older ones drain now.
                await _pool.CloseIdleAsync(k => k.Credential is { } c && c.Name == name && c.Version < version.Version && (k with { Credential = null }) == key,
                    "superseded credential version").ConfigureAwait(false);
                return rented;
            }

            // Never pooled: an unauthenticated session must not be lent as an authenticated one.
            await _pool.ReturnAsync(connection, reusable: false).ConfigureAwait(false);
            last = new Rented(null, result.Reply, connection.Peer);
            if (result.Status != UpstreamAuthStatus.Refused)
            {
                break;
            }
        }

        return last;
    }

    static void Fill(RecipientResult[] results, IReadOnlyList<string> recipients, int[] indices, SmtpReply reply, string? host) =>
        Fill(results, recipients, indices, reply.Code, DeliveryOutcomes.ReplyText(reply), host);

    static void Fill(RecipientResult[] results, IReadOnlyList<string> recipients, int[] indices, int code, string? text, string? host)
    {
        foreach (var i in indices)
        {
            results[i] = RecipientResult.FromReply(recipients[i], code, text ?? "") with { RemoteHost = host };
        }
    }

    static DestinationLimits SmarthostLimits(SmarthostConfig c) => new(c.MaxConnections, c.MaxMessagesPerConnection, c.IdleTimeout, c.ConnectTimeout);

    static WireTls FromStartTls(StartTlsMode mode) => mode switch
    {
        StartTlsMode.None => WireTls.None,

        // Historic meaning of Smarthost:StartTls = Required: STARTTLS with a certificate that validates for the host.
        StartTlsMode.Required => WireTls.Verify,
        _ => WireTls.Opportunistic,
    };

    /// <summary>
    /// A tenant's own smarthost: implicit TLS when configured (RFC 8314 section 3.3), else its STARTTLS policy raised by
    /// the recipients' domains. With a credential the certificate is always verified: a Required policy becomes Verify,
    /// since an unverified peer could be anyone collecting passwords.
    /// </summary>
    static WireTls OwnSmarthostTls(TenantSmarthost own, TenantEgress egress, IReadOnlyList<string> recipients)
    {
        if (own.ImplicitTls)
        {
            return WireTls.Implicit;
        }

        var level = Strictest(ToWire(own.Tls ?? egress.Tls.Default), egress, recipients);
        return own.Credential is not null && level < WireTls.Verify ? WireTls.Verify : level;
    }

    static WireTls ToWire(TlsPolicy policy) => policy switch
    {
        TlsPolicy.Required => WireTls.Required,
        TlsPolicy.Verify => WireTls.Verify,
        _ => WireTls.Opportunistic,
    };

    /// <summary>A smarthost carries mail for every recipient domain of the message: a domain whose policy demands TLS raises the hop's level.</summary>
    static WireTls Strictest(WireTls hop, TenantEgress egress, IReadOnlyList<string> recipients)
    {
        var level = hop;
        foreach (var recipient in recipients)
        {
            if (DomainName.OfAddress(recipient) is not { } domain)
            {
                continue;
            }

            var demanded = egress.Tls.For(domain);
            if (demanded != TlsPolicy.Opportunistic && ToWire(demanded) > level)
            {
                level = ToWire(demanded);
            }
        }

        return level;
    }

    public ValueTask DisposeAsync() => _pool.DisposeAsync();
}
