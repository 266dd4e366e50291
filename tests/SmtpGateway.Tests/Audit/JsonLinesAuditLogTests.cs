using System.Diagnostics.Metrics;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Diagnostics;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Audit;

public sealed class JsonLinesAuditLogTests : IDisposable
{
    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-audit");

    JsonLinesAuditLog NewLog(long maxFileSize = 1 << 20, int maxFiles = 3) =>
        new(Options.Create(new GatewayConfig { DataDirectory = _data.FullName, Audit = new AuditConfig { MaxFileSize = maxFileSize, MaxFiles = maxFiles } }), TimeProvider.System, NullLoggerFactory.Instance);

    JsonLinesAuditLog NewLog(TimeProvider time, TimeSpan syncInterval) =>
        new(Options.Create(new GatewayConfig { DataDirectory = _data.FullName, Audit = new AuditConfig { SyncInterval = syncInterval } }), time, NullLoggerFactory.Instance);

    int LinesOnDisk(JsonLinesAuditLog log) => File.Exists(log.FilePath) ? File.ReadAllLines(log.FilePath).Length : 0;

    [Fact]
    public async Task Events_reach_the_file_at_once_and_share_one_fsync_per_sync_interval()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-12-05T07:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var log = NewLog(time, TimeSpan.FromMilliseconds(100));
        await log.StartAsync(CancellationToken.None);
        var sent = 0;
        async Task SendAndSeeOnDisk()
        {
            log.Write(new AuditEvent { Action = AuditActions.LegacyRelay, Result = "ok", SessionId = $"s{sent}" });
            sent++;
            await Poll.UntilAsync(() => LinesOnDisk(log) == sent);
        }

        // The first event after a quiet interval is fsynced at once.
        await SendAndSeeOnDisk();
        await Poll.UntilAsync(() => log.SyncCount == 1);

        // Within the interval: every line is written as it comes, none is fsynced until the interval has passed. Each
        // check follows a line the writer has handled, so an fsync it made for an earlier event would already count.
        for (var i = 0; i < 20; i++)
        {
            await SendAndSeeOnDisk();
        }

        time.Advance(TimeSpan.FromMilliseconds(99));
        await SendAndSeeOnDisk();
        Assert.Equal(1, log.SyncCount);
        time.Advance(TimeSpan.FromMilliseconds(1));
        await Poll.UntilAsync(() => log.SyncCount == 2);

        // Nothing new: no fsync however much time passes; the next event after that quiet time is fsynced at once.
        time.Advance(TimeSpan.FromSeconds(5));
        await SendAndSeeOnDisk();
        await Poll.UntilAsync(() => log.SyncCount == 3);

        // A flush request does not wait for the interval: written, not fsynced, then flushed without advancing the clock.
        await SendAndSeeOnDisk();
        Assert.Equal(3, log.SyncCount);
        await log.FlushAsync();
        Assert.Equal(4, log.SyncCount);

        // A flush with nothing unsynced costs no fsync.
        await log.FlushAsync();
        Assert.Equal(4, log.SyncCount);

        // Stopping fsyncs what is written.
        await SendAndSeeOnDisk();
        Assert.Equal(4, log.SyncCount);
        await log.StopAsync(CancellationToken.None);
        Assert.Equal(5, log.SyncCount);
    }

    [Fact]
    public async Task A_flush_waits_for_the_events_written_before_it_even_while_an_interval_runs()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-12-05T07:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var log = NewLog(time, TimeSpan.FromMilliseconds(100));
        await log.StartAsync(CancellationToken.None);
        for (var round = 0; round < 200; round++)
        {
            // Interleave writes, expiring intervals and flushes: whatever the writer is doing, a completed flush means
            // every event written before it is in the file (the first test shows the flush's fsync).
            log.Write(new AuditEvent { Action = AuditActions.LegacyRelay, Result = "ok", SessionId = $"r{round}" });
            if (round % 3 == 0)
            {
                time.Advance(TimeSpan.FromMilliseconds(100));
            }

            await log.FlushAsync();
            Assert.Equal(round + 1, LinesOnDisk(log));
        }

        await log.StopAsync(CancellationToken.None);
    }

    [Fact]
    public async Task A_zero_sync_interval_fsyncs_every_batch()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-12-05T07:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var log = NewLog(time, TimeSpan.Zero);
        await log.StartAsync(CancellationToken.None);
        for (var i = 1; i <= 5; i++)
        {
            log.Write(new AuditEvent { Action = AuditActions.LegacyRelay, Result = "ok", SessionId = $"s{i}" });
            await Poll.UntilAsync(() => log.SyncCount == i);
            Assert.Equal(i, LinesOnDisk(log));
        }

        await log.StopAsync(CancellationToken.None);
        Assert.Equal(5, log.SyncCount);
    }

    [Fact]
    public async Task Events_are_durable_json_lines_with_every_field()
    {
        var log = NewLog();
        await log.StartAsync(CancellationToken.None);
        log.Write(new AuditEvent { Action = AuditActions.Auth, Result = "refused", Reason = "bad signature", Tenant = "tenant-a", SessionId = "s1", ClientIp = "192.0.2.1", Listener = "submission", TokenId = "tok_1" });
        await log.FlushAsync();
        await log.StopAsync(CancellationToken.None);

        var line = Assert.Single(File.ReadAllLines(log.FilePath));
        using var json = JsonDocument.Parse(line);
        var root = json.RootElement;
        Assert.Equal("auth", root.GetProperty("action").GetString());
        Assert.Equal("refused", root.GetProperty("result").GetString());
        Assert.Equal("bad signature", root.GetProperty("reason").GetString());
        Assert.Equal("tenant-a", root.GetProperty("tenant").GetString());
        Assert.Equal("tok_1", root.GetProperty("tokenId").GetString());
        Assert.Equal("192.0.2.1", root.GetProperty("clientIp").GetString());
        Assert.True(root.GetProperty("time").GetDateTimeOffset() > DateTimeOffset.UtcNow.AddMinutes(-1));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(log.FilePath));
    }

    [Fact]
    public async Task A_writer_that_cannot_keep_up_holds_a_bounded_backlog_and_counts_what_it_drops()
    {
        long dropped = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == Telemetry.MeterName && instrument.Name == Telemetry.AuditDropped)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref dropped, value));
        listener.Start();

        // Not started: nothing drains the queue, as when every write to the audit directory fails.
        var log = NewLog(maxFileSize: 256L << 20);
        for (var i = 0; i < JsonLinesAuditLog.MaxPending + 100; i++)
        {
            log.Write(new AuditEvent { Action = AuditActions.Auth, Result = "refused", Subject = $"flood {i}" });
        }

        Assert.Equal(100, Interlocked.Read(ref dropped));

        // Once it runs, what was kept is written in order; the process never held more than the bound.
        await log.StartAsync(CancellationToken.None);
        await log.FlushAsync();
        await log.StopAsync(CancellationToken.None);
        var lines = File.ReadAllLines(log.FilePath);
        Assert.Equal(JsonLinesAuditLog.MaxPending, lines.Length);
        Assert.Contains("\"flood 0\"", lines[0], StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_file_rotates_by_size_and_keeps_a_bounded_number()
    {
        var log = NewLog(maxFileSize: 4096, maxFiles: 2);
        await log.StartAsync(CancellationToken.None);
        for (var i = 0; i < 200; i++)
        {
            log.Write(new AuditEvent { Action = AuditActions.SendAs, Result = "refused", Subject = $"user{i}@tenant-b.example", Tenant = "tenant-a" });
            if (i % 10 == 0)
            {
                await log.FlushAsync();
            }
        }

        await log.FlushAsync();
        await log.StopAsync(CancellationToken.None);
        var files = Directory.GetFiles(Path.GetDirectoryName(log.FilePath)!).Select(Path.GetFileName).Order().ToList();
        Assert.Equal(["audit.1.jsonl", "audit.2.jsonl", "audit.jsonl"], files);
        Assert.All(Directory.GetFiles(Path.GetDirectoryName(log.FilePath)!), f => Assert.True(new FileInfo(f).Length < 4096 + 512));
    }

    [Fact]
    public async Task Cross_tenant_refusals_are_counted_per_tenant()
    {
        var counts = new Dictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == Telemetry.MeterName && instrument.Name == Telemetry.CrossTenantRefusals)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "tenant")
                {
                    lock (counts)
                    {
                        counts[(string)tag.Value!] = counts.GetValueOrDefault((string)tag.Value!) + value;
                    }
                }
            }
        });
        listener.Start();

        var log = NewLog();
        await log.StartAsync(CancellationToken.None);
        log.Write(new AuditEvent { Action = AuditActions.Auth, Result = "refused", Tenant = "tenant-b", CrossTenant = true });
        log.Write(new AuditEvent { Action = AuditActions.SendAs, Result = "refused", Tenant = "tenant-b", CrossTenant = true });
        log.Write(new AuditEvent { Action = AuditActions.SendAs, Result = "refused", Tenant = "tenant-a", CrossTenant = false });
        await log.FlushAsync();
        await log.StopAsync(CancellationToken.None);
        lock (counts)
        {
            Assert.Equal(2, counts.GetValueOrDefault("tenant-b"));
            Assert.False(counts.ContainsKey("tenant-a"));
        }
    }

    [Fact]
    public async Task Cli_appends_interleave_whole_with_the_gateway_writer()
    {
        var log = NewLog();
        await log.StartAsync(CancellationToken.None);
        var cli = Task.Run(() =>
        {
            for (var i = 0; i < 100; i++)
            {
                AuditFile.Append(_data.FullName, new AuditEvent { Action = AuditActions.TokenMint, Result = "ok", TokenId = $"tok_{i}" });
            }
        });
        for (var i = 0; i < 100; i++)
        {
            log.Write(new AuditEvent { Action = AuditActions.Auth, Result = "ok", TokenId = $"gw_{i}" });
        }

        await cli;
        await log.FlushAsync();
        await log.StopAsync(CancellationToken.None);
        var lines = File.ReadAllLines(log.FilePath);
        Assert.Equal(200, lines.Length);
        Assert.All(lines, l => JsonDocument.Parse(l).Dispose());
    }

    public void Dispose() => _data.Delete(recursive: true);
}

public sealed class AppendOnlyFileTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("smtpgw-append");

    [Fact]
    public void Two_long_lived_writers_never_overwrite_each_other()
    {
        // Two descriptors on one file behave like two processes: with O_APPEND each write lands at the current end.
        var path = Path.Combine(_dir.FullName, "log.jsonl");
        using var a = SmtpGateway.Storage.AppendOnlyFile.Open(path);
        using var b = SmtpGateway.Storage.AppendOnlyFile.Open(path);
        for (var i = 0; i < 100; i++)
        {
            a.Write(System.Text.Encoding.ASCII.GetBytes($"a{i}\n"));
            b.Write(System.Text.Encoding.ASCII.GetBytes($"b{i}\n"));
        }

        a.Flush();
        var lines = File.ReadAllLines(path);
        Assert.Equal(200, lines.Length);
        Assert.Equal(Enumerable.Range(0, 100).SelectMany(i => new[] { $"a{i}", $"b{i}" }), lines);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
    }

    public void Dispose() => _dir.Delete(true);
}
