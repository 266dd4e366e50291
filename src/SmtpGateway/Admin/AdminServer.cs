using System.Net;
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
            kestrel.Limits.MaxConcurrentConnections = 256;
            kestrel.Listen(IPAddress.Parse(admin.Address), admin.Port, listen =>
            {
                if (admin.Tls.CertificatePath is { } cert && admin.Tls.KeyPath is { } key)
                {
                    listen.UseHttps(X509Certificate2.CreateFromPemFile(cert, key));
                }
            });
            if (SocketPath(gateway) is { } socket)
            {
                // The directory is 0700: nobody but the gateway's user reaches the socket, whatever mode bind() gives it.
                Directory.CreateDirectory(Path.GetDirectoryName(socket)!, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
                File.SetUnixFileMode(Path.GetDirectoryName(socket)!, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
                // A socket file left by a killed gateway would make bind() fail with "address in use".
                File.Delete(socket);
                kestrel.ListenUnixSocket(socket);
            }
        });
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
