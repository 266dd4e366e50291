using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Listener;
using SmtpGateway.Policy;
using SmtpGateway.Spool;

namespace SmtpGateway.Tests.Listener;

/// <summary>Spool double for listener tests: records commits, or fails on demand.</summary>
public sealed class RecordingSpool : IMessageSpool
{
    int _next;

    public ConcurrentQueue<(SpoolEnvelope Envelope, byte[] Message)> Commits { get; } = new();

    public bool Fail { get; set; }

    public string NewId() => $"T{Interlocked.Increment(ref _next):D6}";

    public Task CommitAsync(SpoolEnvelope envelope, ReadOnlySequence<byte> message, CancellationToken cancellationToken)
    {
        if (Fail)
        {
            throw new SpoolWriteException("disk full (test)");
        }

        Commits.Enqueue((envelope, message.ToArray()));
        return Task.CompletedTask;
    }
}

/// <summary>A real listener on loopback ports with a recording spool: transcript tests talk to it over TCP.</summary>
public sealed class TestGateway : IAsyncDisposable
{
    static readonly Lazy<TlsModel> SharedTls = new(() =>
    {
        using var rsa = RSA.Create(2048);
        var request = new CertificateRequest("CN=localhost", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        return new TlsModel(SslStreamCertificateContext.Create(cert, null, offline: true));
    });

    readonly SmtpListenerService _service;

    TestGateway(SmtpListenerService service, RecordingSpool spool)
    {
        _service = service;
        Spool = spool;
    }

    public RecordingSpool Spool { get; }

    public SmtpListenerService Service => _service;

    public IPEndPoint Submission => _service.BoundEndPoints[0];

    public IPEndPoint ImplicitTls => _service.BoundEndPoints[1];

    public IPEndPoint Relay => _service.BoundEndPoints[2];

    public static async Task<TestGateway> StartAsync(Action<LimitsConfig>? limits = null, string[]? relayNetworks = null, TimeSpan? shutdownTimeout = null)
    {
        var limitsConfig = new LimitsConfig();
        limits?.Invoke(limitsConfig);
        var spool = new RecordingSpool();
        var services = new SessionServices(
            "mx.test.example",
            limitsConfig,
            SharedTls.Value,
            new RelayPolicy((relayNetworks ?? ["127.0.0.0/8"]).Select(IPNetwork.Parse).ToList()),
            new RejectAllAuthenticator(),
            spool,
            TimeProvider.System,
            new ListenerMetrics());
        var listeners = new List<ListenerModel>
        {
            new("submission", ListenerKind.Submission, new IPEndPoint(IPAddress.Loopback, 0)),
            new("submissions", ListenerKind.ImplicitTls, new IPEndPoint(IPAddress.Loopback, 0)),
            new("relay", ListenerKind.Relay, new IPEndPoint(IPAddress.Loopback, 0)),
        };
        var service = new SmtpListenerService(listeners, services, shutdownTimeout ?? TimeSpan.FromSeconds(5), NullLoggerFactory.Instance);
        await service.StartAsync(CancellationToken.None);
        return new TestGateway(service, spool);
    }

    public async ValueTask DisposeAsync()
    {
        await _service.StopAsync(CancellationToken.None);
        await _service.DisposeAsync();
    }
}

/// <summary>A raw SMTP client that shows exactly what the server says.</summary>
public sealed class RawSmtpClient : IAsyncDisposable
{
    readonly TcpClient _tcp;
    Stream _stream;
    readonly List<byte> _pending = [];

    RawSmtpClient(TcpClient tcp, Stream stream)
    {
        _tcp = tcp;
        _stream = stream;
    }

    public static async Task<RawSmtpClient> ConnectAsync(IPEndPoint endPoint, bool implicitTls = false)
    {
        var tcp = new TcpClient();
        await tcp.ConnectAsync(endPoint);
        Stream stream = tcp.GetStream();
        if (implicitTls)
        {
            var ssl = new SslStream(stream, false, (_, _, _, _) => true);
            await ssl.AuthenticateAsClientAsync("localhost");
            stream = ssl;
        }

        return new RawSmtpClient(tcp, stream);
    }

    public async Task StartTlsAsync(System.Security.Authentication.SslProtocols protocols = System.Security.Authentication.SslProtocols.None)
    {
        var ssl = new SslStream(_stream, false, (_, _, _, _) => true);
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "localhost", EnabledSslProtocols = protocols });
        _stream = ssl;
        _pending.Clear();
    }

    public string? TlsProtocol => (_stream as SslStream)?.SslProtocol.ToString();

    public async Task SendRawAsync(string text) => await SendRawAsync(Encoding.UTF8.GetBytes(text));

    public async Task SendRawAsync(byte[] bytes)
    {
        await _stream.WriteAsync(bytes);
        await _stream.FlushAsync();
    }

    /// <summary>Reads one complete (possibly multi-line) reply; null if the server closed the connection.</summary>
    public async Task<string?> ReadReplyAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(10));
        var lines = new List<string>();
        while (true)
        {
            var line = await ReadLineAsync(cts.Token);
            if (line is null)
            {
                return lines.Count == 0 ? null : string.Join("\n", lines);
            }

            lines.Add(line);
            if (line.Length < 4 || line[3] == ' ')
            {
                return string.Join("\n", lines);
            }
        }
    }

    async Task<string?> ReadLineAsync(CancellationToken ct)
    {
        var buffer = new byte[1];
        while (true)
        {
            var lf = _pending.IndexOf((byte)'\n');
            if (lf >= 0)
            {
                var line = Encoding.UTF8.GetString(_pending.GetRange(0, lf).ToArray()).TrimEnd('\r');
                _pending.RemoveRange(0, lf + 1);
                return line;
            }

            int n;
            try
            {
                n = await _stream.ReadAsync(buffer, ct);
            }
            catch (IOException)
            {
                return null;
            }

            if (n == 0)
            {
                return null;
            }

            _pending.Add(buffer[0]);
        }
    }

    public async Task<string?> CommandAsync(string line)
    {
        await SendRawAsync(line + "\r\n");
        return await ReadReplyAsync();
    }

    /// <summary>Greeting plus EHLO; returns the EHLO reply.</summary>
    public async Task<string> HelloAsync(string name = "client.test.example")
    {
        var banner = await ReadReplyAsync();
        Assert.StartsWith("220 ", banner);
        var ehlo = await CommandAsync($"EHLO {name}");
        Assert.StartsWith("250", ehlo);
        return ehlo!;
    }

    /// <summary>True once the server has closed the connection (read returns end of stream).</summary>
    public async Task<bool> IsClosedAsync() => await ReadReplyAsync(TimeSpan.FromSeconds(5)) is null;

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _tcp.Dispose();
    }
}
