using System.Diagnostics.Metrics;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Threading.Channels;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Audit;

/// <summary>Audit actions (ARCHITECTURE section 4, promise 7).</summary>
public static class AuditActions
{
    public const string Auth = "auth";
    public const string SendAs = "send-as";
    public const string HeaderFrom = "header-from";
    public const string Relay = "relay";
    public const string TokenMint = "token-mint";
    public const string TokenRevoke = "token-revoke";
    public const string KeyRotate = "key-rotate";
    public const string TokenCheck = "token-check";
    public const string LegacyRelay = "legacy-relay";
    public const string DkimSign = "dkim-sign";
    public const string DkimKeygen = "dkim-keygen";
    public const string DkimRotate = "dkim-rotate";
    public const string VaultDecrypt = "vault-decrypt";
    public const string VaultSet = "vault-set";
    public const string VaultRotate = "vault-rotate";
    public const string VaultDelete = "vault-delete";
    public const string UpstreamAuth = "upstream-auth";

    /// <summary>An unreadable queue file moved to the spool's corrupt/ directory (not delivered unless an operator acts).</summary>
    public const string SpoolQuarantine = "spool-quarantine";

    /// <summary>An admin API call (subject: method and route template; token id: the admin key id).</summary>
    public const string Admin = "admin";

    /// <summary>One MCP tool call (issue #14): tool name as the subject, result ok | refused | invalid | error.</summary>
    public const string McpTool = "mcp-tool";
}

/// <summary>One audit record. Never carries a token, password or key: only the token id.</summary>
public sealed record AuditEvent
{
    public DateTimeOffset Time { get; init; }
    public required string Action { get; init; }
    public required string Result { get; init; }
    public string? Reason { get; init; }
    public string? Tenant { get; init; }
    public string? SessionId { get; init; }
    public string? ClientIp { get; init; }
    public string? Listener { get; init; }
    public string? TokenId { get; init; }
    public string? Subject { get; init; }

    /// <summary>The spooled message the event was for (vault decryptions and upstream AUTH during delivery).</summary>
    public string? QueueId { get; init; }

    /// <summary>The door the request came through: smtp, mcp or api (null for events outside a submission).</summary>
    public string? Channel { get; init; }

    /// <summary>True for refused cross-tenant attempts: logged at Warning and counted per tenant for alerting.</summary>
    public bool CrossTenant { get; init; }
}

public interface IAuditLog
{
    void Write(AuditEvent auditEvent);
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(AuditEvent))]
internal sealed partial class AuditJsonContext : JsonSerializerContext
{
    /// <summary>Readable "+00:00" and "+" in addresses (a log file, never HTML); control characters and quotes are still escaped.</summary>
    public static AuditJsonContext Relaxed { get; } = new(new JsonSerializerOptions
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    });
}

/// <summary>
/// JSON lines under DataDirectory/audit/audit.jsonl, written by one background writer as they come and fsynced at most
/// every Gateway:Audit:SyncInterval (durable without one fsync per event), rotated by size. Optionally echoed to stdout.
/// </summary>
public sealed partial class JsonLinesAuditLog : BackgroundService, IAuditLog
{
    /// <summary>
    /// Events waiting for the writer. Bounded: while the disk refuses writes, a flood of failed AUTHs must not grow memory
    /// without limit. Past this many the newest are dropped, counted (smtpgw.audit.dropped) and reported in the log.
    /// </summary>
    internal const int MaxPending = 65_536;

    readonly Channel<AuditEvent> _channel = Channel.CreateBounded<AuditEvent>(new BoundedChannelOptions(MaxPending)
    {
        SingleReader = true,
        FullMode = BoundedChannelFullMode.Wait,
    });

    readonly Counter<long> _dropped = Telemetry.Meter.CreateCounter<long>(Telemetry.AuditDropped, description: "Audit events dropped because the writer fell behind (disk trouble)");
    long _droppedTotal;
    readonly string _directory;
    readonly AuditConfig _config;
    readonly TimeProvider _time;
    readonly ILogger _logger;
    readonly Counter<long> _crossTenant = Telemetry.Meter.CreateCounter<long>(Telemetry.CrossTenantRefusals, description: "Refused cross-tenant attempts");
    readonly Counter<long> _events = Telemetry.Meter.CreateCounter<long>(Telemetry.AuditEvents, description: "Audit events written");

    public JsonLinesAuditLog(IOptions<GatewayConfig> options, TimeProvider time, ILoggerFactory loggers)
    {
        _config = options.Value.Audit;
        _directory = Path.Combine(GatewayPaths.DataDirectory(options.Value), "audit");
        _time = time;
        _logger = loggers.CreateLogger("SmtpGateway.Audit");
    }

    public string FilePath => Path.Combine(_directory, "audit.jsonl");

    public void Write(AuditEvent auditEvent)
    {
        var e = auditEvent.Time == default ? auditEvent with { Time = _time.GetUtcNow() } : auditEvent;
        if (e.CrossTenant)
        {
            _crossTenant.Add(1, new KeyValuePair<string, object?>("tenant", e.Tenant ?? "unknown"), new KeyValuePair<string, object?>("action", e.Action));
            AuditLogMessages.CrossTenant(_logger, e.Action, e.Tenant, e.Subject, e.Reason, e.SessionId, e.ClientIp);
        }

        _events.Add(1, new KeyValuePair<string, object?>("action", e.Action), new KeyValuePair<string, object?>("result", e.Result));
        if (!_channel.Writer.TryWrite(e) && !_channel.Reader.Completion.IsCompleted)
        {
            _dropped.Add(1, new KeyValuePair<string, object?>("action", e.Action));
            var total = Interlocked.Increment(ref _droppedTotal);
            if ((total & (total - 1)) == 0)
            {
                // 1st, 2nd, 4th, 8th... drop: loud, but not a log line per event in a flood.
                AuditLogMessages.Dropped(_logger, total, MaxPending);
            }
        }
    }

    /// <summary>Waits until everything written so far is on disk (tests, shutdown).</summary>
    public async Task FlushAsync()
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _flushWaiters.Enqueue(done);
        await _channel.Writer.WriteAsync(FlushMarker).ConfigureAwait(false);
        await done.Task.ConfigureAwait(false);
    }

    static readonly AuditEvent FlushMarker = new() { Action = "", Result = "" };
    readonly System.Collections.Concurrent.ConcurrentQueue<TaskCompletionSource> _flushWaiters = new();

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        Storage.AppendOnlyFile? file = null;
        var reader = _channel.Reader;

        // Lines written but not yet fsynced, and when the last fsync was: the fsync waits until Audit:SyncInterval has
        // passed since the last one (or for a flush request, or the stop), so that a stream of events shares one.
        var unsynced = false;
        long? lastSync = null;

        // One timer per interval, not one per event that arrives within it.
        CancellationTokenSource? due = null;
        try
        {
            while (true)
            {
                var syncIn = SyncIn(lastSync);
                Next next;
                if (_markersRead > 0 || (unsynced && syncIn <= TimeSpan.Zero))
                {
                    next = Next.SyncDue;
                }
                else
                {
                    if (unsynced)
                    {
                        due ??= new CancellationTokenSource(syncIn, _time);
                    }

                    next = await WaitAsync(reader, due?.Token, stoppingToken).ConfigureAwait(false);
                }

                if (next == Next.Done)
                {
                    break;
                }

                try
                {
                    if (reader.TryPeek(out _))
                    {
                        if (file is null)
                        {
                            Directory.CreateDirectory(_directory);
                            file = Open();
                        }

                        (file, var wrote) = WriteBatch(reader, file);
                        unsynced |= wrote;
                    }

                    if (next == Next.Events && _markersRead == 0 && !stoppingToken.IsCancellationRequested && SyncIn(lastSync) > TimeSpan.Zero)
                    {
                        continue;
                    }

                    if (unsynced)
                    {
                        Sync(file);
                        unsynced = false;
                        lastSync = _time.GetTimestamp();
                    }

                    due?.Dispose();
                    due = null;
                    CompleteFlushWaiters();
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    // Disk full, EIO, a permission slip: the writer must not die (mail keeps flowing and the trail would
                    // silently stop). Report, back off, reopen, and go on with the events still queued. What was written
                    // since the last fsync gets a last try at durability; a flush waits until an fsync succeeds.
                    AuditLogMessages.WriteFailed(_logger, ex);
                    TrySync(file);
                    file?.Dispose();
                    file = null;
                    unsynced = false;
                    _size = -1;
                    due?.Dispose();
                    due = null;
                    if (stoppingToken.IsCancellationRequested)
                    {
                        break;
                    }

                    await Task.Delay(TimeSpan.FromSeconds(1), _time, CancellationToken.None).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            if (unsynced)
            {
                TrySync(file);
            }

            file?.Dispose();
            due?.Dispose();
            _markersRead = int.MaxValue;
            CompleteFlushWaiters();
        }
    }

    void TrySync(Storage.AppendOnlyFile? file)
    {
        try
        {
            Sync(file);
        }
        catch (IOException ex)
        {
            AuditLogMessages.WriteFailed(_logger, ex);
        }
    }

    /// <summary>How long until the next fsync may run: none before the first, Audit:SyncInterval after the last.</summary>
    TimeSpan SyncIn(long? lastSync) => lastSync is { } t ? _config.SyncInterval - _time.GetElapsedTime(t) : TimeSpan.Zero;

    /// <summary>fsyncs of audit.jsonl so far (tests: Audit:SyncInterval batches them).</summary>
    internal long SyncCount => Interlocked.Read(ref _syncs);

    long _syncs;

    void Sync(Storage.AppendOnlyFile? file)
    {
        if (file is not null)
        {
            file.Flush();
            Interlocked.Increment(ref _syncs);
        }

        // Re-read at the next write: the CLI appends to the same file.
        _size = -1;
    }

    /// <summary>
    /// The file's size as of the last lseek plus what this writer appended since: the rotation check per line needs no
    /// lseek(2) per event. Unknown (-1) after every fsync, open and failure, so the CLI's appends count within an interval.
    /// </summary>
    long _size = -1;

    /// <summary>
    /// Flush markers read from the channel whose waiters are not completed yet (kept across a write failure, so a flush
    /// waits for the fsync after the reopen). Waiter k, in FlushAsync order, may be completed once k markers are read:
    /// its events went into the channel before its marker, and each marker read was written after its own waiter queued,
    /// so among k markers read one came after waiter k's events.
    /// </summary>
    int _markersRead;

    void CompleteFlushWaiters()
    {
        while (_markersRead > 0 && _flushWaiters.TryDequeue(out var waiter))
        {
            waiter.TrySetResult();
            _markersRead--;
        }

        _markersRead = 0;
    }

    /// <summary>Writes every queued event (a rotation fsyncs the file it closes); the caller fsyncs the rest.</summary>
    (Storage.AppendOnlyFile File, bool Wrote) WriteBatch(ChannelReader<AuditEvent> reader, Storage.AppendOnlyFile file)
    {
        var wrote = false;
        while (reader.TryPeek(out var e))
        {
            if (!ReferenceEquals(e, FlushMarker))
            {
                var json = JsonSerializer.SerializeToUtf8Bytes(e, AuditJsonContext.Relaxed.AuditEvent);
                var line = new byte[json.Length + 1];
                json.CopyTo(line, 0);
                line[^1] = (byte)'\n';
                if (_size < 0)
                {
                    _size = file.Length;
                }

                file.Write(line);
                _size += line.Length;
                wrote = true;
                if (_config.Stdout)
                {
                    using var stdout = Console.OpenStandardOutput();
                    stdout.Write(line);
                }
            }

            // Taken off the queue only once written: an event that failed to write is retried after the reopen.
            reader.TryRead(out _);
            if (ReferenceEquals(e, FlushMarker))
            {
                _markersRead++;
            }

            // Checked per line, not per batch, so a burst cannot grow one file far past the limit.
            if (_size >= _config.MaxFileSize)
            {
                Sync(file);
                file.Dispose();
                Rotate();
                file = Open();
                wrote = false;
            }
        }

        return (file, wrote);
    }

    enum Next
    {
        Events,
        SyncDue,
        Done,
    }

    /// <summary>Waits for events, or until <paramref name="syncDue"/> fires when lines wait for their fsync.</summary>
    static async ValueTask<Next> WaitAsync(ChannelReader<AuditEvent> reader, CancellationToken? syncDue, CancellationToken stoppingToken)
    {
        if (reader.TryPeek(out _))
        {
            return Next.Events;
        }

        using var linked = syncDue is { } d ? CancellationTokenSource.CreateLinkedTokenSource(d, stoppingToken) : null;
        try
        {
            return await reader.WaitToReadAsync(linked?.Token ?? stoppingToken).ConfigureAwait(false) ? Next.Events : Next.Done;
        }
        catch (OperationCanceledException) when (!stoppingToken.IsCancellationRequested)
        {
            return Next.SyncDue;
        }
        catch (OperationCanceledException)
        {
            // Drain what is left before stopping: an audit trail with a hole at shutdown is no trail.
            return reader.TryPeek(out _) ? Next.Events : Next.Done;
        }
    }

    // O_APPEND (not FileMode.Append): the CLI appends to the same file while the gateway writes.
    Storage.AppendOnlyFile Open() => Storage.AppendOnlyFile.Open(FilePath);

    void Rotate()
    {
        for (var i = _config.MaxFiles - 1; i >= 1; i--)
        {
            var from = Path.Combine(_directory, $"audit.{i}.jsonl");
            if (File.Exists(from))
            {
                File.Move(from, Path.Combine(_directory, $"audit.{i + 1}.jsonl"), overwrite: true);
            }
        }

        File.Move(FilePath, Path.Combine(_directory, "audit.1.jsonl"), overwrite: true);
        var excess = Path.Combine(_directory, $"audit.{_config.MaxFiles + 1}.jsonl");
        if (File.Exists(excess))
        {
            File.Delete(excess);
        }
    }

    static partial class AuditLogMessages
    {
        [LoggerMessage(EventId = EventIds.Audit + 0, Level = LogLevel.Warning, Message = "Refused cross-tenant {Action} for tenant {Tenant}: {Subject} ({Reason}); session {SessionId} from {ClientIp}")]
        public static partial void CrossTenant(ILogger logger, string action, string? tenant, string? subject, string? reason, string? sessionId, string? clientIp);

        [LoggerMessage(EventId = EventIds.Audit + 1, Level = LogLevel.Critical, Message = "Audit log write failed")]
        public static partial void WriteFailed(ILogger logger, Exception exception);

        [LoggerMessage(EventId = EventIds.Audit + 2, Level = LogLevel.Critical, Message = "Audit events dropped: {Total} so far; the writer is {Capacity} events behind (is the audit directory writable?)")]
        public static partial void Dropped(ILogger logger, long total, int capacity);
    }
}
