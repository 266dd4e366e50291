using System.Buffers;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Listener;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Spool;

public sealed class FileSpoolTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly ManualTimeProvider _time = new();

    public void Dispose() => _dir.Dispose();

    string Root => _dir.Combine("spool");

    static List<string> Drain(FileSpool spool)
    {
        var ids = new List<string>();
        while (spool.Ready.TryRead(out var id))
        {
            ids.Add(id);
        }

        return ids;
    }

    [Fact]
    public async Task Commit_then_recover_in_a_new_instance_yields_same_envelope_and_bytes()
    {
        var bytes = Encoding.UTF8.GetBytes("Subject: caf\u00e9\r\n\r\n\u00fcber\r\n.leading dot\r\n");
        SpoolEnvelope envelope;
        using (var spool = NewSpool(Root, _time))
        {
            envelope = NewEnvelope(spool, _time, ["a@example.net", "b@example.net"], tenant: "tenant-a", eightBitMime: true, smtpUtf8: true);
            await spool.CommitAsync(envelope, Segmented(bytes), CancellationToken.None);
            Assert.Equal([envelope.Id], Drain(spool));
        }

        using var recovered = NewSpool(Root, _time);
        await recovered.RecoverAsync(CancellationToken.None);
        Assert.Equal([envelope.Id], Drain(recovered));

        var message = await recovered.LoadAsync(envelope.Id, CancellationToken.None);
        Assert.NotNull(message);
        Assert.Equal(envelope.Id, message.Envelope.Id);
        Assert.Equal(envelope.TenantId, message.Envelope.TenantId);
        Assert.Equal(envelope.MailFrom, message.Envelope.MailFrom);
        Assert.Equal(envelope.Recipients, message.Envelope.Recipients);
        Assert.Equal(envelope.ReceivedAt, message.Envelope.ReceivedAt);
        Assert.Equal(envelope.ClientAddress, message.Envelope.ClientAddress);
        Assert.Equal(envelope.Listener, message.Envelope.Listener);
        Assert.True(message.Envelope.SmtpUtf8);
        Assert.True(message.Envelope.EightBitMime);
        Assert.True(message.EightBitData);
        Assert.Equal(bytes.Length, message.Length);
        Assert.Equal(bytes, await ReadContentAsync(message));
        Assert.Equal(0, message.State.Attempts);
        Assert.All(message.State.Recipients, r => Assert.Equal(RecipientStatus.Pending, r.Status));
    }

    [Fact]
    public async Task Empty_message_and_null_sender_round_trip()
    {
        using var spool = NewSpool(Root, _time);
        var envelope = NewEnvelope(spool, _time, mailFrom: "");
        await spool.CommitAsync(envelope, ReadOnlySequence<byte>.Empty, CancellationToken.None);
        var message = await spool.LoadAsync(envelope.Id, CancellationToken.None);
        Assert.NotNull(message);
        Assert.Equal("", message.Envelope.MailFrom);
        Assert.Empty(await ReadContentAsync(message));
        Assert.False(message.EightBitData);
    }

    [Fact]
    public async Task Recovery_deletes_tmp_leftovers_and_never_delivers_them()
    {
        using (var spool = NewSpool(Root, _time))
        {
            await spool.CommitAsync(NewEnvelope(spool, _time), Segmented(SampleMessage()), CancellationToken.None);
        }

        // A crash mid-write leaves a partial file in tmp/ (and a half-written state file).
        var partialId = "0000000000000000DEAD";
        await File.WriteAllBytesAsync(Path.Combine(Root, "tmp", partialId), Encoding.ASCII.GetBytes("SGWSPOOL1 100 5000\n{\"Envel"));
        await File.WriteAllTextAsync(Path.Combine(Root, "tmp", partialId + ".123.state"), "{");

        using var recovered = NewSpool(Root, _time);
        await recovered.RecoverAsync(CancellationToken.None);

        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "tmp")));
        var ready = Drain(recovered);
        Assert.Single(ready);
        Assert.DoesNotContain(partialId, ready);
        Assert.Null(await recovered.LoadAsync(partialId, CancellationToken.None));
    }

    [Fact]
    public async Task Recovery_moves_truncated_and_garbage_queue_files_to_corrupt()
    {
        string good, truncated;
        using (var spool = NewSpool(Root, _time))
        {
            var a = NewEnvelope(spool, _time);
            var b = NewEnvelope(spool, _time);
            await spool.CommitAsync(a, Segmented(SampleMessage()), CancellationToken.None);
            await spool.CommitAsync(b, Segmented(SampleMessage()), CancellationToken.None);
            (good, truncated) = (a.Id, b.Id);
        }

        var truncatedPath = Path.Combine(Root, "queue", truncated);
        var length = new FileInfo(truncatedPath).Length;
        await using (var stream = new FileStream(truncatedPath, FileMode.Open))
        {
            stream.SetLength(length - 5);
        }

        await File.WriteAllTextAsync(Path.Combine(Root, "queue", "0000000000000000BEEF"), "not a spool file");
        await File.WriteAllTextAsync(Path.Combine(Root, "queue", "0000000000000000CAFE"), "SGWSPOOL1 2 0\n{}");

        using var recovered = NewSpool(Root, _time);
        await recovered.RecoverAsync(CancellationToken.None);

        Assert.Equal([good], Drain(recovered));
        Assert.Equal([good], Directory.EnumerateFiles(Path.Combine(Root, "queue")).Select(Path.GetFileName));
        var corrupt = Directory.EnumerateFiles(Path.Combine(Root, "corrupt")).Select(Path.GetFileName).Order().ToArray();
        Assert.Equal(new[] { "0000000000000000BEEF", "0000000000000000CAFE", truncated }.Order(), corrupt);
    }

    [Fact]
    public async Task An_unreadable_state_file_is_quarantined_with_an_audit_event_at_recovery_and_at_load_never_a_crash()
    {
        string good, blocked, later;
        using (var spool = NewSpool(Root, _time))
        {
            var envelopes = Enumerable.Range(0, 3).Select(_ => NewEnvelope(spool, _time)).ToArray();
            foreach (var envelope in envelopes)
            {
                await spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
            }

            (good, blocked, later) = (envelopes[0].Id, envelopes[1].Id, envelopes[2].Id);
        }

        // A directory where the state file belongs: opening it fails with UnauthorizedAccessException on Linux, as a
        // root-owned 0600 file does for a gateway running as another user (tests run as root, so chmod would not bite).
        Directory.CreateDirectory(Path.Combine(Root, "state", blocked + ".json"));
        var audit = new RecordingAudit();
        using var recovered = new FileSpool(Options.Create(new GatewayConfig { Spool = { Directory = Root } }), _time, NullLogger<FileSpool>.Instance, audit);
        await recovered.RecoverAsync(CancellationToken.None);

        Assert.Equal(new[] { good, later }.Order(), Drain(recovered).Order());
        Assert.Equal([blocked], Directory.EnumerateFiles(Path.Combine(Root, "corrupt")).Select(Path.GetFileName));
        var quarantined = Assert.Single(audit.Events);
        Assert.Equal((AuditActions.SpoolQuarantine, blocked), (quarantined.Action, quarantined.QueueId));

        // At run time the same: the message is quarantined and the load answers "not there", no exception for delivery.
        Directory.CreateDirectory(Path.Combine(Root, "state", later + ".json"));
        Assert.Null(await recovered.LoadAsync(later, CancellationToken.None));
        Assert.Equal(new[] { blocked, later }.Order(), Directory.EnumerateFiles(Path.Combine(Root, "corrupt")).Select(Path.GetFileName).Order());
        Assert.Equal(2, audit.Events.Count(e => e.Action == AuditActions.SpoolQuarantine));
        Assert.NotNull(await recovered.LoadAsync(good, CancellationToken.None));

        // A directory in place of a queue file: recovery lists files only; a load of its id answers "not there".
        var stray = recovered.NewId();
        Directory.CreateDirectory(Path.Combine(Root, "queue", stray));
        Assert.Null(await recovered.LoadAsync(stray, CancellationToken.None));
    }

    [Fact]
    public async Task A_delivery_load_reads_the_file_whole_and_quarantines_a_truncated_file_or_a_directory_in_its_place()
    {
        using var spool = NewSpool(Root, _time);
        await spool.RecoverAsync(CancellationToken.None);
        var bytes = SampleMessage();
        var envelopes = Enumerable.Range(0, 3).Select(_ => NewEnvelope(spool, _time)).ToArray();
        foreach (var envelope in envelopes)
        {
            await spool.CommitAsync(envelope, Segmented(bytes), CancellationToken.None);
        }

        var (good, truncated, replaced) = (envelopes[0].Id, envelopes[1].Id, envelopes[2].Id);

        // Another instance over the same spool (as after a restart): the committing one would serve its first delivery
        // load from the bytes it wrote (see the test below), and this one is about reading the file.
        spool.Dispose();
        using var reader = NewSpool(Root, _time);
        var loaded = await reader.LoadAsync(good, CancellationToken.None, forDelivery: true);
        Assert.NotNull(loaded);
        Assert.True(loaded.InMemory);
        await using (var content = loaded.OpenContent())
        using (var copy = new MemoryStream())
        {
            await content.CopyToAsync(copy);
            Assert.Equal(bytes, copy.ToArray());
        }

        var truncatedPath = Path.Combine(Root, "queue", truncated);
        await using (var stream = new FileStream(truncatedPath, FileMode.Open))
        {
            stream.SetLength(stream.Length - 5);
        }

        File.Delete(Path.Combine(Root, "queue", replaced));
        Directory.CreateDirectory(Path.Combine(Root, "queue", replaced));

        Assert.Null(await reader.LoadAsync(truncated, CancellationToken.None, forDelivery: true));
        Assert.Null(await reader.LoadAsync(replaced, CancellationToken.None, forDelivery: true));
        Assert.Null(await reader.LoadAsync(reader.NewId(), CancellationToken.None, forDelivery: true));
        Assert.Equal([truncated], Directory.EnumerateFileSystemEntries(Path.Combine(Root, "corrupt")).Select(Path.GetFileName));

        // The directory is not a queue file to move: it stays, and every load of its id answers "not there", as a load
        // through FileStream did (delivery never crashes on it).
        Assert.True(Directory.Exists(Path.Combine(Root, "queue", replaced)));
        Assert.Null(await reader.LoadAsync(replaced, CancellationToken.None, forDelivery: true));
        Assert.Null(await reader.LoadAsync(replaced, CancellationToken.None));
    }

    [Fact]
    public async Task The_first_delivery_load_after_a_commit_is_served_from_the_committed_bytes_within_the_cache_limit()
    {
        var bytes = SampleMessage();
        var envelopes = new SpoolEnvelope[4];
        long fileLength;
        using (var probe = NewSpool(Path.Combine(Root, "probe"), _time))
        {
            var envelope = NewEnvelope(probe, _time);
            await probe.CommitAsync(envelope, Segmented(bytes), CancellationToken.None);
            fileLength = new FileInfo(Path.Combine(Root, "probe", "queue", envelope.Id)).Length;
        }

        // Room for two files: the third commit is not kept.
        using var spool = NewSpool(Root, _time, cacheLimit: 2 * fileLength + 1);
        await spool.RecoverAsync(CancellationToken.None);
        for (var i = 0; i < envelopes.Length; i++)
        {
            envelopes[i] = NewEnvelope(spool, _time);
            await spool.CommitAsync(envelopes[i], Segmented(bytes), CancellationToken.None);
        }

        Assert.Equal(2, spool.CommittedKept);
        async Task DamageAsync(string id)
        {
            // Behind the spool's back: a load that reads the disk quarantines the file.
            var path = Path.Combine(Root, "queue", id);
            Assert.Equal(fileLength, new FileInfo(path).Length);
            await using var stream = new FileStream(path, FileMode.Open);
            stream.SetLength(stream.Length - 5);
        }

        async Task<byte[]?> DeliveryLoadAsync(string id)
        {
            var loaded = await spool.LoadAsync(id, CancellationToken.None, forDelivery: true);
            if (loaded is null)
            {
                return null;
            }

            await using var content = loaded.OpenContent();
            using var copy = new MemoryStream();
            await content.CopyToAsync(copy);
            return copy.ToArray();
        }

        await DamageAsync(envelopes[0].Id);
        await DamageAsync(envelopes[2].Id);

        // Kept: the first delivery load is the message as committed, whatever the disk now holds.
        Assert.Equal(bytes, await DeliveryLoadAsync(envelopes[0].Id));
        // Taken by that load: the next one (a retry) reads the file.
        Assert.Null(await DeliveryLoadAsync(envelopes[0].Id));
        // Past the limit: read from disk at once.
        Assert.Null(await DeliveryLoadAsync(envelopes[2].Id));

        // A load for the state alone (queue show, retry) leaves the kept bytes to the delivery load, which takes them.
        Assert.NotNull(await spool.LoadAsync(envelopes[1].Id, CancellationToken.None));
        Assert.Equal(1, spool.CommittedKept);
        Assert.Equal(bytes, await DeliveryLoadAsync(envelopes[1].Id));
        Assert.Equal(0, spool.CommittedKept);

        // The limit counts what is kept now: both taken, so the next commits are kept again...
        var later = new[] { NewEnvelope(spool, _time), NewEnvelope(spool, _time) };
        foreach (var envelope in later)
        {
            await spool.CommitAsync(envelope, Segmented(bytes), CancellationToken.None);
        }

        await DamageAsync(later[0].Id);
        Assert.Equal(bytes, await DeliveryLoadAsync(later[0].Id));

        // ...and an operator's delete through this instance drops what it kept.
        Assert.Equal(1, spool.CommittedKept);
        Assert.Equal(SpoolArea.Queue, spool.Delete(later[1].Id));
        Assert.Equal(0, spool.CommittedKept);
        Assert.Null(await DeliveryLoadAsync(later[1].Id));
        Assert.Equal(
            new[] { envelopes[0].Id, envelopes[2].Id }.Order(StringComparer.Ordinal),
            Directory.EnumerateFiles(Path.Combine(Root, "corrupt")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task A_kept_delivery_load_serves_the_committed_envelope_itself_and_agrees_with_the_file()
    {
        using var spool = NewSpool(Root, _time);
        await spool.RecoverAsync(CancellationToken.None);
        var envelope = NewEnvelope(spool, _time, recipients: ["a@example.net", "b@example.org"], tenant: "tenant-a", eightBitMime: true, smtpUtf8: true);
        var bytes = SampleMessage();
        bytes[^5] = 0xC3;
        await spool.CommitAsync(envelope, Segmented(bytes), CancellationToken.None);

        // The header the file was written from, not a parse of it (issue 15: no JSON read back per delivery).
        var kept = await spool.LoadAsync(envelope.Id, CancellationToken.None, forDelivery: true);
        Assert.NotNull(kept);
        Assert.Same(envelope, kept.Envelope);
        Assert.True(kept.EightBitData);

        // What a load from the file (a retry, a restart) sees is the same envelope, extent and 8-bit fact.
        var read = await spool.LoadAsync(envelope.Id, CancellationToken.None, forDelivery: true);
        Assert.NotNull(read);
        Assert.NotSame(envelope, read.Envelope);
        Assert.Equal(envelope with { Recipients = read.Envelope.Recipients }, read.Envelope);
        Assert.Equal(envelope.Recipients, read.Envelope.Recipients);
        Assert.Equal(kept.EightBitData, read.EightBitData);
        Assert.Equal(kept.Length, read.Length);
        await using var content = read.OpenContent();
        using var copy = new MemoryStream();
        await content.CopyToAsync(copy);
        Assert.Equal(bytes, copy.ToArray());
    }

    [Theory]
    [InlineData(SpoolSync.File)]
    [InlineData(SpoolSync.FileSystem)]
    public async Task A_message_with_a_scratch_file_tail_is_not_kept_and_loads_from_disk(SpoolSync sync)
    {
        using var spool = NewSpool(Root, _time, sync: sync);
        var head = Encoding.ASCII.GetBytes("Subject: tail\r\n\r\nfirst part\r\n");
        var rest = Encoding.ASCII.GetBytes("the rest, from the scratch file\r\n");
        using var tail = new MemoryStream(rest);
        var envelope = NewEnvelope(spool, _time);
        await spool.CommitAsync(envelope, new MessageContent([new System.Buffers.ReadOnlySequence<byte>(head)], tail, rest.Length), CancellationToken.None);

        Assert.Equal(0, spool.CommittedKept);
        var loaded = await spool.LoadAsync(envelope.Id, CancellationToken.None, forDelivery: true);
        Assert.NotNull(loaded);
        var content = await ReadContentAsync(loaded);
        Assert.Equal(head.Concat(rest).ToArray(), content);
    }

    [Theory]
    [InlineData(SpoolSync.File)]
    [InlineData(SpoolSync.FileSystem)]
    public async Task Concurrent_commits_share_directory_fsyncs(SpoolSync sync)
    {
        const int tasks = 20, perTask = 10;

        // The real directory fsync plus a little latency, as on a disk that is not a RAM-backed VM image: committers
        // arriving during one fsync must share the next one. With FileSystem the data syncs are the real held syncfs.
        using var spool = NewSpool(Root, TimeProvider.System, sync: sync, syncDirectory: path =>
        {
            DurableFile.SyncDirectory(path);
            Thread.Sleep(2);
        });
        var payload = SampleMessage();
        await Task.WhenAll(Enumerable.Range(0, tasks).Select(_ => Task.Run(async () =>
        {
            for (var i = 0; i < perTask; i++)
            {
                await spool.CommitAsync(NewEnvelope(spool, TimeProvider.System), Segmented(payload, 4096), CancellationToken.None);
            }
        })));

        const int messages = tasks * perTask;
        Assert.Equal(messages, Directory.EnumerateFiles(Path.Combine(Root, "queue")).Count());
        Assert.Equal(messages, Drain(spool).Distinct().Count());
        // With syncfs no message file is synced on its own: a shared syncfs writes the data of a batch.
        Assert.Equal(sync == SpoolSync.File ? messages : 0, spool.FileFsyncCount);
        Assert.InRange(spool.DirectoryFsyncCount, 1, messages / 2);
        Assert.InRange(spool.DataSyncCount, sync == SpoolSync.File ? 0 : 1, sync == SpoolSync.File ? 0 : messages);
    }

    [Fact]
    public async Task FileSystem_sync_commits_with_the_real_syncfs_and_no_file_fsync_and_recovers()
    {
        var payload = SampleMessage();
        var ids = new List<string>();
        using (var spool = NewSpool(Root, _time, sync: SpoolSync.FileSystem))
        {
            Assert.Equal(SpoolSync.FileSystem, spool.Sync);
            for (var i = 0; i < 3; i++)
            {
                var envelope = NewEnvelope(spool, _time);
                ids.Add(envelope.Id);
                await spool.CommitAsync(envelope, Segmented(payload, 1000), CancellationToken.None);
            }

            Assert.Equal(0, spool.FileFsyncCount);
            Assert.Equal(3, spool.DataSyncCount); // one commit at a time: a syncfs after each write...
            Assert.Equal(3, spool.DirectoryFsyncCount); // ...and an fsync of queue/ after each rename
        }

        using var recovered = NewSpool(Root, _time, sync: SpoolSync.FileSystem);
        await recovered.RecoverAsync(CancellationToken.None);
        Assert.Equal(ids.Order(StringComparer.Ordinal), Drain(recovered).Order(StringComparer.Ordinal));
        var loaded = await recovered.LoadAsync(ids[1], CancellationToken.None);
        Assert.NotNull(loaded);
        Assert.Equal(payload, await ReadContentAsync(loaded));
    }

    [Fact]
    public async Task FileSystem_sync_syncs_the_data_before_the_rename_and_the_name_before_the_250()
    {
        var steps = new List<string>();
        void Step(string sync)
        {
            lock (steps)
            {
                var queued = Directory.EnumerateFiles(Path.Combine(Root, "queue")).Count();
                var written = Directory.EnumerateFiles(Path.Combine(Root, "tmp")).Count();
                steps.Add($"{sync} with {written} in tmp/, {queued} in queue/");
            }
        }

        using var spool = NewSpool(Root, _time, sync: SpoolSync.FileSystem, syncDirectory: _ => Step("fsync of queue/"), syncFileSystem: _ => Step("syncfs"));
        await spool.CommitAsync(NewEnvelope(spool, _time), Segmented(SampleMessage()), CancellationToken.None);
        Assert.Equal(["syncfs with 1 in tmp/, 0 in queue/", "fsync of queue/ with 0 in tmp/, 1 in queue/"], steps);
    }

    [Fact]
    public async Task FileSystem_sync_fails_a_commit_that_was_under_way_when_an_earlier_sync_failed()
    {
        // syncfs reports a write-back error once, to whichever sync sees it: perhaps one that B, whose pages it may have
        // been, does not wait for. B's own syncs then succeed, yet B must not get a 250.
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var calls = 0;
        using var spool = NewSpool(Root, TimeProvider.System, sync: SpoolSync.FileSystem, syncFileSystem: _ =>
        {
            if (Interlocked.Increment(ref calls) == 1)
            {
                entered.SetResult();
                Assert.True(release.Task.Wait(TimeSpan.FromSeconds(30)), "the test never released the first sync");
                throw new IOException("EIO reported for an earlier batch");
            }
        });

        try
        {
            var a = spool.CommitAsync(NewEnvelope(spool, TimeProvider.System), Segmented(SampleMessage()), CancellationToken.None);
            await entered.Task;

            // B writes its file while A's sync runs and waits for the next sync.
            var b = spool.CommitAsync(NewEnvelope(spool, TimeProvider.System), Segmented(SampleMessage()), CancellationToken.None);
            Assert.False(b.IsCompleted);
            release.SetResult();

            Assert.IsType<IOException>((await Assert.ThrowsAsync<SpoolWriteException>(() => a)).InnerException);
            var refused = await Assert.ThrowsAsync<SpoolWriteException>(() => b);
            Assert.Contains("may not be on disk", refused.InnerException!.Message, StringComparison.Ordinal);
            Assert.Equal(2, calls); // B's own syncfs succeeded
            Assert.Equal(0, spool.DirectoryFsyncCount); // and it never renamed
            Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "queue")));
            Assert.Empty(Drain(spool));
            Assert.Equal(0, spool.CommittedBytes); // the kept copies of both are released
        }
        finally
        {
            release.TrySetResult();
        }

        // Commits that start after the failure are not held to it.
        await spool.CommitAsync(NewEnvelope(spool, TimeProvider.System), Segmented(SampleMessage()), CancellationToken.None);
        Assert.Single(Drain(spool));
    }

    [Fact]
    public async Task FileSystem_sync_refuses_the_commits_of_a_sync_that_finds_the_spool_moved_to_another_file_system()
    {
        // A symbolic link stands for a mount over the spool: the same path now leads to another file system (tmpfs).
        var disk = Directory.CreateDirectory(_dir.Combine("disk")).FullName;
        var elsewhere = Directory.CreateDirectory(Path.Combine("/dev/shm", "smtpgw-test-" + Guid.NewGuid().ToString("N"))).FullName;
        try
        {
            Assert.True(DurableFile.Stat(null, disk).Device != DurableFile.Stat(null, elsewhere).Device, "/dev/shm must be a file system of its own (tmpfs) for this test");
            var root = _dir.Combine("spool-link");
            File.CreateSymbolicLink(root, disk);
            using var spool = NewSpool(root, _time, sync: SpoolSync.FileSystem);
            await spool.CommitAsync(NewEnvelope(spool, _time), Segmented(SampleMessage()), CancellationToken.None);
            Assert.Single(Drain(spool));

            foreach (var area in new[] { "tmp", "queue" })
            {
                Directory.CreateDirectory(Path.Combine(elsewhere, area));
            }

            File.Delete(root);
            File.CreateSymbolicLink(root, elsewhere);
            var refused = await Assert.ThrowsAsync<SpoolWriteException>(() => spool.CommitAsync(NewEnvelope(spool, _time), Segmented(SampleMessage()), CancellationToken.None));
            Assert.Contains("moved to another file system", refused.InnerException!.Message, StringComparison.Ordinal);
            Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(elsewhere, "queue")));

            // The descriptor now syncs the file system the spool is on.
            await spool.CommitAsync(NewEnvelope(spool, _time), Segmented(SampleMessage()), CancellationToken.None);
            Assert.Single(Directory.EnumerateFiles(Path.Combine(elsewhere, "queue")));
        }
        finally
        {
            Directory.Delete(elsewhere, recursive: true);
        }
    }

    [Fact]
    public void FileSystem_sync_needs_a_directory_that_exists()
    {
        Assert.Throws<DirectoryNotFoundException>(() => new DurableFile.FileSystemSync(_dir.Combine("absent")));
        var file = _dir.Combine("plain-file");
        File.WriteAllText(file, "x");
        Assert.Contains("is not a directory", Assert.ThrowsAny<IOException>(() => new DurableFile.FileSystemSync(file)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Auto_sync_knows_the_kernel_and_syncs_each_file_on_a_shared_file_system()
    {
        // /proc/sys/kernel/osrelease is what uname -r prints ("6.18.44", "5.4.0-150-generic").
        var release = File.ReadAllText("/proc/sys/kernel/osrelease").Trim();
        var numbers = System.Text.RegularExpressions.Regex.Match(release, @"^(\d+)\.(\d+)");
        var kernel = new Version(int.Parse(numbers.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), int.Parse(numbers.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(kernel >= new Version(5, 17), SpoolSyncSupport.FileSystemReportsErrors);

        // The test directory is on a file system that holds other things too (it is no mount's root), and the spool
        // directory does not exist yet: each file is synced on its own.
        Assert.False(Directory.Exists(Root));
        var data = Directory.CreateDirectory(_dir.Combine("data")).FullName;
        var choice = SpoolSyncChoice.Resolve(SpoolSync.Auto, Path.Combine(data, "spool"), data);
        Assert.Equal(SpoolSync.File, choice.Sync);
        Assert.Contains("shares the file system mounted at", choice.Reason, StringComparison.Ordinal);
        using var spool = NewSpool(Root, _time, sync: SpoolSync.Auto);
        Assert.Equal(SpoolSync.File, spool.Sync);
        Assert.Equal(SpoolSync.File, SpoolSyncChoice.Resolve(SpoolSync.File, Root, Root).Sync);

        // A configured FileSystem holds on ext4, xfs or btrfs, and is overruled elsewhere (here tmpfs), with the reason;
        // on a kernel before 5.17 it is always overruled.
        var configured = SpoolSyncChoice.Resolve(SpoolSync.FileSystem, Path.Combine(data, "spool"), data);
        var shm = SpoolSyncChoice.Resolve(SpoolSync.FileSystem, "/dev/shm/smtpgw-spool", "/dev/shm");
        Assert.Equal(SpoolSync.File, shm.Sync);
        Assert.True(shm.Overruled);
        if (!SpoolSyncSupport.FileSystemReportsErrors)
        {
            Assert.Equal(SpoolSync.File, configured.Sync);
            Assert.Contains("does not report every error", shm.Reason, StringComparison.Ordinal);
            return;
        }

        var type = SpoolSyncChoice.Find(File.ReadAllText("/proc/self/mountinfo"), DurableFile.Stat(null, data).MountId)!.Type;
        Assert.Equal(type is "ext4" or "xfs" or "btrfs" ? SpoolSync.FileSystem : SpoolSync.File, configured.Sync);
        var shmType = SpoolSyncChoice.Find(File.ReadAllText("/proc/self/mountinfo"), DurableFile.Stat(null, "/dev/shm").MountId)?.Type;
        Assert.True(shmType == "tmpfs", $"/dev/shm must be a tmpfs for this test (it is {shmType})");
        Assert.Contains("is tmpfs", shm.Reason, StringComparison.Ordinal);
    }

    const string MountInfo = """
        22 27 0:21 / /proc rw,relatime - proc proc rw
        27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
        31 27 254:16 / /var/lib/smtpgw rw,noatime shared:5 - xfs /dev/vdb rw,attr2
        32 27 254:32 / /srv/mail\040spool rw,noatime - btrfs /dev/vdc rw
        33 27 254:0 /var/lib/docker/volumes/gw/_data /data rw,relatime - ext4 /dev/vda rw
        34 27 0:50 / /var/lib/gw-tmpfs rw - tmpfs tmpfs rw
        35 27 0:51 / /mnt/fuse rw - fuse.sshfs host:/x rw
        """;

    [Theory]
    [InlineData(31, true, 31, false, "FileSystem", "(xfs) is mounted at /var/lib/smtpgw for the gateway alone")] // the spool directory is a mount's root
    [InlineData(31, false, 31, true, "FileSystem", "(xfs) is mounted at /var/lib/smtpgw")] // the data directory is, and the spool is on it
    [InlineData(32, true, 27, false, "FileSystem", "(btrfs) is mounted at /srv/mail spool")] // octal escape in the mount point
    [InlineData(31, false, 27, true, "File", "shares the file system mounted at /var/lib/smtpgw")] // the data directory is a root, the spool is not on it
    [InlineData(27, false, 27, false, "File", "shares the file system mounted at /")] // the root file system
    [InlineData(33, false, 33, true, "File", "mounts the directory /var/lib/docker/volumes/gw/_data")] // a container volume
    [InlineData(34, true, 34, false, "File", "is tmpfs, not one of ext4, xfs, btrfs")]
    [InlineData(35, true, 35, false, "File", "is fuse.sshfs")]
    [InlineData(99, true, 99, true, "File", "mount 99 of the spool is not in")]
    public void Auto_sync_is_syncfs_only_on_a_whole_file_system_mounted_for_the_spool(int spoolMount, bool spoolRoot, int dataMount, bool dataRoot, string expected, string reason)
    {
        var choice = SpoolSyncChoice.Decide(MountInfo, new((ulong)spoolMount, spoolRoot), new((ulong)dataMount, dataRoot));
        Assert.Equal(Enum.Parse<SpoolSync>(expected), choice.Sync);
        Assert.Contains(reason, choice.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Mountinfo_lines_are_found_by_mount_id_and_malformed_ones_skipped()
    {
        const string table = """
            not a mountinfo line
            40 31 254:0 /srv/x /var/lib/smtpgw rw master:3 shared:9 - ext4 /dev/vda rw
            x 1 2 3
            """;
        Assert.Equal(new SpoolSyncChoice.Mount(40, "/srv/x", "/var/lib/smtpgw", "ext4"), SpoolSyncChoice.Find(table, 40));
        Assert.Null(SpoolSyncChoice.Find(table, 31));
    }

    [Fact]
    public void Statx_tells_the_mount_root_and_the_mount()
    {
        var root = DurableFile.Stat(null, "/");
        Assert.True(root.IsMountRoot);
        Assert.NotEqual(0UL, root.MountId);
        var here = DurableFile.Stat(null, _dir.Combine("."));
        Assert.False(here.IsMountRoot);
        Assert.NotNull(SpoolSyncChoice.Find(File.ReadAllText("/proc/self/mountinfo"), here.MountId));
    }

    [Theory]
    [InlineData("4.19.0", false)]
    [InlineData("5.8.0", false)]
    [InlineData("5.16.20", false)]
    [InlineData("5.17", true)]
    [InlineData("5.17.0", true)]
    [InlineData("6.1.0", true)]
    [InlineData("6.18.44", true)]
    public void Syncfs_reports_every_error_fsync_would_from_Linux_5_17(string kernel, bool reports) =>
        Assert.Equal(reports, SpoolSyncSupport.ReportsSyncFsErrors(Version.Parse(kernel)));

    [Fact]
    public async Task Fsync_false_skips_every_fsync()
    {
        using var spool = NewSpool(Root, _time, fsync: false, syncDirectory: _ => throw new InvalidOperationException("no fsync expected"));
        await spool.CommitAsync(NewEnvelope(spool, _time), Segmented(SampleMessage()), CancellationToken.None);
        Assert.Equal(0, spool.FileFsyncCount);
        Assert.Equal(0, spool.DirectoryFsyncCount);
        Assert.Single(Drain(spool));
    }

    [Fact]
    public async Task Commit_throws_SpoolWriteException_when_queue_is_a_file_and_queues_nothing()
    {
        // Tests run as root, so permissions do not stop writes: block the path with a file instead.
        Directory.CreateDirectory(Root);
        await File.WriteAllTextAsync(Path.Combine(Root, "queue"), "in the way");
        using var spool = NewSpool(Root, _time);

        await Assert.ThrowsAsync<SpoolWriteException>(() =>
            spool.CommitAsync(NewEnvelope(spool, _time), Segmented(SampleMessage()), CancellationToken.None));

        Assert.True(File.Exists(Path.Combine(Root, "queue")));
        Assert.Empty(Drain(spool));
    }

    [Fact]
    public async Task Commit_throws_SpoolWriteException_when_queue_is_replaced_after_start_and_leaves_no_tmp()
    {
        using var spool = NewSpool(Root, _time);
        await spool.RecoverAsync(CancellationToken.None);
        Directory.Delete(Path.Combine(Root, "queue"));
        await File.WriteAllTextAsync(Path.Combine(Root, "queue"), "in the way");

        await Assert.ThrowsAsync<SpoolWriteException>(() =>
            spool.CommitAsync(NewEnvelope(spool, _time), Segmented(SampleMessage()), CancellationToken.None));

        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "tmp")));
        Assert.Empty(Drain(spool));
    }

    [Fact]
    public async Task FileSystem_sync_failure_before_the_rename_queues_nothing_and_releases_the_kept_copy()
    {
        using var spool = NewSpool(Root, _time, sync: SpoolSync.FileSystem, syncFileSystem: _ => throw new IOException("EIO"),
            syncDirectory: _ => throw new InvalidOperationException("nothing was renamed, so nothing to sync"));
        var ex = await Assert.ThrowsAsync<SpoolWriteException>(() => spool.CommitAsync(NewEnvelope(spool, _time), Segmented(SampleMessage()), CancellationToken.None));

        Assert.IsType<IOException>(ex.InnerException);
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "queue")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "tmp")));
        Assert.Empty(Drain(spool));
        Assert.Equal(0, spool.CommittedKept);
        Assert.Equal(0, spool.CommittedBytes);
    }

    [Theory]
    [InlineData(SpoolSync.File)]
    [InlineData(SpoolSync.FileSystem)]
    public async Task Commit_removes_renamed_file_when_directory_fsync_fails(SpoolSync sync)
    {
        using var spool = NewSpool(Root, _time, sync: sync, syncDirectory: _ => throw new IOException("EIO"));
        var envelope = NewEnvelope(spool, _time);

        var ex = await Assert.ThrowsAsync<SpoolWriteException>(() => spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None));

        Assert.IsType<IOException>(ex.InnerException);
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "queue")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "tmp")));
        Assert.Empty(Drain(spool));
        Assert.Equal(0, spool.CommittedKept); // kept before the rename, dropped with the failed commit
    }

    [Fact]
    public async Task Cancelled_commit_leaves_nothing()
    {
        using var spool = NewSpool(Root, _time);
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => spool.CommitAsync(NewEnvelope(spool, _time), Segmented(SampleMessage()), cts.Token));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "queue")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Root, "tmp")));
    }

    [Fact]
    public void NewId_is_unique_sortable_and_file_name_safe()
    {
        using var spool = NewSpool(Root, _time);
        var first = Enumerable.Range(0, 1000).Select(_ => spool.NewId()).ToArray();
        _time.Advance(TimeSpan.FromMilliseconds(1));
        var later = spool.NewId();

        Assert.Equal(first.Length, first.Distinct().Count());
        Assert.All(first, id => Assert.Matches("^[0-9A-F]{20}$", id));
        Assert.All(first, id => Assert.True(string.CompareOrdinal(id, later) < 0));
    }

    [Fact]
    public async Task Commit_refuses_an_id_that_is_not_file_name_safe()
    {
        using var spool = NewSpool(Root, _time);
        var envelope = NewEnvelope(spool, _time) with { Id = "../escape" };
        await Assert.ThrowsAsync<ArgumentException>(() => spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None));
    }

    [Fact]
    public async Task Save_with_pending_recipients_persists_state_and_wakes_up_at_next_attempt()
    {
        using var spool = NewSpool(Root, _time);
        var envelope = NewEnvelope(spool, _time, ["a@example.net", "b@example.net"]);
        await spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
        Drain(spool);

        var state = DeliveryState.Initial(envelope) with
        {
            Attempts = 1,
            NextAttemptAt = _time.GetUtcNow().AddMinutes(5),
            Recipients = [new("a@example.net", RecipientStatus.Delivered, "250 ok"), new("b@example.net", RecipientStatus.Pending, "450 busy")],
        };
        await spool.SaveAsync(state, CancellationToken.None);

        Assert.True(File.Exists(Path.Combine(Root, "state", envelope.Id + ".json")));
        Assert.Empty(Drain(spool));
        _time.Advance(TimeSpan.FromMinutes(4));
        Assert.Empty(Drain(spool));
        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal([envelope.Id], Drain(spool));

        var reloaded = await spool.LoadAsync(envelope.Id, CancellationToken.None);
        Assert.NotNull(reloaded);
        Assert.Equal(1, reloaded.State.Attempts);
        Assert.Equal(RecipientStatus.Delivered, reloaded.State.Recipients[0].Status);
        Assert.Equal("450 busy", reloaded.State.Recipients[1].LastReply);
    }

    [Fact]
    public async Task Recovered_message_with_future_attempt_waits_until_then()
    {
        SpoolEnvelope envelope;
        using (var spool = NewSpool(Root, _time))
        {
            envelope = NewEnvelope(spool, _time);
            await spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
            await spool.SaveAsync(DeliveryState.Initial(envelope) with { Attempts = 1, NextAttemptAt = _time.GetUtcNow().AddHours(1) }, CancellationToken.None);
        }

        using var recovered = NewSpool(Root, _time);
        await recovered.RecoverAsync(CancellationToken.None);
        Assert.Empty(Drain(recovered));
        Assert.Equal(1, recovered.ScheduledCount);

        _time.Advance(TimeSpan.FromMinutes(59));
        Assert.Empty(Drain(recovered));
        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal([envelope.Id], Drain(recovered));
    }

    [Fact]
    public void Scheduling_an_id_again_replaces_its_wakeup()
    {
        using var spool = NewSpool(Root, _time);
        var now = _time.GetUtcNow();
        spool.Schedule("0000000000000000000A", now.AddMinutes(1));
        spool.Schedule("0000000000000000000A", now.AddMinutes(3));
        spool.Schedule("0000000000000000000A", now.AddMinutes(3));
        spool.Schedule("0000000000000000000B", now.AddMinutes(2));
        Assert.Equal(2, spool.ScheduledCount);

        _time.Advance(TimeSpan.FromMinutes(2));
        Assert.Equal(["0000000000000000000B"], Drain(spool));
        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(["0000000000000000000A"], Drain(spool));
        _time.Advance(TimeSpan.FromHours(1));
        Assert.Empty(Drain(spool));
        Assert.Equal(0, spool.ScheduledCount);

        // Due now: straight to the ready queue, cancelling a later wake-up.
        spool.Schedule("0000000000000000000C", _time.GetUtcNow().AddMinutes(5));
        spool.Schedule("0000000000000000000C", _time.GetUtcNow());
        Assert.Equal(["0000000000000000000C"], Drain(spool));
        _time.Advance(TimeSpan.FromMinutes(5));
        Assert.Empty(Drain(spool));
    }

    [Fact]
    public async Task Save_when_all_delivered_deletes_message_and_state()
    {
        using var spool = NewSpool(Root, _time);
        var envelope = NewEnvelope(spool, _time);
        await spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
        await spool.SaveAsync(DeliveryState.Initial(envelope) with { NextAttemptAt = _time.GetUtcNow().AddMinutes(1) }, CancellationToken.None);

        var done = DeliveryState.Initial(envelope) with { Attempts = 2, Recipients = [new("rcpt@example.net", RecipientStatus.Delivered, "250 ok")] };
        await spool.SaveAsync(done, CancellationToken.None);

        Assert.Empty(Directory.EnumerateFiles(Path.Combine(Root, "queue")));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(Root, "state")));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(Root, "failed")));
        Assert.Null(await spool.LoadAsync(envelope.Id, CancellationToken.None));
    }

    [Theory]
    [InlineData(0)]      // same length
    [InlineData(5)]      // a few octets shorter than the recycled file: header padded, no truncation
    [InlineData(1000)]
    [InlineData(20000)]  // far shorter: cut to length after the write
    [InlineData(-300)]   // longer than the recycled file
    public async Task A_recycled_file_carries_exactly_the_new_message_whatever_the_old_length(int shorterBy)
    {
        foreach (var sync in new[] { SpoolSync.File, SpoolSync.FileSystem })
        {
            Directory.CreateDirectory(Root);
            Directory.Delete(Root, recursive: true);
            await RecycledFileCarriesTheNewMessageAsync(shorterBy, sync);
        }
    }

    async Task RecycledFileCarriesTheNewMessageAsync(int shorterBy, SpoolSync sync)
    {
        using var spool = NewSpool(Root, _time, sync: sync);
        var first = Encoding.ASCII.GetBytes("Subject: old\r\n\r\n" + new string('o', 30000) + "\r\n");
        var old = NewEnvelope(spool, _time);
        await spool.CommitAsync(old, Segmented(first, 4096), CancellationToken.None);
        var done = DeliveryState.Initial(old) with { Attempts = 1, Recipients = [new("rcpt@example.net", RecipientStatus.Delivered, "250 ok")] };
        await spool.SaveAsync(done, CancellationToken.None);
        var recycled = Assert.Single(Directory.EnumerateFiles(Path.Combine(Root, "tmp")));
        var oldLength = new FileInfo(recycled).Length;

        var second = Encoding.ASCII.GetBytes("Subject: new\r\n\r\n" + new string('n', first.Length - 20 - shorterBy) + "\r\n");
        var envelope = NewEnvelope(spool, _time, ["x@example.net"]);
        await spool.CommitAsync(envelope, Segmented(second, 4096), CancellationToken.None);

        Assert.Empty(Directory.EnumerateFiles(Path.Combine(Root, "tmp")));
        var queued = Path.Combine(Root, "queue", envelope.Id);
        Assert.False(File.ReadAllBytes(queued).AsSpan().IndexOf("oooo"u8) >= 0, "an octet of the old message stayed behind");
        if (shorterBy is > 0 and < 4000)
        {
            Assert.Equal(oldLength, new FileInfo(queued).Length);
        }

        using var reread = NewSpool(Root, _time);
        var message = await reread.LoadAsync(envelope.Id, CancellationToken.None);
        Assert.NotNull(message);
        Assert.Equal(envelope.Recipients, message.Envelope.Recipients);
        Assert.Equal(second, await ReadContentAsync(message));

        // The bytes kept for the first delivery load say the same as the file (padded, cut or grown).
        Assert.Equal(1, spool.CommittedKept);
        var kept = await spool.LoadAsync(envelope.Id, CancellationToken.None, forDelivery: true);
        Assert.Equal(0, spool.CommittedKept);
        Assert.NotNull(kept);
        Assert.Equal(message.Length, kept.Length);
        Assert.Equal(envelope.Recipients, kept.Envelope.Recipients);
        Assert.Equal(second, kept.Content.ToArray());
    }

    [Fact]
    public async Task Save_with_a_failed_recipient_moves_message_and_state_to_failed()
    {
        using var spool = NewSpool(Root, _time);
        var envelope = NewEnvelope(spool, _time, ["a@example.net", "b@example.net"]);
        var bytes = SampleMessage();
        await spool.CommitAsync(envelope, Segmented(bytes), CancellationToken.None);

        var done = DeliveryState.Initial(envelope) with
        {
            Attempts = 1,
            Recipients = [new("a@example.net", RecipientStatus.Delivered, "250 ok"), new("b@example.net", RecipientStatus.Failed, "550 5.1.1 no such user")],
        };
        await spool.SaveAsync(done, CancellationToken.None);

        Assert.Empty(spool.List(SpoolArea.Queue));
        var failed = Assert.Single(spool.List(SpoolArea.Failed));
        Assert.Equal(envelope.Id, failed.Id);
        Assert.Equal(bytes.Length, failed.Size);
        Assert.Equal("550 5.1.1 no such user", failed.State.Recipients[1].LastReply);
        Assert.Equal(RecipientStatus.Failed, failed.State.Recipients[1].Status);
        Assert.True(File.Exists(Path.Combine(Root, "failed", envelope.Id)));
        Assert.True(File.Exists(Path.Combine(Root, "failed", envelope.Id + ".json")));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(Root, "state")));
    }

    [Fact]
    public async Task List_shows_queued_messages_with_their_state_oldest_first()
    {
        using var spool = NewSpool(Root, _time);
        var first = NewEnvelope(spool, _time);
        _time.Advance(TimeSpan.FromSeconds(1));
        var second = NewEnvelope(spool, _time, ["x@example.net", "y@example.net"]);
        await spool.CommitAsync(second, Segmented(SampleMessage()), CancellationToken.None);
        await spool.CommitAsync(first, Segmented(SampleMessage()), CancellationToken.None);
        await spool.SaveAsync(DeliveryState.Initial(second) with { Attempts = 3, NextAttemptAt = _time.GetUtcNow().AddHours(1) }, CancellationToken.None);

        var entries = spool.List(SpoolArea.Queue);

        Assert.Equal([first.Id, second.Id], entries.Select(e => e.Id));
        Assert.Equal(0, entries[0].State.Attempts);
        Assert.Equal(3, entries[1].State.Attempts);
        Assert.Equal(second.Recipients, entries[1].Envelope.Recipients);
    }

    [Fact]
    public async Task Unreadable_state_file_starts_over_rather_than_losing_the_message()
    {
        using var spool = NewSpool(Root, _time);
        var envelope = NewEnvelope(spool, _time);
        await spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
        await File.WriteAllTextAsync(Path.Combine(Root, "state", envelope.Id + ".json"), "{ not json");

        var message = await spool.LoadAsync(envelope.Id, CancellationToken.None);

        Assert.NotNull(message);
        Assert.Equal(0, message.State.Attempts);
        Assert.Equal(RecipientStatus.Pending, message.State.Recipients[0].Status);
    }

    [Fact]
    public async Task A_state_written_after_commit_is_read_back_by_the_next_load()
    {
        using var spool = NewSpool(Root, _time);
        var envelope = NewEnvelope(spool, _time, ["a@example.net", "b@example.net"]);
        await spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
        Assert.Equal(0, (await spool.LoadAsync(envelope.Id, CancellationToken.None))!.State.Attempts);

        var deferred = DeliveryState.Initial(envelope) with
        {
            Attempts = 1,
            NextAttemptAt = _time.GetUtcNow().AddMinutes(1),
            Recipients = [new("a@example.net", RecipientStatus.Delivered, "250 ok"), new("b@example.net", RecipientStatus.Pending, "451 later")],
        };
        await spool.SaveAsync(deferred, CancellationToken.None);

        var loaded = await spool.LoadAsync(envelope.Id, CancellationToken.None);
        Assert.Equal(1, loaded!.State.Attempts);
        Assert.Equal(RecipientStatus.Delivered, loaded.State.Recipients[0].Status);
    }

    [Fact]
    public async Task Recovery_removes_orphan_state_files()
    {
        Directory.CreateDirectory(Path.Combine(Root, "state"));
        await File.WriteAllTextAsync(Path.Combine(Root, "state", "0000000000000000AAAA.json"), "{}");
        using var spool = NewSpool(Root, _time);
        await spool.RecoverAsync(CancellationToken.None);
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(Root, "state")));
    }
}
