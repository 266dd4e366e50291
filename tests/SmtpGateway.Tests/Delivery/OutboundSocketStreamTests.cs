using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Delivery;

namespace SmtpGateway.Tests.Delivery;

/// <summary>
/// The outbound stream under MailKit: writes go out at a flush or before a read, in one piece up to 64 KiB; reads and
/// flushes time out on the injected clock. Over real loopback sockets: a send on loopback has reached the peer's receive
/// queue when it returns, so what the peer has (Socket.Available) shows at once what was sent and what was not.
/// </summary>
public sealed class OutboundSocketStreamTests : IAsyncLifetime
{
    readonly FakeTimeProvider _time = new();
    Socket _client = null!;
    Socket _peer = null!;

    public async Task InitializeAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        _client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await _client.ConnectAsync(listener.LocalEndPoint!);
        _peer = await listener.AcceptAsync();
    }

    public Task DisposeAsync()
    {
        _client.Dispose();
        _peer.Dispose();
        return Task.CompletedTask;
    }

    OutboundSocketStream NewStream(int timeoutMs = 30_000) => new(_client, _time) { ReadTimeout = timeoutMs, WriteTimeout = timeoutMs };

    async Task<string> PeerReadsAsync(int count)
    {
        var buffer = new byte[count];
        var read = 0;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (read < count)
        {
            var n = await _peer.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None, cts.Token);
            Assert.NotEqual(0, n);
            read += n;
        }

        return Encoding.ASCII.GetString(buffer);
    }

    [Fact]
    public async Task Writes_wait_for_the_flush_and_then_go_out_together()
    {
        await using var stream = NewStream();
        await stream.WriteAsync("MAIL FROM:<a@example.net>\r\n"u8.ToArray());
        await stream.WriteAsync("RCPT TO:<b@example.org>\r\n"u8.ToArray());
        Assert.Equal(0, _peer.Available);
        Assert.Equal(52, stream.Pending);

        await stream.FlushAsync();
        Assert.Equal(0, stream.Pending);
        Assert.Equal("MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n", await PeerReadsAsync(52));
    }

    [Fact]
    public async Task A_read_sends_what_was_written_before_it_waits()
    {
        await using var stream = NewStream();
        await stream.WriteAsync("EHLO relay.example\r\n"u8.ToArray());
        var reading = stream.ReadAsync(new byte[64]).AsTask();

        Assert.Equal("EHLO relay.example\r\n", await PeerReadsAsync(20));
        await _peer.SendAsync("250 ok\r\n"u8.ToArray(), SocketFlags.None);
        Assert.Equal(8, await reading);
    }

    [Fact]
    public async Task More_than_64_KiB_goes_out_without_a_flush_and_the_rest_with_it()
    {
        await using var stream = NewStream();
        var body = new byte[OutboundSocketStream.MaxGathered + 1000];
        Array.Fill(body, (byte)'x');
        var peerReads = PeerReadsAsync(body.Length);
        await stream.WriteAsync(body.AsMemory(0, 4096));
        Assert.Equal(4096, stream.Pending);
        await stream.WriteAsync(body.AsMemory(4096));
        Assert.Equal(0, stream.Pending);

        stream.Write("tail"u8);
        Assert.Equal(4, stream.Pending);
        Assert.Equal(new string('x', body.Length), await peerReads);
        stream.Flush();
        Assert.Equal("tail", await PeerReadsAsync(4));
    }

    [Fact]
    public async Task A_read_with_no_reply_times_out_on_the_clock_and_closes_the_connection()
    {
        await using var stream = NewStream(timeoutMs: 5_000);
        var reading = stream.ReadAsync(new byte[64]).AsTask();
        _time.Advance(TimeSpan.FromMilliseconds(4_999));
        Assert.False(reading.IsCompleted);

        _time.Advance(TimeSpan.FromMilliseconds(1));
        var ex = await Assert.ThrowsAsync<TimeoutException>(() => reading);
        Assert.Contains("5000 milliseconds", ex.Message, StringComparison.Ordinal);
        Assert.False(stream.CanRead);

        // The peer sees the connection end.
        Assert.Equal(0, await _peer.ReceiveAsync(new byte[1], SocketFlags.None));
    }

    [Fact]
    public async Task Each_read_gets_the_whole_timeout_however_long_the_one_before_took()
    {
        await using var stream = NewStream(timeoutMs: 5_000);
        var buffer = new byte[16];
        for (var i = 0; i < 3; i++)
        {
            var reading = stream.ReadAsync(buffer).AsTask();
            _time.Advance(TimeSpan.FromMilliseconds(4_000));
            await _peer.SendAsync("250 ok\r\n"u8.ToArray(), SocketFlags.None);
            Assert.Equal(8, await reading);
        }

        // 12 s of reads so far, each under its 5 s: a timer left running from an earlier read would have fired by now.
        var last = stream.ReadAsync(buffer).AsTask();
        _time.Advance(TimeSpan.FromMilliseconds(4_000));
        Assert.False(last.IsCompleted);
        await _peer.SendAsync("221 bye\r\n"u8.ToArray(), SocketFlags.None);
        Assert.Equal(9, await last);
    }

    [Fact]
    public async Task Cancelling_the_callers_token_after_a_timeout_ended_the_stream_does_not_throw_at_the_canceller()
    {
        var stream = NewStream(timeoutMs: 1_000);
        using var caller = new CancellationTokenSource();
        var reading = stream.ReadAsync(new byte[8], caller.Token).AsTask();
        _time.Advance(TimeSpan.FromSeconds(1));
        await Assert.ThrowsAsync<TimeoutException>(() => reading);

        // The caller's source may be a timer of its own: an exception here would be thrown on that timer's thread.
        caller.Cancel();
        await stream.DisposeAsync();
    }

    [Fact]
    public async Task A_sent_buffer_goes_back_to_the_pool_cleared()
    {
        await using var stream = NewStream();
        var secret = "AUTH PLAIN AHVzZXIAc2VjcmV0LXBhc3N3b3Jk\r\n"u8.ToArray();
        await stream.WriteAsync(secret);
        await stream.FlushAsync();
        Assert.Equal(secret.Length, (await PeerReadsAsync(secret.Length)).Length);

        // The shared pool hands this thread its last returned array of the size class first.
        var rented = System.Buffers.ArrayPool<byte>.Shared.Rent(8 * 1024);
        try
        {
            Assert.Equal(-1, rented.AsSpan().IndexOf(secret.AsSpan(0, 20)));
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }
    }

    [Fact]
    public async Task The_callers_cancellation_is_a_cancellation_not_a_timeout()
    {
        await using var stream = NewStream();
        using var cts = new CancellationTokenSource();
        var reading = stream.ReadAsync(new byte[64], cts.Token).AsTask();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => reading);
        Assert.False(stream.CanRead);
    }

    [Fact]
    public async Task Disposing_closes_the_socket_and_drops_what_was_never_flushed()
    {
        var stream = NewStream();
        await stream.WriteAsync("QUIT\r\n"u8.ToArray());
        await stream.DisposeAsync();
        Assert.Equal(0, await _peer.ReceiveAsync(new byte[8], SocketFlags.None));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => stream.WriteAsync(new byte[1]).AsTask());
    }

    [Fact]
    public async Task Tls_runs_over_it_with_the_handshake_flushed_by_its_reads()
    {
        using var rsa = RSA.Create(2048);
        var request = new CertificateRequest("CN=localhost", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        using var serverCert = X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pfx), null);

        await using var server = new SslStream(new NetworkStream(_peer, ownsSocket: false));
        await using var client = new SslStream(NewStream(), leaveInnerStreamOpen: false, (_, _, _, _) => true);
        var serverSide = server.AuthenticateAsServerAsync(serverCert);
        await client.AuthenticateAsClientAsync("localhost");
        await serverSide;

        await client.WriteAsync("DATA\r\n"u8.ToArray());
        await client.FlushAsync();
        var buffer = new byte[6];
        await server.ReadExactlyAsync(buffer);
        Assert.Equal("DATA\r\n", Encoding.ASCII.GetString(buffer));

        await server.WriteAsync("354 go ahead\r\n"u8.ToArray());
        var reply = new byte[14];
        await client.ReadExactlyAsync(reply);
        Assert.Equal("354 go ahead\r\n", Encoding.ASCII.GetString(reply));
    }
}
