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

    /// <summary>
    /// A client when a gateway answers on the socket now; null when none runs (no socket, or a socket file nobody listens
    /// on). Any other failure (EACCES/EPERM: the CLI runs as another user than the gateway) is an error: falling back
    /// would edit the files under a running gateway.
    /// </summary>
    /// <exception cref="HttpRequestException">The socket exists but cannot be reached.</exception>
    public static AdminApiClient? TryConnect(GatewayConfig gateway)
    {
        if (AdminServer.SocketPath(gateway) is not { } path)
        {
            return null;
        }

        // No File.Exists first: it says "no" for a socket in a directory the caller may not search (0700, another user's).
        using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            try
            {
                probe.Connect(new UnixDomainSocketEndPoint(path));
            }
            catch (SocketException ex) when (FallsBack(ex.SocketErrorCode))
            {
                // No socket, or one left by a killed gateway: nobody listens, so the verb works on the files directly.
                return null;
            }
            catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AccessDenied)
            {
                throw new HttpRequestException("cannot reach the running gateway's admin socket: permission denied; run as the gateway's user", ex);
            }
            catch (SocketException ex)
            {
                throw new HttpRequestException($"cannot reach the running gateway's admin socket {path}: {ex.Message}", ex);
            }
        }

        return new AdminApiClient(path);
    }

    /// <summary>ENOENT (AddressNotAvailable on Unix: no socket file, or no directory) and ECONNREFUSED: no gateway runs.</summary>
    internal static bool FallsBack(SocketError error) => error is SocketError.AddressNotAvailable or SocketError.ConnectionRefused;

    public void Dispose() => Http.Dispose();
}
