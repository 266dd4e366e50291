using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;
using SmtpGateway.Diagnostics;
using SmtpGateway.Smtp;

namespace SmtpGateway.Listener;

/// <summary>
/// Accepts connections on every configured endpoint and runs one <see cref="SmtpSession"/> per connection.
/// Stop: close the listening sockets, let sessions finish (idle ones get 421 at once), and after the drain
/// timeout cancel whatever is left; nothing acknowledged is lost because 250 follows the spool commit.
/// </summary>
public sealed class SmtpListenerService(
    IReadOnlyList<ListenerModel> listeners,
    SessionServices services,
    TimeSpan shutdownTimeout,
    ILoggerFactory loggerFactory) : IHostedService, IAsyncDisposable
{
    readonly ILogger _logger = loggerFactory.CreateLogger("SmtpGateway.Listener");
    readonly ConnectionLimiter _limiter = new(services.Limits.MaxConnections, services.Limits.MaxConnectionsPerIp);
    readonly ConcurrentDictionary<Task, byte> _sessions = new();
    readonly CancellationTokenSource _draining = new();
    readonly CancellationTokenSource _hardStop = new();
    readonly List<Socket> _sockets = [];
    readonly List<Task> _acceptLoops = [];
    int _bound;

    /// <summary>Actual bound endpoints (port 0 in config resolves here), in listener order.</summary>
    public IReadOnlyList<IPEndPoint> BoundEndPoints => _sockets.Select(s => (IPEndPoint)s.LocalEndPoint!).ToList();

    public int ActiveSessions => _sessions.Count;

    /// <summary>Configured listeners.</summary>
    public int ConfiguredCount => listeners.Count;

    /// <summary>Listeners bound and accepting: 0 before the start and again once draining begins (/readyz reads it).</summary>
    public int AcceptingCount => _draining.IsCancellationRequested ? 0 : Volatile.Read(ref _bound);

    public Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var listener in listeners)
        {
            var socket = new Socket(listener.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            // No ReuseAddress: on Linux .NET maps it to SO_REUSEPORT, which would let a second gateway silently share
            // the port. Linux already allows rebinding a listening port held only by TIME_WAIT connections.
            socket.Bind(listener.EndPoint);
            socket.Listen(1024);
            _sockets.Add(socket);
            Interlocked.Increment(ref _bound);
            ListenerLog.Listening(_logger, listener.Name, listener.Kind.ToString(), (IPEndPoint)socket.LocalEndPoint!);
            _acceptLoops.Add(AcceptLoopAsync(socket, listener));
        }

        return Task.CompletedTask;
    }

    async Task AcceptLoopAsync(Socket listenSocket, ListenerModel listener)
    {
        while (!_draining.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listenSocket.AcceptAsync(_draining.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                if (_draining.IsCancellationRequested)
                {
                    return;
                }

                continue;
            }

            client.NoDelay = true;
            var remote = (IPEndPoint)client.RemoteEndPoint!;
            var address = remote.Address.IsIPv4MappedToIPv6 ? remote.Address.MapToIPv4() : remote.Address;
            Accept(new ClosingNetworkStream(client), listener, new IPEndPoint(address, remote.Port));
        }
    }

    /// <summary>
    /// Takes one accepted connection from any transport: a socket here, an in-memory pipe in transcript tests (as Kestrel's
    /// in-memory transport does), so the same limits, drain and clean-up apply to both.
    /// </summary>
    internal void Accept(Stream stream, ListenerModel listener, IPEndPoint remote)
    {
        // While the message memory budget is spent, a new session could not take a DATA anyway: say so at once.
        var refusal = services.Pipeline.HasRoomForMessage ? _limiter.TryAcquire(remote.Address) : SmtpReplies.BusyNoStorage;
        if (refusal is not null)
        {
            services.Metrics.Refused(listener.Name);
            ListenerLog.ConnectionRefused(_logger, remote.Address, listener.Name, refusal.Text);
            _ = RefuseAsync(stream, refusal);
            return;
        }

        var task = RunSessionAsync(stream, listener, remote);
        _sessions.TryAdd(task, 0);
        _ = task.ContinueWith(t => _sessions.TryRemove(t, out _), TaskScheduler.Default);
    }

    /// <summary>The listener bound at <paramref name="endPoint"/> (one of <see cref="BoundEndPoints"/>).</summary>
    internal ListenerModel ListenerAt(IPEndPoint endPoint)
    {
        var bound = BoundEndPoints;
        for (var i = 0; i < bound.Count; i++)
        {
            if (bound[i].Equals(endPoint))
            {
                return listeners[i];
            }
        }

        throw new ArgumentException($"No listener is bound at {endPoint}.", nameof(endPoint));
    }

    async Task RefuseAsync(Stream stream, SmtpReply reply)
    {
        try
        {
            var sb = new StringBuilder();
            reply.WriteTo(sb);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5), services.Time);
            await stream.WriteAsync(Encoding.ASCII.GetBytes(sb.ToString()), timeout.Token).ConfigureAwait(false);
            await stream.FlushAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
        {
            // The client is gone; nothing to tell it.
        }
        finally
        {
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    async Task RunSessionAsync(Stream stream, ListenerModel listener, IPEndPoint remote)
    {
        await Task.Yield();
        services.Metrics.SessionOpened(listener.Name);
        try
        {
            if (listener.ImplicitTls)
            {
                var ssl = new SslStream(stream, leaveInnerStreamOpen: false);
                stream = ssl;
                using var handshakeTimer = new CancellationTokenSource(services.Limits.CommandTimeout, services.Time);
                using var handshake = CancellationTokenSource.CreateLinkedTokenSource(_hardStop.Token, handshakeTimer.Token);
                await ssl.AuthenticateAsServerAsync(services.Tls!.ServerOptions(), handshake.Token).ConfigureAwait(false);
            }

            var session = new SmtpSession(stream, listener, remote, services, _logger, _draining.Token, _hardStop.Token);
            using (_logger.BeginScope(new LogScope(LogScope.Of("SessionId", session.SessionId), LogScope.Of("Listener", listener.Name), LogScope.Of("Client", remote.Address.ToString()))))
            {
                await session.RunAsync().ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException or OperationCanceledException or ObjectDisposedException)
        {
            ListenerLog.SessionAborted(_logger, "-", ex.GetType().Name);
        }
        catch (Exception ex)
        {
            // A bug in one session must not take the process down; the client sees the connection close.
            ListenerLog.SessionFailed(_logger, "-", ex);
        }
        finally
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            _limiter.Release(remote.Address);
            services.Metrics.SessionClosed(listener.Name);
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        ListenerLog.Draining(_logger, _sessions.Count, shutdownTimeout);
        await _draining.CancelAsync().ConfigureAwait(false);
        foreach (var socket in _sockets)
        {
            socket.Dispose();
        }

        await Task.WhenAll(_acceptLoops).ConfigureAwait(false);

        var all = Task.WhenAll(_sessions.Keys);
        var finished = await Task.WhenAny(all, Task.Delay(shutdownTimeout, services.Time, cancellationToken)).ConfigureAwait(false);
        if (finished != all)
        {
            ListenerLog.DrainTimeout(_logger, _sessions.Count);
            await _hardStop.CancelAsync().ConfigureAwait(false);
            await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(5), services.Time, CancellationToken.None)).ConfigureAwait(false);
        }
    }

    public ValueTask DisposeAsync()
    {
        foreach (var socket in _sockets)
        {
            socket.Dispose();
        }

        _draining.Dispose();
        _hardStop.Dispose();
        return ValueTask.CompletedTask;
    }
}
