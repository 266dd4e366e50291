using System.Net.Sockets;

namespace SmtpGateway.Listener;

/// <summary>
/// A NetworkStream that closes its socket without shutdown(2) first when nothing is in flight. NetworkStream with
/// ownsSocket calls shutdown(SHUT_RDWR) and then close(2); close alone already ends the connection the same way (FIN after
/// the data still queued, or RST when the client's data was left unread, as after a shutdown), and skips a system call
/// and the wake-up the shutdown sends to this process's own epoll for a socket about to go (issue 15: a connection per
/// message). With a read or write still pending, .NET would close abortively (RST, dropping a reply still queued) unless
/// the socket was shut down, so then it is, as NetworkStream does.
/// </summary>
internal sealed class ClosingNetworkStream(Socket socket) : NetworkStream(socket, ownsSocket: false)
{
    int _disposed;
    int _inFlight;

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref _inFlight);
        ValueTask<int> read;
        try
        {
            read = base.ReadAsync(buffer, cancellationToken);
        }
        catch
        {
            Interlocked.Decrement(ref _inFlight);
            throw;
        }

        if (read.IsCompleted)
        {
            Interlocked.Decrement(ref _inFlight);
            return read;
        }

        return Tracked(read);
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref _inFlight);
        ValueTask write;
        try
        {
            write = base.WriteAsync(buffer, cancellationToken);
        }
        catch
        {
            Interlocked.Decrement(ref _inFlight);
            throw;
        }

        if (write.IsCompleted)
        {
            Interlocked.Decrement(ref _inFlight);
            return write;
        }

        return Tracked(write);
    }

    async ValueTask<int> Tracked(ValueTask<int> operation)
    {
        try
        {
            return await operation.ConfigureAwait(false);
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
        }
    }

    async ValueTask Tracked(ValueTask operation)
    {
        try
        {
            await operation.ConfigureAwait(false);
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
        }
    }

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            if (Volatile.Read(ref _inFlight) > 0)
            {
                try
                {
                    Socket.Shutdown(SocketShutdown.Both);
                }
                catch (SocketException)
                {
                    // Already reset by the peer: nothing left to end gracefully.
                }
            }

            Socket.Dispose();
        }
    }
}
