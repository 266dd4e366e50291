using System.Net;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Configuration;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Listener;
using SmtpGateway.Vault;

namespace SmtpGateway.Tests.Vault;

/// <summary>A vault over a temp data directory, in-memory tenant keys, a fake clock and a scripted token endpoint.</summary>
internal sealed class VaultTestKit : IDisposable
{
    public VaultTestKit()
    {
        DataDirectory = Path.Combine(Path.GetTempPath(), "smtpgw-vault-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(DataDirectory);
        Vault = NewVault();
    }

    public string DataDirectory { get; }

    public InMemoryTenantKeys Keys { get; } = new();

    public RecordingAudit Audit { get; } = new();

    public FakeTimeProvider Clock { get; } = new(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));

    public VaultConfig Config { get; } = new();

    public TokenEndpointStub Endpoint { get; } = new();

    public CredentialVault Vault { get; }

    /// <summary>Another process's view of the same data directory (the CLI next to the gateway).</summary>
    public CredentialVault NewVault() => new(DataDirectory, Keys, Audit, Clock, Config, Endpoint, NullLogger<CredentialVault>.Instance);

    public static byte[] Bytes(string text) => Encoding.UTF8.GetBytes(text);

    public IEnumerable<SmtpGateway.Audit.AuditEvent> Events(string action) => Audit.Events.Where(e => e.Action == action);

    public void Dispose()
    {
        Vault.Dispose();
        Directory.Delete(DataDirectory, recursive: true);
    }
}

/// <summary>A token endpoint in process: answers each POST with the next scripted reply, and keeps the request bodies.</summary>
internal sealed class TokenEndpointStub : HttpMessageHandler
{
    readonly Queue<(HttpStatusCode Status, string Body)> _replies = new();
    int _calls;

    public List<string> Bodies { get; } = [];

    public int Calls => Volatile.Read(ref _calls);

    /// <summary>When set, the answer's body breaks off with this after its headers (a connection reset mid-answer).</summary>
    public Exception? BreakBody { get; set; }

    /// <summary>When set, every request waits for it (to hold a refresh open while others arrive).</summary>
    public TaskCompletionSource? Gate { get; set; }

    public void Reply(string json, HttpStatusCode status = HttpStatusCode.OK)
    {
        lock (_replies)
        {
            _replies.Enqueue((status, json));
        }
    }

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _calls);
        var body = await request.Content!.ReadAsStringAsync(cancellationToken);
        (HttpStatusCode Status, string Body) reply;
        lock (_replies)
        {
            Bodies.Add(body);
            reply = _replies.Count > 0 ? _replies.Dequeue() : (HttpStatusCode.InternalServerError, "{}");
        }

        if (Gate is { } gate)
        {
            await gate.Task.WaitAsync(cancellationToken);
        }

        return BreakBody is { } broken
            ? new HttpResponseMessage(reply.Status) { Content = new StreamContent(new BrokenStream(broken)) }
            : new HttpResponseMessage(reply.Status) { Content = new StringContent(reply.Body, Encoding.UTF8, "application/json") };
    }

    sealed class BrokenStream(Exception error) : Stream
    {
        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => 0; set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw error;

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => ValueTask.FromException<int>(error);

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
