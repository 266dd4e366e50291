using System.Net.Sockets;
using SmtpGateway.Admin;
using SmtpGateway.Configuration;

namespace SmtpGateway.Cli;

/// <summary>
/// The running gateway's admin API as the local CLI reaches it: over the unix socket under the data directory, whose
/// 0700 directory is the credential (no admin key on disk). A verb that changes a running gateway goes through it when
/// it answers, so the change reaches the gateway's own in-memory state (suppression list, tenant keys, queue) at once;
/// when no gateway runs, the verb acts on the data directory itself, as before.
/// </summary>
internal sealed class AdminApiClient : IDisposable
{
    AdminApiClient(string socketPath)
    {
        Http = new HttpClient(new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct).ConfigureAwait(false);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        })
        {
            BaseAddress = new Uri("http://localhost/"),
            Timeout = TimeSpan.FromSeconds(60),
        };
    }

    public HttpClient Http { get; }

    /// <summary>A client when a gateway answers on the socket now; null when none runs (socket absent or refusing).</summary>
    public static AdminApiClient? TryConnect(GatewayConfig gateway)
    {
        if (AdminServer.SocketPath(gateway) is not { } path || !File.Exists(path))
        {
            return null;
        }

        using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            try
            {
                probe.Connect(new UnixDomainSocketEndPoint(path));
            }
            catch (SocketException)
            {
                // A socket file left by a killed gateway: nobody listens, so the verb works on the files directly.
                return null;
            }
        }

        return new AdminApiClient(path);
    }

    public void Dispose() => Http.Dispose();
}
