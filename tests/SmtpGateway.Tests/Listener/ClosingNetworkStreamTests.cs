using System.Net;
using System.Net.Sockets;
using System.Text;
using SmtpGateway.Listener;

namespace SmtpGateway.Tests.Listener;

/// <summary>The session's socket stream ends a connection with close(2) alone: the client still sees the last reply, then a clean end.</summary>
public sealed class ClosingNetworkStreamTests
{
    static async Task<(Socket Server, Socket Client)> ConnectedPairAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!);
        var server = await listener.AcceptAsync();
        return (server, client);
    }

    static async Task<string> ReadToEndAsync(Socket client)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var received = new MemoryStream();
        var buffer = new byte[256];
        int n;
        while ((n = await client.ReceiveAsync(buffer, SocketFlags.None, cts.Token)) > 0)
        {
            received.Write(buffer, 0, n);
        }

        return Encoding.ASCII.GetString(received.ToArray());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Disposing_sends_what_was_written_then_an_orderly_end_and_closes_the_socket(bool async)
    {
        var (server, client) = await ConnectedPairAsync();
        using (client)
        {
            var stream = new ClosingNetworkStream(server);
            await stream.WriteAsync("221 2.0.0 closing connection\r\n"u8.ToArray());
            if (async)
            {
                await stream.DisposeAsync();
            }
            else
            {
                stream.Dispose();
            }

            // FIN, not RST: every octet of the last reply arrives, then the end of the stream (a reset would throw).
            Assert.Equal("221 2.0.0 closing connection\r\n", await ReadToEndAsync(client));
            Assert.Throws<ObjectDisposedException>(() => server.Send("x"u8));
            stream.Dispose();
        }
    }

    [Fact]
    public async Task Closing_with_the_sessions_own_read_still_pending_is_still_an_orderly_end()
    {
        var (server, client) = await ConnectedPairAsync();
        using (client)
        {
            var stream = new ClosingNetworkStream(server);
            var pending = stream.ReadAsync(new byte[16]).AsTask();
            await stream.WriteAsync("421 4.3.2 shutting down\r\n"u8.ToArray());
            await stream.DisposeAsync();

            // Without the shutdown .NET would reset the connection to abort the read: the reply could be lost.
            Assert.Equal("421 4.3.2 shutting down\r\n", await ReadToEndAsync(client));

            // The session's own read ends either way: with 0 when the shutdown ended the receive side first, with an
            // exception when the close overtook it. Which one wins is a race (both end the session); it never hangs and
            // never returns data the client did not send.
            var ended = await Record.ExceptionAsync(async () => Assert.Equal(0, await pending));
            Assert.False(ended is Xunit.Sdk.XunitException, ended?.ToString());
        }
    }

    [Fact]
    public async Task A_client_waiting_in_a_read_sees_the_end_when_the_session_closes()
    {
        var (server, client) = await ConnectedPairAsync();
        using (client)
        {
            var stream = new ClosingNetworkStream(server);
            var reading = ReadToEndAsync(client);
            await stream.WriteAsync("421 4.4.2 timeout\r\n"u8.ToArray());
            await stream.DisposeAsync();
            Assert.Equal("421 4.4.2 timeout\r\n", await reading);
        }
    }
}
