using System.Net.Sockets;

namespace SmtpGateway.Listener;

/// <summary>
/// A NetworkStream that closes its socket without shutdown(2) first. NetworkStream with ownsSocket calls
/// shutdown(SHUT_RDWR) and then close(2); close alone already ends the connection the same way (FIN after the data still
/// queued, or RST when the client's data was left unread, as after a shutdown), and skips a system call and the wake-up
/// the shutdown sends to this process's own epoll for a socket about to go (issue 15: a connection per message).
/// </summary>
internal sealed class ClosingNetworkStream(Socket socket) : NetworkStream(socket, ownsSocket: false)
{
    int _disposed;

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            Socket.Dispose();
        }
    }
}
