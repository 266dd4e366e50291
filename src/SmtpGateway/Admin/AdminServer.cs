using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using SmtpGateway.Configuration;

namespace SmtpGateway.Admin;

/// <summary>
/// Where the admin endpoint listens: Kestrel on Gateway:Admin's address (HTTPS when a certificate is given) and on the
/// local CLI's unix socket; or, when the endpoint is off, a server that listens nowhere, so the one DI container and
/// host are the same either way and no port is opened that the operator did not ask for.
/// </summary>
public static class AdminServer
{
    public static void Configure(IWebHostBuilder web, IServiceCollection services, GatewayConfig gateway)
    {
        var admin = gateway.Admin;
        if (!admin.Enabled)
        {
            services.AddSingleton<IServer, NoServer>();
            return;
        }

        web.UseKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = admin.MaxRequestBodySize;
            // Kestrel's defaults (32 KiB of headers, 100 headers) are for browsers with cookies; an API call needs far less.
            kestrel.Limits.MaxRequestHeadersTotalSize = 16 * 1024;
            kestrel.Limits.MaxRequestHeaderCount = 50;
            // Kestrel's defaults (130 s keep-alive, 30 s for the headers) let idle or slow clients hold connections long
            // enough to crowd out the load balancer's /readyz; an admin client reconnects cheaply.
            kestrel.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(20);
            kestrel.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(10);
            kestrel.Limits.MaxConcurrentConnections = 1024;
            kestrel.Listen(IPAddress.Parse(admin.Address), admin.Port, listen =>
            {
                if (admin.Tls.CertificatePath is { } cert && admin.Tls.KeyPath is { } key)
                {
                    listen.UseHttps(X509Certificate2.CreateFromPemFile(cert, key));
                }
            });
            if (SocketPath(gateway) is { } socket)
            {
                // Marks the socket's connections, so the request side identifies the local operator positively.
                kestrel.ListenUnixSocket(socket, listen => listen.Use(next => connection =>
                {
                    connection.Items[AdminAuthentication.LocalSocketItem] = true;
                    return next(connection);
                }));
            }
        });
    }

    /// <summary>
    /// The socket's directory must be the gateway's alone (0700): nobody else reaches the socket, whatever mode bind()
    /// gives it. A directory that exists with wider permissions is refused, never chmod'ed (an absolute SocketPath could
    /// name /run or /tmp). A socket left by a killed gateway is removed; one a running gateway answers on is an error
    /// (two gateways on one data directory), and so is anything at that path that is not a socket.
    /// </summary>
    static void PrepareSocket(string socket)
    {
        const UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
        var directory = Path.GetDirectoryName(socket)!;
        if (!Directory.Exists(directory))
        {
            Directory.CreateDirectory(directory, Private);
        }
        else if ((File.GetUnixFileMode(directory) & ~Private) != 0)
        {
            throw new InvalidOperationException(
                $"Gateway:Admin:SocketPath: the directory {directory} is open to group or others; make it mode 0700 or choose a directory of the gateway's own.");
        }

        if (!File.Exists(socket))
        {
            return;
        }

        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(socket));
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            File.Delete(socket);
            return;
        }
        catch (SocketException e)
        {
            throw new InvalidOperationException($"Gateway:Admin:SocketPath: {socket} exists and is not a usable socket ({e.SocketErrorCode}); remove it.", e);
        }

        throw new InvalidOperationException($"Gateway:Admin:SocketPath: a running gateway already answers on {socket} (one gateway per data directory).");
    }

    /// <summary>
    /// Binds the admin TCP address once and lets it go, before anything starts: Kestrel binds last (after the SMTP
    /// listeners and delivery are live), so a taken port would otherwise be found only after mail was accepted.
    /// </summary>
    /// <remarks>Also prepares the local socket's directory and removes a stale socket (<see cref="PrepareSocket"/>).</remarks>
    public static string? CheckCanListen(GatewayConfig gateway)
    {
        if (SocketPath(gateway) is { } socket)
        {
            try
            {
                PrepareSocket(socket);
            }
            catch (Exception e) when (e is InvalidOperationException or IOException or UnauthorizedAccessException)
            {
                return e.Message;
            }
        }

        if (!gateway.Admin.Enabled || gateway.Admin.Port == 0 || !IPAddress.TryParse(gateway.Admin.Address, out var address))
        {
            return null;
        }

        using var probe = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            probe.Bind(new IPEndPoint(address, gateway.Admin.Port));
            return null;
        }
        catch (SocketException e)
        {
            return $"cannot listen on {address}:{gateway.Admin.Port} (Gateway:Admin): {e.Message}";
        }
    }

    /// <summary>The local CLI's socket, or null when it is off (no admin endpoint, or SocketPath empty).</summary>
    public static string? SocketPath(GatewayConfig gateway) =>
        !gateway.Admin.Enabled || string.IsNullOrWhiteSpace(gateway.Admin.SocketPath) ? null
        : Path.IsPathRooted(gateway.Admin.SocketPath) ? gateway.Admin.SocketPath
        : Path.GetFullPath(Path.Combine(GatewayPaths.DataDirectory(gateway), gateway.Admin.SocketPath));

    sealed class NoServer : IServer
    {
        public IFeatureCollection Features { get; } = new FeatureCollection();

        public Task StartAsync<TContext>(IHttpApplication<TContext> application, CancellationToken cancellationToken)
            where TContext : notnull => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public void Dispose()
        {
        }
    }
}
