using MailKit.Security;
using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;

namespace SmtpGateway.Delivery;

/// <summary>
/// Where a pooled connection goes and for whom. Connections are never shared between tenants
/// (isolation promise 5 in ARCHITECTURE.md), so the tenant is part of the key.
/// </summary>
internal readonly record struct SmtpPoolKey(string Tenant, string Host, int Port);

/// <summary>A connection lent out by <see cref="SmtpConnectionPool"/>.</summary>
internal sealed class PooledSmtpConnection(GatewaySmtpClient client, SmtpPoolKey key, DateTimeOffset openedAt)
{
    public GatewaySmtpClient Client { get; } = client;

    public SmtpPoolKey Key { get; } = key;

    public DateTimeOffset OpenedAt { get; } = openedAt;

    public DateTimeOffset LastUsed { get; set; } = openedAt;

    /// <summary>Transactions run on this connection (counted towards MaxMessagesPerConnection).</summary>
    public int Transactions { get; set; }
}

/// <summary>
/// MailKit connections kept open and reused across messages. Per destination (host, port) at most
/// MaxConnections are open at once, across tenants; idle ones are reused by the same tenant only,
/// closed after IdleTimeout, checked with NOOP when idle for a while, and recycled after
/// MaxMessagesPerConnection transactions. A connection that failed is closed, never pooled again.
/// </summary>
internal sealed class SmtpConnectionPool : IAsyncDisposable
{
    /// <summary>An idle connection older than this gets a NOOP before reuse: servers drop idle clients (RFC 5321 section 4.5.3.2.7 allows 5 minutes) and NAT boxes forget them sooner.</summary>
    internal static readonly TimeSpan NoopAfterIdle = TimeSpan.FromSeconds(10);

    /// <summary>Bound on a polite QUIT when closing, so that a dead peer cannot hold a slot.</summary>
    static readonly TimeSpan QuitTimeout = TimeSpan.FromSeconds(5);

    /// <summary>RFC 5321 section 4.5.3.2: command timeouts are minutes (MAIL/RCPT 5, DATA end 10); MailKit applies one value per read or write.</summary>
    internal static readonly TimeSpan CommandTimeout = TimeSpan.FromMinutes(5);

    readonly SmarthostConfig _config;
    readonly string _heloName;
    readonly TimeProvider _time;
    readonly ILogger _logger;
    readonly Func<SmtpPoolKey, CancellationToken, Task<GatewaySmtpClient>> _connect;
    readonly Lock _gate = new();
    readonly Dictionary<(string Host, int Port), Destination> _destinations = [];
    readonly ITimer _sweeper;
    bool _disposed;

    public SmtpConnectionPool(SmarthostConfig config, string heloName, TimeProvider time, ILogger logger,
        Func<SmtpPoolKey, CancellationToken, Task<GatewaySmtpClient>>? connect = null)
    {
        _config = config;
        _heloName = heloName;
        _time = time;
        _logger = logger;
        _connect = connect ?? ConnectAsync;
        var sweep = config.IdleTimeout / 2;
        if (sweep < TimeSpan.FromSeconds(1))
            sweep = TimeSpan.FromSeconds(1);
        _sweeper = time.CreateTimer(static state => _ = ((SmtpConnectionPool)state!).SweepAsync(), this, sweep, sweep);
    }

    int MaxConnections => Math.Max(1, _config.MaxConnections);

    /// <summary>Connections open now (lent out or idle), for tests and diagnostics.</summary>
    internal int OpenCount(string host, int port)
    {
        lock (_gate)
            return _destinations.TryGetValue((host, port), out var d) ? d.Open : 0;
    }

    /// <summary>Lends a healthy connection for <paramref name="key"/>, opening one if needed. Waits while the destination is at its cap.</summary>
    public async Task<PooledSmtpConnection> RentAsync(SmtpPoolKey key, CancellationToken cancellationToken)
    {
        Destination destination;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_destinations.TryGetValue((key.Host, key.Port), out destination!))
            {
                destination = new Destination(MaxConnections);
                _destinations[(key.Host, key.Port)] = destination;
            }
        }

        await destination.Slots.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            while (true)
            {
                PooledSmtpConnection? idle = null, evicted = null;
                lock (_gate)
                {
                    if (destination.Idle.TryGetValue(key.Tenant, out var list) && list.Count > 0)
                    {
                        // Most recently used first: it is the likeliest to still be alive.
                        idle = list[^1];
                        list.RemoveAt(list.Count - 1);
                    }
                    else
                    {
                        // A slot is free, so if the destination is at its cap some other tenant's connection is idle: close it.
                        if (destination.Open >= MaxConnections)
                        {
                            evicted = destination.TakeOldestIdle();
                            if (evicted is not null)
                                destination.Open--;
                        }

                        destination.Open++;
                    }
                }

                if (evicted is not null)
                    await CloseAsync(evicted, "making room for another tenant").ConfigureAwait(false);

                if (idle is not null)
                {
                    if (await IsHealthyAsync(idle, cancellationToken).ConfigureAwait(false))
                        return idle;
                    lock (_gate)
                        destination.Open--;
                    await CloseAsync(idle, "failed health check").ConfigureAwait(false);
                    continue;
                }

                try
                {
                    var client = await _connect(key, cancellationToken).ConfigureAwait(false);
                    return new PooledSmtpConnection(client, key, _time.GetUtcNow());
                }
                catch
                {
                    lock (_gate)
                        destination.Open--;
                    throw;
                }
            }
        }
        catch
        {
            destination.Slots.Release();
            throw;
        }
    }

    /// <summary>Takes a connection back. Pooled only when <paramref name="reusable"/>, still connected and not worn out; otherwise closed.</summary>
    public async ValueTask ReturnAsync(PooledSmtpConnection connection, bool reusable)
    {
        Destination destination;
        lock (_gate)
            destination = _destinations[(connection.Key.Host, connection.Key.Port)];

        string? closeReason = null;
        lock (_gate)
        {
            if (_disposed)
                closeReason = "shutting down";
            else if (!reusable || !connection.Client.IsConnected)
                closeReason = "connection failed";
            else if (connection.Transactions >= Math.Max(1, _config.MaxMessagesPerConnection))
                closeReason = "MaxMessagesPerConnection reached";

            if (closeReason is null)
            {
                connection.LastUsed = _time.GetUtcNow();
                if (!destination.Idle.TryGetValue(connection.Key.Tenant, out var list))
                    destination.Idle[connection.Key.Tenant] = list = [];
                list.Add(connection);
            }
            else
            {
                destination.Open--;
            }
        }

        try
        {
            // Closed before the slot is released, so the cap holds on the wire too.
            if (closeReason is not null)
                await CloseAsync(connection, closeReason).ConfigureAwait(false);
        }
        finally
        {
            destination.Slots.Release();
        }
    }

    async Task<bool> IsHealthyAsync(PooledSmtpConnection connection, CancellationToken cancellationToken)
    {
        if (!connection.Client.IsConnected)
            return false;
        var idle = _time.GetUtcNow() - connection.LastUsed;
        if (idle >= _config.IdleTimeout)
            return false;
        if (idle < NoopAfterIdle)
            return true;
        try
        {
            await connection.Client.NoOpAsync(cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (Exception) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    async Task<GatewaySmtpClient> ConnectAsync(SmtpPoolKey key, CancellationToken cancellationToken)
    {
        var client = new GatewaySmtpClient
        {
            LocalDomain = _heloName,
            Timeout = (int)CommandTimeout.TotalMilliseconds,
        };
        var options = _config.StartTls switch
        {
            StartTlsMode.None => SecureSocketOptions.None,
            StartTlsMode.Required => SecureSocketOptions.StartTls,
            _ => SecureSocketOptions.StartTlsWhenAvailable,
        };
        if (_config.StartTls == StartTlsMode.WhenAvailable)
        {
            // RFC 7435 opportunistic security: an unauthenticated encrypted channel is better than plaintext,
            // and refusing an unverifiable certificate would only push the session back to plaintext.
            client.ServerCertificateValidationCallback = static (_, _, _, _) => true;
            client.CheckCertificateRevocation = false;
        }

        try
        {
            using var timeout = new CancellationTokenSource(_config.ConnectTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
            try
            {
                await client.ConnectAsync(key.Host, key.Port, options, linked.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException($"No greeting within {_config.ConnectTimeout}.");
            }

            DeliveryLog.Connected(_logger, key.Host, key.Port, key.Tenant, client.IsSecure);
            return client;
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    async Task SweepAsync()
    {
        List<PooledSmtpConnection> expired = [];
        lock (_gate)
        {
            if (_disposed)
                return;
            var now = _time.GetUtcNow();
            foreach (var destination in _destinations.Values)
            {
                foreach (var list in destination.Idle.Values)
                {
                    for (var i = list.Count - 1; i >= 0; i--)
                    {
                        if (now - list[i].LastUsed < _config.IdleTimeout)
                            continue;
                        expired.Add(list[i]);
                        list.RemoveAt(i);
                        destination.Open--;
                    }
                }
            }
        }

        foreach (var connection in expired)
            await CloseAsync(connection, "idle timeout").ConfigureAwait(false);
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

    public async ValueTask DisposeAsync()
    {
        List<PooledSmtpConnection> idle = [];
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
            foreach (var destination in _destinations.Values)
            {
                foreach (var list in destination.Idle.Values)
                {
                    idle.AddRange(list);
                    destination.Open -= list.Count;
                    list.Clear();
                }
            }
        }

        await _sweeper.DisposeAsync().ConfigureAwait(false);
        foreach (var connection in idle)
            await CloseAsync(connection, "shutting down").ConfigureAwait(false);
    }

    sealed class Destination(int maxConnections)
    {
        /// <summary>Lent-out connections; a waiter here is waiting for the cap.</summary>
        public SemaphoreSlim Slots { get; } = new(maxConnections, maxConnections);

        /// <summary>Idle connections by tenant, most recently used last.</summary>
        public Dictionary<string, List<PooledSmtpConnection>> Idle { get; } = new(StringComparer.Ordinal);

        /// <summary>Open connections, lent out or idle; never above the cap.</summary>
        public int Open { get; set; }

        public PooledSmtpConnection? TakeOldestIdle()
        {
            List<PooledSmtpConnection>? from = null;
            foreach (var list in Idle.Values)
            {
                if (list.Count > 0 && (from is null || list[0].LastUsed < from[0].LastUsed))
                    from = list;
            }

            if (from is null)
                return null;
            var oldest = from[0];
            from.RemoveAt(0);
            return oldest;
        }
    }
}
