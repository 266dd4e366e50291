using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Listener;
using SmtpGateway.Spool;
using SmtpGateway.Submission;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Listener;

/// <summary>Spool double for listener tests: records commits, or fails on demand.</summary>
public sealed class RecordingSpool : IMessageSpool
{
    int _next;

    public ConcurrentQueue<(SpoolEnvelope Envelope, byte[] Message)> Commits { get; } = new();

    public bool Fail { get; set; }

    public string NewId() => $"T{Interlocked.Increment(ref _next):D6}";

    /// <summary>When set, scratch files cannot be created (a full or broken disk under a spilling message).</summary>
    public bool FailScratch { get; set; }

    public FileStream CreateScratchFile() => FailScratch ? throw new IOException("No space left on device (test)") : ScratchFile.Create(Path.GetTempPath());

    /// <summary>Messages whose body went to a scratch file (the streaming path), by queue id.</summary>
    public ConcurrentDictionary<string, bool> Spilled { get; } = new();

    public Task CommitAsync(SpoolEnvelope envelope, MessageContent content, CancellationToken cancellationToken)
    {
        if (Fail)
        {
            throw new SpoolWriteException("disk full (test)");
        }

        Spilled[envelope.Id] = content.Tail is not null;
        Commits.Enqueue((envelope, content.ToArray()));
        return Task.CompletedTask;
    }
}

/// <summary>Audit double: keeps every event for assertions.</summary>
public sealed class RecordingAudit : IAuditLog
{
    public ConcurrentQueue<AuditEvent> Events { get; } = new();

    public void Write(AuditEvent auditEvent) => Events.Enqueue(auditEvent);
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

    readonly DirectoryInfo _data;

    TestGateway(SmtpListenerService service, RecordingSpool spool, RecordingAudit audit, TokenService tokens, DirectoryInfo data, SmtpGateway.Policy.TenantRateLimits rateLimits)
    {
        RateLimits = rateLimits;
        _service = service;
        Spool = spool;
        Audit = audit;
        Tokens = tokens;
        _data = data;
    }

    public RecordingSpool Spool { get; }

    public RecordingAudit Audit { get; }

    public TokenService Tokens { get; }

    /// <summary>The per-tenant counters (issue 12): tests read the open session slots from it.</summary>
    public SmtpGateway.Policy.TenantRateLimits RateLimits { get; }

    public SmtpListenerService Service => _service;

    public IPEndPoint Submission => _service.BoundEndPoints[0];

    public IPEndPoint ImplicitTls => _service.BoundEndPoints[1];

    public IPEndPoint Relay => _service.BoundEndPoints[2];

    /// <summary>
    /// Two tenants: tenant-a (tenant-a.example, legacy network 127.0.0.1/32 unless overridden; DKIM required) and tenant-b
    /// (tenant-b.example, 127.0.0.2/32; "Dkim:Unsigned"). Relay-listener clients from 127.0.0.1 therefore act for tenant-a.
    /// <paramref name="envelope"/> turns on envelope isolation (issue #7): return-path checks, suppression, header hygiene.
    /// <paramref name="tenantKeys"/> holds the token keys (an in-memory fake unless a test needs to reach or break it).
    /// <paramref name="tenantLimits"/> sets a tenant's "Limits" section (issue 12), by tenant id.
    /// </summary>
    public static async Task<TestGateway> StartAsync(
        Action<LimitsConfig>? limits = null,
        string[]? tenantANetworks = null,
        TimeSpan? shutdownTimeout = null,
        Action<IdentityConfig>? identity = null,
        TimeProvider? time = null,
        SmtpGateway.Signing.IMessageSigner? signer = null,
        EnvelopeServices? envelope = null,
        MessageMemoryBudget? budget = null,
        SmtpGateway.Hsm.ITenantKeys? tenantKeys = null,
        Action<string, TenantLimitsConfig>? tenantLimits = null)
    {
        // Transcripts assert replies, not the rate-limit reply's pace: that has its own test (TenantLimitsTranscriptTests).
        var limitsConfig = new LimitsConfig { RateLimitReplyDelay = TimeSpan.Zero };
        limits?.Invoke(limitsConfig);
        var identityConfig = new IdentityConfig { Audience = "gw-test" };
        identity?.Invoke(identityConfig);
        var clock = time ?? TimeProvider.System;
        var errors = new List<string>();
        var configs = new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Domains = ["tenant-a.example"], BounceDomain = "bounces.tenant-a.example", Networks = [.. tenantANetworks ?? ["127.0.0.1/32"]] },
            // tenant-b has no DKIM keys on purpose: it opts out of signing; tenant-a must sign (tests give it keys).
            ["tenant-b"] = new() { Domains = ["tenant-b.example"], Networks = ["127.0.0.2/32"], Dkim = new() { Unsigned = true } },
        };
        foreach (var (id, config) in configs)
        {
            tenantLimits?.Invoke(id, config.Limits);
        }

        var tenants = TenantSnapshot.Build(configs, errors);
        Assert.Empty(errors);

        var rateLimits = new SmtpGateway.Policy.TenantRateLimits(clock, NullLogger.Instance);
        var data = Directory.CreateTempSubdirectory("smtpgw-listener");
        var tokens = new TokenService(new TokenStore(data.FullName, clock, tenantKeys ?? new InMemoryTenantKeys()), () => tenants, identityConfig, clock);
        var audit = new RecordingAudit();
        var spool = new RecordingSpool();
        var pipeline = new SubmissionPipeline(
            new SubmissionServices(
                "mx.test.example",
                limitsConfig,
                new IdentityServices(
                    () => tenants,
                    new TokenAuthenticator(tokens, audit),
                    tokens.StillValid,
                    new AuthThrottle(identityConfig.AuthFailuresBeforeDelay, identityConfig.AuthFailuresBeforeDisconnect, identityConfig.AuthFailureWindow, clock),
                    audit,
                    identityConfig),
                spool,
                clock,
                budget ?? new MessageMemoryBudget(limitsConfig.MaxInFlightMemory),
                signer,
                envelope,
                rateLimits),
            NullLoggerFactory.Instance);
        var services = new SessionServices("mx.test.example", limitsConfig, SharedTls.Value, pipeline, clock, new ListenerMetrics());
        var listeners = new List<ListenerModel>
        {
            new("submission", ListenerKind.Submission, new IPEndPoint(IPAddress.Loopback, 0)),
            new("submissions", ListenerKind.ImplicitTls, new IPEndPoint(IPAddress.Loopback, 0)),
            new("relay", ListenerKind.Relay, new IPEndPoint(IPAddress.Loopback, 0)),
        };
        var service = new SmtpListenerService(listeners, services, shutdownTimeout ?? TimeSpan.FromSeconds(5), NullLoggerFactory.Instance);
        await service.StartAsync(CancellationToken.None);
        return new TestGateway(service, spool, audit, tokens, data, rateLimits);
    }

    int _nextPort = 40000;

    /// <summary>
    /// A client connected to <paramref name="endPoint"/>'s listener over an in-memory pipe pair (as Kestrel's in-memory
    /// transport), not a socket: the server side is the same <see cref="SmtpSession"/> with the same limits and drain, and
    /// every octet either way is exactly what the session wrote. TLS (implicit or STARTTLS) runs over the pipe as well.
    /// </summary>
    public async Task<RawSmtpClient> ConnectAsync(IPEndPoint endPoint, bool implicitTls = false, IPAddress? source = null)
    {
        var toServer = new System.IO.Pipelines.Pipe();
        var toClient = new System.IO.Pipelines.Pipe();
        var remote = new IPEndPoint(source ?? IPAddress.Loopback, Interlocked.Increment(ref _nextPort));
        var serverSide = new DuplexPipeStream(toServer.Reader, toClient.Writer);
        _service.Accept(serverSide, _service.ListenerAt(endPoint), remote);
        var client = await RawSmtpClient.OverAsync(new DuplexPipeStream(toClient.Reader, toServer.Writer), implicitTls);
        client.ServerSide = serverSide;
        return client;
    }

    public async ValueTask DisposeAsync()
    {
        await _service.StopAsync(CancellationToken.None);
        await _service.DisposeAsync();
        _data.Delete(recursive: true);
    }
}

/// <summary>A raw SMTP client that shows exactly what the server says.</summary>
public sealed class RawSmtpClient : IAsyncDisposable
{
    readonly TcpClient? _tcp;
    Stream _stream;
    readonly List<byte> _pending = [];

    RawSmtpClient(TcpClient? tcp, Stream stream)
    {
        _tcp = tcp;
        _stream = stream;
    }

    /// <summary>A client over an already connected stream (the in-memory transport).</summary>
    public static async Task<RawSmtpClient> OverAsync(Stream stream, bool implicitTls)
    {
        if (implicitTls)
        {
            var ssl = new SslStream(stream, false, (_, _, _, _) => true);
            await ssl.AuthenticateAsClientAsync("localhost");
            stream = ssl;
        }

        return new RawSmtpClient(null, stream);
    }

    public static async Task<RawSmtpClient> ConnectAsync(IPEndPoint endPoint, bool implicitTls = false, IPAddress? source = null)
    {
        // A source address on 127/8 lets one machine play several legacy clients (tenant networks).
        var tcp = source is null ? new TcpClient() : new TcpClient(new IPEndPoint(source, 0));
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

    /// <summary>The session's end of an in-memory connection (<see cref="TestGateway.ConnectAsync"/>); null over TCP.</summary>
    public DuplexPipeStream? ServerSide { get; internal set; }

    /// <summary>
    /// Sends <paramref name="text"/> and completes once the session has taken all of it and waits for more (or with
    /// <paramref name="reply"/>, whichever comes first). Replaces a real-time pause before moving a fake clock: the session
    /// has then re-armed whatever timer the octets concern. In-memory connections only.
    /// </summary>
    public async Task SendAndSettleAsync(string text, Task reply)
    {
        ArgumentException.ThrowIfNullOrEmpty(text); // nothing sent, nothing read: the wait would never end
        var server = ServerSide ?? throw new InvalidOperationException("SendAndSettleAsync needs an in-memory connection");
        var mark = server.Waits;
        await SendRawAsync(text);
        await Task.WhenAny(reply, server.WaitedSinceAsync(mark));
    }

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

    /// <summary>Every octet the server sends until it closes the connection, exactly (byte-exact transcripts).</summary>
    public async Task<string> ReadToEndAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(10));
        using var all = new MemoryStream();
        all.Write([.. _pending]);
        _pending.Clear();
        await _stream.CopyToAsync(all, cts.Token);
        return Encoding.UTF8.GetString(all.ToArray());
    }

    /// <summary>True once the server has closed the connection (read returns end of stream).</summary>
    public async Task<bool> IsClosedAsync() => await ReadReplyAsync(TimeSpan.FromSeconds(5)) is null;

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _tcp?.Dispose();
    }
}

/// <summary>
/// One end of an in-memory connection: reads from one pipe, writes to the other; closing completes both. It counts the
/// reads that find nothing to read (<see cref="Waits"/>): the moment the reader has taken everything sent and waits, which
/// a test needs before it moves a fake clock (instead of pausing on the real one).
/// </summary>
public sealed class DuplexPipeStream(System.IO.Pipelines.PipeReader input, System.IO.Pipelines.PipeWriter output) : Stream
{
    readonly Stream _in = input.AsStream();
    readonly Stream _out = output.AsStream();
    readonly Lock _gate = new();
    long _waits;
    TaskCompletionSource _waited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Reads so far that found the pipe empty.</summary>
    public long Waits
    {
        get
        {
            lock (_gate)
            {
                return _waits;
            }
        }
    }

    /// <summary>Completes at the first read after <paramref name="mark"/> (a value of <see cref="Waits"/>) that finds the pipe empty.</summary>
    public async Task WaitedSinceAsync(long mark)
    {
        while (true)
        {
            Task waited;
            lock (_gate)
            {
                if (_waits > mark)
                {
                    return;
                }

                waited = _waited.Task;
            }

            await waited.ConfigureAwait(false);
        }
    }

    /// <summary>Before a read: when nothing is buffered, the reader is about to wait.</summary>
    void NoteRead()
    {
        if (input.TryRead(out var result))
        {
            // Looked at, not taken: the read below sees the same octets.
            input.AdvanceTo(result.Buffer.Start);
            if (!result.Buffer.IsEmpty || result.IsCompleted || result.IsCanceled)
            {
                return;
            }
        }

        TaskCompletionSource waited;
        lock (_gate)
        {
            _waits++;
            waited = _waited;
            _waited = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        waited.SetResult();
    }

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count)
    {
        NoteRead();
        return _in.Read(buffer, offset, count);
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        NoteRead();
        return _in.ReadAsync(buffer, cancellationToken);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        NoteRead();
        return _in.ReadAsync(buffer, offset, count, cancellationToken);
    }

    public override void Write(byte[] buffer, int offset, int count) => _out.Write(buffer, offset, count);

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => _out.WriteAsync(buffer, cancellationToken);

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => _out.WriteAsync(buffer, offset, count, cancellationToken);

    public override void Flush() => _out.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => _out.FlushAsync(cancellationToken);

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            // The peer reads end of stream, as after a TCP FIN.
            output.Complete();
            input.Complete();
        }

        base.Dispose(disposing);
    }
}
