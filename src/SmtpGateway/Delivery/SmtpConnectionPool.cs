using System.Net;
using Microsoft.Extensions.Logging;
using SmtpGateway.Smtp;

namespace SmtpGateway.Delivery;

/// <summary>How STARTTLS is used on one connection (a <see cref="Configuration.TlsPolicy"/>, or none at all for a smarthost configured so).</summary>
internal enum WireTls
{
    /// <summary>Never STARTTLS (Smarthost:StartTls = None).</summary>
    None,

    /// <summary>STARTTLS when offered, any certificate; a failed handshake is retried in plaintext (RFC 7435).</summary>
    Opportunistic,

    /// <summary>STARTTLS must succeed; any certificate. Never plaintext.</summary>
    Required,

    /// <summary>STARTTLS must succeed with a certificate that chains to a trusted root and names the host. Never plaintext.</summary>
    Verify,

    /// <summary>TLS from connect (RFC 8314 section 3.3, port 465 style), certificate verified as for <see cref="Verify"/>. Strictest of all.</summary>
    Implicit,
}

/// <summary>The vault credential (name, version) a connection authenticated with; part of the pool key so that versions never share connections.</summary>
internal readonly record struct PoolCredential(string Name, int Version)
{
    public override string ToString() => $"{Name}#v{Version}";
}

/// <summary>
/// Where a pooled connection goes and for whom: (tenant, egress identity, destination host), plus the TLS level it was
/// opened under, so that a plaintext connection is never lent to a transaction whose policy requires TLS.
/// Connections are never shared between tenants (isolation promise 5 in ARCHITECTURE.md): the tenant is part of the key.
/// A connection that authenticated (RFC 4954) carries its credential name and version in the key: after a rotation new
/// connections use the new version, and one authenticated with the old version is never lent for the new one.
/// </summary>
internal readonly record struct SmtpPoolKey(string Tenant, string HeloName, IPAddress? SourceAddress, string Host, int Port, WireTls Tls,
    PoolCredential? Credential = null)
{
    /// <summary>The egress identity (tenant, source address, host, port) whose connection cap this key counts against.</summary>
    public EgressIdentity Identity => new(Tenant, SourceAddress, Host, Port);

    public override string ToString() =>
        $"{Tenant}/{HeloName}/{SourceAddress?.ToString() ?? "*"} -> {Host}:{Port} ({Tls}{(Credential is { } c ? $", AUTH {c}" : "")})";
}

/// <summary>Limits of one destination as one egress identity sees it: the first rent for the identity fixes them.</summary>
internal sealed record DestinationLimits(int MaxConnections, int MaxMessagesPerConnection, TimeSpan IdleTimeout, TimeSpan ConnectTimeout);

/// <summary>A connection lent out by <see cref="SmtpConnectionPool"/>.</summary>
internal sealed class PooledSmtpConnection(GatewaySmtpClient client, SmtpPoolKey key, DateTimeOffset openedAt)
{
    public GatewaySmtpClient Client { get; } = client;

    public SmtpPoolKey Key { get; } = key;

    public DateTimeOffset OpenedAt { get; } = openedAt;

    public DateTimeOffset LastUsed { get; set; } = openedAt;

    /// <summary>Transactions run on this connection (counted towards MaxMessagesPerConnection).</summary>
    public int Transactions { get; set; }

    /// <summary>"host[address]:port" for logs and events.</summary>
    public string Peer => Client.RemoteAddress is { } address ? $"{Key.Host}[{address}]:{Key.Port}" : $"{Key.Host}:{Key.Port}";
}

/// <summary>The egress identity went into backoff while the rent waited for its slot: nothing was tried (see <see cref="DestinationBackoff.ClaimProbe"/>).</summary>
internal sealed class DestinationBackedOffException(DateTimeOffset until) : Exception("Destination backed off.")
{
    public DateTimeOffset Until { get; } = until;
}

/// <summary>Opening a connection failed on every address: the reply to record (4.4.1 unreachable, 4.7.x TLS policy), from <see cref="DeliveryReplies"/>.</summary>
internal sealed class SmtpConnectException(SmtpReply reply, Exception? inner = null) : Exception(reply.ToString(), inner)
{
    public SmtpReply Reply { get; } = reply;

    public int Code => Reply.Code;

    /// <summary>Enhanced status and text, e.g. "4.4.1 Cannot connect to mx.example.net[192.0.2.1]:25 (ConnectionRefused)".</summary>
    public string Text => DeliveryOutcomes.ReplyText(Reply);
}

/// <summary>
/// MailKit connections kept open and reused across messages, keyed by <see cref="SmtpPoolKey"/>.
/// Per egress identity (tenant, source address, host, port: <see cref="EgressIdentity"/>) at most MaxConnections are
/// open at once, and per tenant at most MaxConnectionsPerTenant are lent out at once across destinations. The
/// destination cap is per identity, not per host, so one tenant whose transactions are slow at a host (a tarpit aimed at
/// its reputation, a flood of its own) cannot take the slots another tenant needs there; the price is that a host can see
/// up to MaxConnections from each tenant, bounded overall by each tenant's MaxConnectionsPerTenant.
/// An identity with nothing open, idle or being rented is forgotten by the sweep, so the table holds only live ones. Idle connections are reused by the same key
/// only: at once when it was returned within QuietReuseWindow and the peer has sent nothing since (GatewaySmtpClient.IsQuiet),
/// else after an RSET that
/// both resets the transaction state and proves the session alive (RFC 5321 section 4.1.1.5);
/// they are closed after IdleTimeout and recycled after MaxMessagesPerConnection. A connection that failed is closed,
/// never pooled again.
/// </summary>
internal sealed class SmtpConnectionPool : IAsyncDisposable
{
    /// <summary>Bound on a polite QUIT when closing, so that a dead peer cannot hold a slot.</summary>
    static readonly TimeSpan QuitTimeout = TimeSpan.FromSeconds(5);

    /// <summary>A connection returned less than this long ago, with nothing pending on its socket, is reused without RSET.</summary>
    static readonly TimeSpan QuietReuseWindow = TimeSpan.FromSeconds(2);

    /// <summary>Bound on the RSET that checks an idle connection.</summary>
    static readonly TimeSpan ResetTimeout = TimeSpan.FromSeconds(30);

    readonly TimeProvider _time;
    readonly ILogger _logger;
    readonly int _maxPerTenant;
    readonly SmtpConnector.ConnectFunc _connect;
    readonly Lock _gate = new();
    readonly Dictionary<EgressIdentity, Destination> _destinations = [];
    readonly Dictionary<string, TenantSlots> _tenants = new(StringComparer.Ordinal);
    readonly ITimer _sweeper;
    bool _disposed;

    public SmtpConnectionPool(int maxConnectionsPerTenant, TimeProvider time, ILogger logger, SmtpConnector.ConnectFunc connect)
    {
        _maxPerTenant = Math.Max(1, maxConnectionsPerTenant);
        _time = time;
        _logger = logger;
        _connect = connect;
        var sweep = TimeSpan.FromSeconds(1);
        _sweeper = time.CreateTimer(static state => _ = ((SmtpConnectionPool)state!).SweepAsync(), this, sweep, sweep);
    }

    /// <summary>Connections open now to a destination (lent out or idle) over every egress identity, for tests and diagnostics.</summary>
    internal int OpenCount(string host, int port)
    {
        lock (_gate)
        {
            return _destinations.Where(d => d.Key.Host == host && d.Key.Port == port).Sum(d => d.Value.Open);
        }
    }

    /// <summary>Idle connections to host:port on which the peer has sent something (tests: an unsolicited 421 or EOF has arrived).</summary>
    internal int IdleWithInput(string host, int port)
    {
        lock (_gate)
        {
            return _destinations.Where(d => d.Key.Host == host && d.Key.Port == port)
                .Sum(d => d.Value.Idle.Values.Sum(list => list.Count(c => !c.Client.IsQuiet)));
        }
    }

    /// <summary>Egress identities the pool keeps books for now (tests: the table does not grow without bound).</summary>
    internal int IdentityCount
    {
        get
        {
            lock (_gate)
            {
                return _destinations.Count;
            }
        }
    }

    /// <summary>Connections of a tenant lent out right now.</summary>
    internal int InUseCount(string tenant)
    {
        lock (_gate)
        {
            return _tenants.TryGetValue(tenant, out var t) ? _maxPerTenant - t.Slots.CurrentCount : 0;
        }
    }

    /// <summary>
    /// Lends a healthy connection for <paramref name="key"/>, opening one (trying <paramref name="addresses"/> in order) if
    /// needed. Waits while the tenant or its egress identity is at its cap. Throws <see cref="SmtpConnectException"/> when no
    /// address could be reached.
    /// </summary>
    /// <param name="backedOffUntil">Asked once the slots are held, before anything is tried: a time means the identity went into
    /// backoff meanwhile, and <see cref="DestinationBackedOffException"/> is thrown with the slots released.</param>
    /// <param name="connectFailed">Told of a failed connect before the slots are released, so that the next waiter's
    /// <paramref name="backedOffUntil"/> already sees the failure.</param>
    public async Task<PooledSmtpConnection> RentAsync(SmtpPoolKey key, IReadOnlyList<IPAddress> addresses, DestinationLimits limits, CancellationToken cancellationToken,
        Func<DateTimeOffset?>? backedOffUntil = null, Action<SmtpConnectException>? connectFailed = null)
    {
        Destination destination;
        TenantSlots tenant;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_destinations.TryGetValue(key.Identity, out destination!))
            {
                destination = new Destination(limits);
                _destinations[key.Identity] = destination;
            }

            if (!_tenants.TryGetValue(key.Tenant, out tenant!))
            {
                tenant = new TenantSlots(_maxPerTenant);
                _tenants[key.Tenant] = tenant;
            }

            // Counted until the connection comes back (or the rent fails), so the sweep never forgets a destination in use.
            destination.Renters++;
        }

        try
        {
            return await RentAsync(key, addresses, destination, tenant, cancellationToken, backedOffUntil, connectFailed).ConfigureAwait(false);
        }
        catch
        {
            lock (_gate)
            {
                destination.Renters--;
            }

            throw;
        }
    }

    async Task<PooledSmtpConnection> RentAsync(SmtpPoolKey key, IReadOnlyList<IPAddress> addresses, Destination destination, TenantSlots tenant,
        CancellationToken cancellationToken, Func<DateTimeOffset?>? backedOffUntil, Action<SmtpConnectException>? connectFailed)
    {

        // Always tenant first, then destination: one order, so two rents can never wait on each other crosswise.
        await tenant.Slots.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await destination.Slots.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            tenant.Slots.Release();
            throw;
        }

        try
        {
            if (backedOffUntil?.Invoke() is { } until)
            {
                throw new DestinationBackedOffException(until);
            }

            while (true)
            {
                PooledSmtpConnection? idle = null, evicted = null, evictedForTenant = null;
                lock (_gate)
                {
                    if (destination.Idle.TryGetValue(key, out var list) && list.Count > 0)
                    {
                        // Most recently used first: it is the likeliest to still be alive.
                        idle = list[^1];
                        list.RemoveAt(list.Count - 1);
                    }
                    else
                    {
                        // A slot is free, so if the identity is at its cap an idle connection of another key of it (other TLS
                        // level, credential version or EHLO name) is idle: close it.
                        if (destination.Open >= destination.Limits.MaxConnections)
                        {
                            evicted = destination.TakeOldestIdle();
                            if (evicted is not null)
                            {
                                destination.Open--;
                                _tenants[evicted.Key.Tenant].Open--;
                            }
                        }

                        // Likewise for the tenant: at its cap, one of its idle connections (to any destination) makes room.
                        if (tenant.Open >= _maxPerTenant)
                        {
                            var (oldest, from) = OldestIdleOfTenant(key.Tenant);
                            if (oldest is not null)
                            {
                                from!.Open--;
                                tenant.Open--;
                                evictedForTenant = oldest;
                            }
                        }

                        destination.Open++;
                        tenant.Open++;
                    }
                }

                if (evicted is not null)
                {
                    await CloseAsync(evicted, "making room for another TLS level or credential").ConfigureAwait(false);
                }

                if (evictedForTenant is not null)
                {
                    await CloseAsync(evictedForTenant, "tenant at its connection cap").ConfigureAwait(false);
                }

                if (idle is not null)
                {
                    if (await IsHealthyAsync(idle, destination.Limits, cancellationToken).ConfigureAwait(false))
                    {
                        return idle;
                    }

                    lock (_gate)
                    {
                        destination.Open--;
                        tenant.Open--;
                    }

                    await CloseAsync(idle, "failed health check").ConfigureAwait(false);
                    continue;
                }

                try
                {
                    var client = await _connect(key, addresses, destination.Limits.ConnectTimeout, cancellationToken).ConfigureAwait(false);
                    DeliveryLog.Connected(_logger, key.Host, key.Port, key.Tenant, client.RemoteAddress?.ToString() ?? "", client.TlsDescription ?? "none");
                    DeliveryMetrics.ConnectionOpened(key.Tenant, client.IsSecure);
                    return new PooledSmtpConnection(client, key, _time.GetUtcNow());
                }
                catch (Exception ex)
                {
                    lock (_gate)
                    {
                        destination.Open--;
                        tenant.Open--;
                    }

                    if (ex is SmtpConnectException failed && !cancellationToken.IsCancellationRequested)
                    {
                        connectFailed?.Invoke(failed);
                    }

                    throw;
                }
            }
        }
        catch
        {
            destination.Slots.Release();
            tenant.Slots.Release();
            throw;
        }
    }

    /// <summary>Takes a connection back. Pooled only when <paramref name="reusable"/>, still connected and not worn out; otherwise closed.</summary>
    public async ValueTask ReturnAsync(PooledSmtpConnection connection, bool reusable)
    {
        Destination destination;
        TenantSlots tenant;
        string? closeReason = null;
        lock (_gate)
        {
            destination = _destinations[connection.Key.Identity];
            tenant = _tenants[connection.Key.Tenant];
            destination.Renters--;
            if (_disposed)
            {
                closeReason = "shutting down";
            }
            else if (!reusable || !connection.Client.IsConnected)
            {
                closeReason = "connection failed";
            }
            else if (connection.Transactions >= Math.Max(1, destination.Limits.MaxMessagesPerConnection))
            {
                closeReason = "MaxMessagesPerConnection reached";
            }

            if (closeReason is null)
            {
                connection.LastUsed = _time.GetUtcNow();
                if (!destination.Idle.TryGetValue(connection.Key, out var list))
                {
                    destination.Idle[connection.Key] = list = [];
                }

                list.Add(connection);
            }
            else
            {
                destination.Open--;
                tenant.Open--;
            }
        }

        try
        {
            // Closed before the slot is released, so the cap holds on the wire too.
            if (closeReason is not null)
            {
                await CloseAsync(connection, closeReason).ConfigureAwait(false);
            }
        }
        finally
        {
            destination.Slots.Release();
            tenant.Slots.Release();
        }
    }

    async Task<bool> IsHealthyAsync(PooledSmtpConnection connection, DestinationLimits limits, CancellationToken cancellationToken)
    {
        if (!connection.Client.IsConnected)
        {
            return false;
        }

        if (_time.GetUtcNow() - connection.LastUsed >= limits.IdleTimeout)
        {
            return false;
        }

        // The common case under load: the session answered moments ago and nothing arrived since, so no RSET round trip
        // (it cost about 5% of the gateway's CPU per message in the issue 15 profile, and the same again at the peer).
        // Longer idle, a NAT or firewall may have dropped the flow without a FIN, which only a command can show.
        if (_time.GetUtcNow() - connection.LastUsed < QuietReuseWindow && connection.Client.IsQuiet)
        {
            return true;
        }

        try
        {
            using var timeout = new CancellationTokenSource(ResetTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
            return await connection.Client.ResetAsync(linked.Token).ConfigureAwait(false);
        }
        catch (Exception) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    async Task SweepAsync()
    {
        List<PooledSmtpConnection> expired = [];
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            var now = _time.GetUtcNow();
            foreach (var destination in _destinations.Values)
            {
                foreach (var list in destination.Idle.Values)
                {
                    for (var i = list.Count - 1; i >= 0; i--)
                    {
                        if (now - list[i].LastUsed < destination.Limits.IdleTimeout)
                        {
                            continue;
                        }

                        expired.Add(list[i]);
                        _tenants[list[i].Key.Tenant].Open--;
                        list.RemoveAt(i);
                        destination.Open--;
                    }
                }
            }

            // Identities with nothing open and no rent under way are forgotten: the table holds live identities only.
            foreach (var (identity, _) in _destinations.Where(d => d.Value is { Open: 0, Renters: 0 }).ToList())
            {
                _destinations.Remove(identity);
            }
        }

        foreach (var connection in expired)
        {
            await CloseAsync(connection, "idle timeout").ConfigureAwait(false);
        }
    }

    async Task CloseAsync(PooledSmtpConnection connection, string reason)
    {
        DeliveryLog.ConnectionClosed(_logger, connection.Key.Host, connection.Key.Port, reason);
        try
        {
            if (connection.Client.IsConnected)
            {
                // QUIT (RFC 5321 section 4.1.1.10) lets the server close its side cleanly.
                using var timeout = new CancellationTokenSource(QuitTimeout, _time);
                await connection.Client.DisconnectAsync(true, timeout.Token).ConfigureAwait(false);
            }
        }
        catch (Exception)
        {
            // Closing is best effort: the socket is released by Dispose below either way.
        }
        finally
        {
            connection.Client.Dispose();
        }
    }

    /// <summary>
    /// Closes the idle connections whose key matches: after a credential rotation the connections authenticated with an
    /// older version drain now instead of holding slots until their idle timeout. Lent-out ones finish their transaction
    /// and are never lent for the new version (the version is part of the key).
    /// </summary>
    public async Task CloseIdleAsync(Func<SmtpPoolKey, bool> match, string reason)
    {
        List<PooledSmtpConnection> idle;
        lock (_gate)
        {
            idle = TakeIdle(match);
        }

        foreach (var connection in idle)
        {
            await CloseAsync(connection, reason).ConfigureAwait(false);
        }
    }

    /// <summary>Removes the idle connections whose key matches from the pool's books; caller holds the gate and closes them.</summary>
    List<PooledSmtpConnection> TakeIdle(Func<SmtpPoolKey, bool> match)
    {
        List<PooledSmtpConnection> idle = [];
        foreach (var destination in _destinations.Values)
        {
            foreach (var (key, list) in destination.Idle)
            {
                if (list.Count == 0 || !match(key))
                {
                    continue;
                }

                idle.AddRange(list);
                destination.Open -= list.Count;
                _tenants[key.Tenant].Open -= list.Count;
                list.Clear();
            }
        }

        return idle;
    }

    public async ValueTask DisposeAsync()
    {
        List<PooledSmtpConnection> idle;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            idle = TakeIdle(static _ => true);
        }

        await _sweeper.DisposeAsync().ConfigureAwait(false);
        foreach (var connection in idle)
        {
            await CloseAsync(connection, "shutting down").ConfigureAwait(false);
        }
    }

    /// <summary>The tenant's oldest idle connection over all destinations, and its destination; caller holds the gate.</summary>
    (PooledSmtpConnection? Connection, Destination? From) OldestIdleOfTenant(string tenant)
    {
        PooledSmtpConnection? oldest = null;
        Destination? from = null;
        foreach (var destination in _destinations.Values)
        {
            foreach (var (key, list) in destination.Idle)
            {
                if (key.Tenant == tenant && list.Count > 0 && (oldest is null || list[0].LastUsed < oldest.LastUsed))
                {
                    oldest = list[0];
                    from = destination;
                }
            }
        }

        if (oldest is not null)
        {
            from!.Idle[oldest.Key].Remove(oldest);
        }

        return (oldest, from);
    }

    sealed class TenantSlots(int max)
    {
        /// <summary>Connections of this tenant lent out; a waiter here is waiting for the tenant cap.</summary>
        public SemaphoreSlim Slots { get; } = new(max, max);

        /// <summary>Open connections of this tenant (lent out or idle), across destinations; kept at the cap by evicting its idle ones.</summary>
        public int Open { get; set; }
    }

    sealed class Destination(DestinationLimits limits)
    {
        public DestinationLimits Limits { get; } = limits;

        /// <summary>Lent-out connections; a waiter here is waiting for the cap.</summary>
        public SemaphoreSlim Slots { get; } = new(Math.Max(1, limits.MaxConnections), Math.Max(1, limits.MaxConnections));

        /// <summary>Idle connections by key (tenant, identity, TLS level), most recently used last.</summary>
        public Dictionary<SmtpPoolKey, List<PooledSmtpConnection>> Idle { get; } = [];

        /// <summary>Open connections, lent out or idle; never above the cap.</summary>
        public int Open { get; set; }

        /// <summary>Rents under way plus connections lent out: while above zero the sweep keeps this destination.</summary>
        public int Renters { get; set; }

        public PooledSmtpConnection? TakeOldestIdle()
        {
            List<PooledSmtpConnection>? from = null;
            foreach (var list in Idle.Values)
            {
                if (list.Count > 0 && (from is null || list[0].LastUsed < from[0].LastUsed))
                {
                    from = list;
                }
            }

            if (from is null)
            {
                return null;
            }

            var oldest = from[0];
            from.RemoveAt(0);
            return oldest;
        }
    }
}
