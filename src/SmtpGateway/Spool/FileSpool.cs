using System.Buffers;
using System.Globalization;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;

namespace SmtpGateway.Spool;

/// <summary>
/// The durable spool: one file per message on local disk.
/// <code>
/// &lt;spool&gt;/tmp/      partial writes; deleted on start (never acknowledged, never delivered)
/// &lt;spool&gt;/queue/    complete messages awaiting delivery (&lt;id&gt;, see SpoolFileFormat)
/// &lt;spool&gt;/state/    delivery state of queued messages (&lt;id&gt;.json), written tmp + rename
/// &lt;spool&gt;/failed/   finished messages with a failed recipient (&lt;id&gt; and &lt;id&gt;.json)
/// &lt;spool&gt;/corrupt/  queue files that could not be read, moved aside for an operator
/// </code>
/// RFC 5321 section 6.1: once the server answers 250 after DATA it is responsible for the message, so
/// <see cref="CommitAsync(SpoolEnvelope, MessageContent, CancellationToken)"/> returns only when file data and the queue directory entry are
/// on disk: synced per file, or by a syncfs(2) of the file system per batch of writes (<see cref="SpoolSync"/>), then per directory.
/// </summary>
public sealed partial class FileSpool : IMessageSpool, ISpoolQueue, IDisposable
{
    const string TmpName = "tmp";
    const string QueueName = "queue";
    const string StateName = "state";
    const string FailedName = "failed";
    const string CorruptName = "corrupt";
    const string StateSuffix = ".json";

    readonly string _root;
    readonly string _tmp;
    readonly string _queue;
    readonly string _state;
    readonly string _failed;
    readonly string _corrupt;
    readonly bool _fsync;
    readonly SpoolSync _sync;
    DurableFile.FileSystemSync? _fileSystem;
    readonly TimeProvider _time;
    readonly ILogger _logger;
    readonly Audit.IAuditLog? _audit;
    readonly Channel<string> _ready = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = false });
    readonly GroupCommitter _queueSync;

    /// <summary>With <see cref="SpoolSync.FileSystem"/>: the group syncfs that writes message data out before the rename.</summary>
    readonly GroupCommitter _dataSync;
    readonly WakeupQueue _wakeups;

    /// <summary>Tenant of each queued message (scheduling hint for <see cref="TenantOf"/>): set on commit, recovery and load, dropped when the message leaves the queue.</summary>
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> _tenantById = new(StringComparer.Ordinal);

    /// <summary>
    /// Messages committed by this instance whose state file has never been written: their load skips the state-file probe
    /// (a stat and a failing open per first attempt). Only this process writes state for them: a queue tool acts on the
    /// spool itself only when no gateway holds the control lock (QueueControl). Recovered messages are not in here.
    /// </summary>
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte> _withoutState = new(StringComparer.Ordinal);

    /// <summary>
    /// The file of each message this instance committed (at most <see cref="SpooledMessage.InMemoryLimit"/> octets) until
    /// its first delivery load takes it: the bytes just written and fsynced, so that load needs no open, stat, read and
    /// close of the file (issue 15). Held to <see cref="_committedLimit"/> octets in all; past it a message is read
    /// from disk as before, which costs only those calls. Like <see cref="_withoutState"/> it relies on the queue being
    /// changed only through this instance while it runs (QueueControl); its own delete and quarantine drop the entry.
    /// The header the bytes were made from is kept with them, so the load does not parse back the JSON it just wrote.
    /// </summary>
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, KeptFile> _committed = new(StringComparer.Ordinal);

    /// <summary>A committed file kept in memory: its octets, and the header and message extent they were laid out from.</summary>
    sealed record KeptFile(byte[] Bytes, SpoolFileHeader Header, long Offset, long Length);
    readonly long _committedLimit;
    long _committedBytes;
    readonly Lock _initGate = new();
    volatile bool _initialized;
    int _recovered;
    uint _sequence = (uint)Random.Shared.Next();
    long _fileFsyncs;

    /// <summary>Group syncfs calls that failed so far: every commit whose data was not yet on disk when one failed fails too.</summary>
    long _dataSyncFailures;

    /// <param name="options">Gateway config (spool directory, fsync).</param>
    /// <param name="time">Clock.</param>
    /// <param name="logger">Spool logger.</param>
    /// <param name="audit">Where a quarantined queue file is recorded for the operator (optional: the CLI has none).</param>
    public FileSpool(IOptions<GatewayConfig> options, TimeProvider time, ILogger<FileSpool> logger, Audit.IAuditLog? audit = null)
        : this(options.Value, time, logger, audit,
            SpoolSyncChoice.Resolve(options.Value.Spool.Sync, GatewayPaths.SpoolDirectory(options.Value), GatewayPaths.DataDirectory(options.Value)))
    {
    }

    FileSpool(GatewayConfig config, TimeProvider time, ILogger logger, Audit.IAuditLog? audit, SpoolSyncChoice.Choice choice)
        : this(GatewayPaths.SpoolDirectory(config), config.Spool.Fsync, time, logger, sync: choice.Sync)
    {
        _audit = audit;
        if (!_fsync)
        {
            return;
        }

        if (choice.Overruled)
        {
            SpoolLog.SyncOverruled(logger, choice.Sync, choice.Reason);
        }
        else
        {
            SpoolLog.SyncChosen(logger, choice.Sync, choice.Reason);
        }
    }

    /// <param name="root">Spool directory (absolute).</param>
    /// <param name="fsync">False only for benchmarks (SpoolConfig.Fsync).</param>
    /// <param name="time">Clock for ids, schedules and durations.</param>
    /// <param name="logger">Spool logger.</param>
    /// <param name="syncDirectory">The group fsync of queue/ (given its path); tests wrap it to observe group commit.</param>
    /// <param name="committedCacheLimit">Octets of committed files kept for their first delivery load (tests make it small).</param>
    /// <param name="sync">How commits are made durable; <see cref="SpoolSync.Auto"/> is resolved here (tests pass a resolved mode).</param>
    /// <param name="syncFileSystem">With <see cref="SpoolSync.FileSystem"/>, the group syncfs of the data (given queue/); tests wrap it.</param>
    internal FileSpool(string root, bool fsync, TimeProvider time, ILogger logger, Action<string>? syncDirectory = null, long committedCacheLimit = DefaultCommittedCacheLimit,
        SpoolSync sync = SpoolSync.File, Action<string>? syncFileSystem = null)
    {
        _sync = sync switch
        {
            SpoolSync.Auto => SpoolSyncChoice.Resolve(sync, root, root).Sync,
            SpoolSync.FileSystem when !SpoolSyncSupport.FileSystemReportsErrors =>
                throw new ArgumentException("SpoolSync.FileSystem needs Linux 5.17 or later (GatewayConfigValidator refuses it at start).", nameof(sync)),
            _ => sync,
        };
        _committedLimit = committedCacheLimit;
        _root = Path.GetFullPath(root);
        _tmp = Path.Combine(_root, TmpName);
        _queue = Path.Combine(_root, QueueName);
        _state = Path.Combine(_root, StateName);
        _failed = Path.Combine(_root, FailedName);
        _corrupt = Path.Combine(_root, CorruptName);
        _fsync = fsync;
        _time = time;
        _logger = logger;
        var directorySync = syncDirectory ?? DurableFile.SyncDirectory;
        _queueSync = new GroupCommitter(() =>
        {
            directorySync(_queue);
            SpoolMetrics.DirectoryFsync();
        });
        var dataSync = syncFileSystem ?? (_ => _fileSystem!.Sync());
        _dataSync = new GroupCommitter(() =>
        {
            try
            {
                dataSync(_queue);
            }
            catch
            {
                Interlocked.Increment(ref _dataSyncFailures);
                throw;
            }

            SpoolMetrics.FileSystemSync();
        });
        _wakeups = new WakeupQueue(time, id => _ready.Writer.TryWrite(id));
    }

    /// <summary>Absolute spool directory.</summary>
    public string RootDirectory => _root;

    /// <inheritdoc />
    public ChannelReader<string> Ready => _ready.Reader;

    /// <summary>How this spool makes commits durable (<see cref="SpoolSync.Auto"/> resolved).</summary>
    internal SpoolSync Sync => _sync;

    /// <summary>True when each message file is synced by its own commit (<see cref="SpoolSync.File"/>).</summary>
    bool SyncEachFile => _fsync && _sync == SpoolSync.File;

    /// <summary>True when commits are made durable by syncs of the whole file system (<see cref="SpoolSync.FileSystem"/>).</summary>
    bool SyncsFileSystem => _fsync && _sync == SpoolSync.FileSystem;

    /// <summary>Group syncfs calls so far (<see cref="SpoolSync.FileSystem"/>: one per batch of writes).</summary>
    internal long DataSyncCount => _dataSync.SyncCount;

    /// <summary>Directory fsyncs of queue/ so far, in either mode (group commit makes this smaller than the number of commits under concurrency).</summary>
    internal long DirectoryFsyncCount => _queueSync.SyncCount;

    /// <summary>File data fsyncs so far (messages and state files; with <see cref="SpoolSync.FileSystem"/> message files take none).</summary>
    internal long FileFsyncCount => Interlocked.Read(ref _fileFsyncs);

    /// <summary>
    /// Octets of committed files kept for their first delivery load by default: 16 MiB, a few thousand typical messages,
    /// the backlog of a few seconds at full speed (a longer backlog is read from disk).
    /// </summary>
    internal const long DefaultCommittedCacheLimit = 16 * 1024 * 1024;

    /// <summary>Committed files kept for their first delivery load now.</summary>
    internal int CommittedKept => _committed.Count;

    /// <summary>Octets reserved for kept files now (released when a file is taken or its commit fails).</summary>
    internal long CommittedBytes => Interlocked.Read(ref _committedBytes);

    /// <summary>Ids waiting in memory for a later attempt.</summary>
    internal int ScheduledCount => _wakeups.Count;

    /// <inheritdoc />
    /// <remarks>20 upper-case hex digits: 12 of Unix milliseconds, then 8 of a per-process sequence that starts at a random value.
    /// Sorting ids sorts by arrival; the random start keeps ids from two processes in the same millisecond apart.</remarks>
    public string NewId()
    {
        var ms = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var seq = Interlocked.Increment(ref _sequence);
        return string.Create(CultureInfo.InvariantCulture, $"{ms:X12}{seq:X8}");
    }

    /// <inheritdoc />
    public Task CommitAsync(SpoolEnvelope envelope, ReadOnlySequence<byte> message, CancellationToken cancellationToken) =>
        CommitAsync(envelope, new MessageContent([message]), cancellationToken);

    /// <inheritdoc />
    public FileStream CreateScratchFile()
    {
        EnsureDirectories();
        return ScratchFile.Create(_tmp);
    }

    /// <inheritdoc />
    public async Task CommitAsync(SpoolEnvelope envelope, MessageContent message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        if (!IsValidId(envelope.Id))
        {
            throw new ArgumentException("Queue id must come from NewId().", nameof(envelope));
        }

        var started = _time.GetTimestamp();
        // Unique per attempt, so that a failed commit only ever removes its own partial file.
        // A recycled file (see Recycle) when there is one: overwriting an existing inode avoids ext4's inode
        // allocation, which dominated the commit path under load (perf: openat 23% of CPU in find_inode_bit /
        // recently_deleted at ~1000 creates+unlinks per second).
        var recycled = _recycled.TryTake(out var reuse);
        var tmp = recycled ? reuse! : Path.Combine(_tmp, string.Create(CultureInfo.InvariantCulture, $"{envelope.Id}.{Guid.NewGuid():N}.msg"));
        var queued = Path.Combine(_queue, envelope.Id);
        var renamed = false;
        try
        {
            EnsureDirectories();
            cancellationToken.ThrowIfCancellationRequested();

            // With SpoolSync.FileSystem an error may be reported to a syncfs this commit does not wait for (FileSystemSync):
            // any failed syncfs from the first octet written on fails this commit.
            var failures = Interlocked.Read(ref _dataSyncFailures);
            var file = await WriteMessageFileAsync(tmp, recycled, envelope, message, cancellationToken).ConfigureAwait(false);

            // What this instance knows of the message is in place before the rename shows its id: a delete of the id
            // during the directory fsync below finds and drops it, rather than it being added after the file is gone.
            // (Before the data sync too, so that a failure there releases the kept bytes: Forget.)
            _withoutState[envelope.Id] = 0;
            KeepCommitted(envelope.Id, file);

            // SpoolSync.FileSystem: the data is written out by a shared syncfs that starts after the write, and the commit
            // goes on only if no syncfs failed meanwhile, all before the rename (data before name, as the file's own fsync
            // above gives SpoolSync.File). Otherwise the rename could reach disk first and, after a crash, queue/ could
            // hold the file with old content: a recycled file's earlier message under this message's header.
            if (SyncsFileSystem)
            {
                await _dataSync.WaitForSyncAsync().ConfigureAwait(false);
                if (Interlocked.Read(ref _dataSyncFailures) != failures)
                {
                    throw new IOException("A sync of the spool's file system failed while this message was being written; its data may not be on disk.");
                }
            }

            // The rename publishes envelope and content at once; queue/ never holds a partial file.
            // It happens only after the file's data is on disk (above), and the 250 only after the group sync below.
            DurableFile.MoveNoReplace(tmp, queued);
            renamed = true;

            // The rename is durable only once queue/ itself is synced; wait for a (shared) directory fsync that starts after
            // it. In both modes: an fsync reports what a syncfs may not (ext4 before 6.13 answers syncfs with 0 once shut
            // down after an error; 150c174a6053), and it writes no other file's data.
            if (_fsync)
            {
                await _queueSync.WaitForSyncAsync().ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (!renamed)
        {
            Forget(envelope.Id);
            TryDelete(tmp);
            throw;
        }
        catch (Exception ex)
        {
            // Whatever failed, the client gets 451 and will send again, so nothing of this attempt may be delivered:
            // not the partial tmp file, and not a renamed file whose directory entry may not survive a crash.
            Forget(envelope.Id);
            TryDelete(tmp);
            if (renamed)
            {
                TryDelete(queued);
            }

            SpoolLog.CommitFailed(_logger, envelope.Id, ex);
            throw new SpoolWriteException($"Could not spool message {envelope.Id}.", ex);
        }

        SpoolMetrics.Committed(_time.GetElapsedTime(started));
        SpoolMetrics.Enqueued(envelope.Id, envelope.TenantId);
        SpoolLog.Committed(_logger, envelope.Id, envelope.Recipients.Count, message.Length);
        RememberTenant(envelope);
        _ready.Writer.TryWrite(envelope.Id);
    }

    /// <summary>Writes and fsyncs the file; returns its whole content when it was written from memory in one piece.</summary>
    async Task<KeptFile?> WriteMessageFileAsync(string path, bool recycled, SpoolEnvelope envelope, MessageContent message, CancellationToken cancellationToken)
    {
        var header = new SpoolFileHeader(envelope, message.EightBit);
        using (var handle = DurableFile.OpenForOverwrite(path, mustCreate: !recycled))
        {
            if (handle is not null)
            {
                return await WriteMessageFileAsync(handle, path, recycled, header, message, cancellationToken).ConfigureAwait(false);
            }
        }

        var preamble = SpoolFileFormat.EncodePreamble(header, message.Length);
        // Create, not CreateNew: a recycled file is truncated and rewritten (its old content is never published:
        // only the rename below makes a file visible in queue/, and recovery deletes everything in tmp/).
        // Owner-only: the spool holds every tenant's mail.
        var stream = new FileStream(path, new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None, BufferSize = 81920, Options = FileOptions.Asynchronous, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite });
        await using (stream.ConfigureAwait(false))
        {
            await stream.WriteAsync(preamble, cancellationToken).ConfigureAwait(false);
            await message.WriteToAsync(stream, cancellationToken).ConfigureAwait(false);

            // Flush(true) is fsync(2) of the file. Concurrent sessions fsync concurrently; the file system
            // batches them into one journal commit (ext4, xfs), so this does not serialise sessions.
            if (SyncEachFile)
            {
                stream.Flush(flushToDisk: true);
                CountFileFsync();
            }
            else
            {
                await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        return null;
    }

    /// <summary>Whitespace a recycled file's header may be padded with to keep its length (SpoolFileFormat.EncodePreamble).</summary>
    const int MaxHeaderPadding = 4096;

    /// <summary>
    /// Writes the file from offset 0 with positioned writes on a handle that holds no lock and was not truncated
    /// (DurableFile.OpenForOverwrite): a message kept for its first delivery as one buffer, other in-memory parts in one
    /// gathered write, the tail in chunks. A recycled file longer than the new content gets a padded header or is cut
    /// after the write, so no octet of an earlier message stays behind and the length check on load holds; then the file
    /// is synced. Returns the whole file when it is kept (its room reserved), else null.
    /// </summary>
    async Task<KeptFile?> WriteMessageFileAsync(Microsoft.Win32.SafeHandles.SafeFileHandle handle, string path, bool recycled, SpoolFileHeader header, MessageContent message, CancellationToken cancellationToken)
    {
        var json = SpoolFileFormat.HeaderJson(header);
        var preamble = SpoolFileFormat.EncodePreamble(json, message.Length);
        var truncate = false;
        var existing = recycled ? RandomAccess.GetLength(handle) : -1;
        if (existing > preamble.Length + message.Length)
        {
            // Messages differ in length by a few octets (ids, dates): pad the header to the old length rather than
            // truncate, which costs a journalled size change. Much longer old files are cut after the write.
            var padded = SpoolFileFormat.EncodePreamble(json, message.Length, existing - message.Length, MaxHeaderPadding);
            truncate = padded is null;
            preamble = padded ?? preamble;
        }

        // A message held in memory, when there is room to keep it (_committed), is laid out once as the whole file: written
        // with one pwrite(2) and kept for its first delivery load. The same octets the gathered write below would write.
        var size = preamble.Length + message.Length;
        byte[]? file = null;
        long offset = preamble.Length;
        if (message.Tail is null && size <= SpooledMessage.InMemoryLimit && TryReserveCommitted(size))
        {
            file = new byte[size];
            preamble.CopyTo(file, 0);
            foreach (var part in message.Parts)
            {
                part.CopyTo(file.AsSpan((int)offset));
                offset += part.Length;
            }

            try
            {
                RandomAccess.Write(handle, file, 0);
                SyncWritten(handle, path, existing, size, truncate);
            }
            catch
            {
                ReleaseCommitted(size);
                throw;
            }

            return new KeptFile(file, header, preamble.Length, message.Length);
        }

        var buffers = new List<ReadOnlyMemory<byte>> { preamble };
        foreach (var part in message.Parts)
        {
            foreach (var segment in part)
            {
                buffers.Add(segment);
                offset += segment.Length;
            }
        }

        RandomAccess.Write(handle, buffers, 0);

        if (message.Tail is { } tail)
        {
            var buffer = ArrayPool<byte>.Shared.Rent(81920);
            try
            {
                var left = message.TailLength;
                while (left > 0)
                {
                    var n = await tail.ReadAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, left)), cancellationToken).ConfigureAwait(false);
                    if (n == 0)
                    {
                        throw new IOException($"Scratch file ended {left} octets early.");
                    }

                    RandomAccess.Write(handle, buffer.AsSpan(0, n), offset);
                    offset += n;
                    left -= n;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }

        SyncWritten(handle, path, existing, offset, truncate);
        return null;
    }

    /// <summary>
    /// Cuts a recycled file to its new length when it was longer, then syncs it (see DurableFile.SyncFile).
    /// <paramref name="existing"/> is the recycled file's old length, -1 for a new file.
    /// </summary>
    void SyncWritten(Microsoft.Win32.SafeHandles.SafeFileHandle handle, string path, long existing, long length, bool truncate)
    {
        if (truncate)
        {
            DurableFile.Truncate(handle, length, path);
        }

        // With SpoolSync.FileSystem a group syncfs writes the data out before the rename (CommitAsync waits for it).
        if (SyncEachFile)
        {
            // fdatasync when a recycled file was overwritten in place at its old length (the usual case: the header is padded
            // to it): its size and blocks are on disk from before, and nothing reads a queue file's timestamps. A new file
            // (existing -1), a grown one or a cut one has another length: fsync. The directory fsync makes the name durable.
            DurableFile.SyncFile(handle, path, dataOnly: length == existing);
            CountFileFsync();
        }
    }

    /// <summary>Room for a file of <paramref name="size"/> octets among the kept ones (<see cref="_committedLimit"/>).</summary>
    bool TryReserveCommitted(long size)
    {
        if (Interlocked.Add(ref _committedBytes, size) <= _committedLimit)
        {
            return true;
        }

        ReleaseCommitted(size);
        return false;
    }

    void ReleaseCommitted(long size) => Interlocked.Add(ref _committedBytes, -size);

    /// <summary>
    /// Keeps a committed file (its room reserved by the write) for its first delivery load. Before the rename makes the
    /// id visible in queue/: a delete of the id by this instance from then on finds and drops it.
    /// </summary>
    void KeepCommitted(string id, KeptFile? file)
    {
        if (file is not null && !_committed.TryAdd(id, file))
        {
            ReleaseCommitted(file.Bytes.Length);
        }
    }

    /// <summary>Drops what this instance remembers in memory of a message: its commit failed, or it leaves queue/.</summary>
    void Forget(string id)
    {
        _withoutState.TryRemove(id, out _);
        TakeCommitted(id);
    }

    /// <summary>The committed file of <paramref name="id"/> if it is still kept, no longer kept afterwards.</summary>
    KeptFile? TakeCommitted(string id)
    {
        if (!_committed.TryRemove(id, out var file))
        {
            return null;
        }

        ReleaseCommitted(file.Bytes.Length);
        return file;
    }

    /// <summary>
    /// Runs once before the Listener accepts: removes partial writes, moves unreadable queue files aside,
    /// and hands every queued message to delivery (now, or at its persisted next attempt time).
    /// </summary>
    public Task RecoverAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _recovered, 1) == 1)
        {
            return Task.CompletedTask;
        }

        EnsureDirectories();

        var partial = 0;
        foreach (var file in Directory.EnumerateFiles(_tmp))
        {
            TryDelete(file);
            SpoolLog.PartialRemoved(_logger, Path.GetFileName(file));
            partial++;
        }

        int due = 0, scheduled = 0, corrupt = 0;
        var now = _time.GetUtcNow();
        var queuedIds = new HashSet<string>(StringComparer.Ordinal);
        foreach (var path in Directory.EnumerateFiles(_queue).Order(StringComparer.Ordinal))
        {
            cancellationToken.ThrowIfCancellationRequested();
            var id = Path.GetFileName(path);
            var message = TryLoad(id, out var movedAside);
            if (message is null)
            {
                if (movedAside)
                {
                    corrupt++;
                }

                continue;
            }

            queuedIds.Add(id);
            if (message.State.NextAttemptAt > now)
            {
                _wakeups.Schedule(id, message.State.NextAttemptAt);
                scheduled++;
            }
            else
            {
                _ready.Writer.TryWrite(id);
                due++;
            }
        }

        // A state file without its message: the process stopped between finishing a message and removing its state.
        foreach (var path in Directory.EnumerateFiles(_state, "*" + StateSuffix))
        {
            var id = Path.GetFileNameWithoutExtension(path);
            if (queuedIds.Contains(id))
            {
                continue;
            }

            if (IsValidId(id) && File.Exists(Path.Combine(_failed, id)) && !File.Exists(Path.Combine(_failed, id + StateSuffix)))
            {
                MoveReplacing(path, Path.Combine(_failed, id + StateSuffix));
            }
            else
            {
                TryDelete(path);
            }

            SpoolLog.OrphanStateRemoved(_logger, id);
        }

        SpoolLog.Recovered(_logger, _root, due, scheduled, partial, corrupt);
        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public Task<SpooledMessage?> LoadAsync(string id, CancellationToken cancellationToken, bool forDelivery = false)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (!IsValidId(id))
        {
            return Task.FromResult<SpooledMessage?>(null);
        }

        var message = TryLoad(id, out var movedAside, forDelivery);
        if (movedAside)
        {
            SpoolMetrics.Dequeued(id);
        }

        return Task.FromResult(message);
    }

    /// <summary>Reads a queued message; null when absent or corrupt (corrupt files are moved to corrupt/).</summary>
    SpooledMessage? TryLoad(string id, out bool movedAside, bool forDelivery = false)
    {
        movedAside = false;
        var path = Path.Combine(_queue, id);
        if (!IsValidId(id))
        {
            movedAside = MoveAside(id, "file name is not a queue id");
            return null;
        }

        SpoolFileHeader header;
        long offset, length;
        byte[]? file = null;
        try
        {
            // A typical message is read whole with one read(2) and served from memory to every reader of this attempt
            // (carrier, body writer, DSN): no second and third open, lock and thread-pool read per delivery.
            var kept = forDelivery ? TakeCommitted(id) : null;
            file = kept?.Bytes ?? (forDelivery ? ReadWhole(path) : null);
            if (kept is not null)
            {
                (header, offset, length) = (kept.Header, kept.Offset, kept.Length);
            }
            else if (file is not null)
            {
                using var memory = new MemoryStream(file, writable: false);
                header = SpoolFileFormat.ReadHeader(memory, out offset, out length);
            }
            else
            {
                using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1);
                header = SpoolFileFormat.ReadHeader(stream, out offset, out length);
            }
        }
        catch (FileNotFoundException)
        {
            return null;
        }
        catch (InvalidDataException ex)
        {
            movedAside = MoveAside(id, ex.Message);
            return null;
        }
        catch (EndOfStreamException ex)
        {
            movedAside = MoveAside(id, ex.Message);
            return null;
        }
        catch (Exception ex) when (ex is UnauthorizedAccessException || (ex is IOException io && DurableFile.IsDirectoryError(io)))
        {
            // Not ours to read (another owner, mode 0600) or a directory in its place: quarantined like a corrupt file,
            // never a crash of recovery or of delivery. The reason is ours (the exception text would carry the path).
            movedAside = MoveAside(id, UnreadableReason);
            return null;
        }

        if (header.Envelope.Id != id)
        {
            movedAside = MoveAside(id, "envelope id does not match the file name");
            return null;
        }

        var state = _withoutState.ContainsKey(id) ? DeliveryState.Initial(header.Envelope) : ReadState(Path.Combine(_state, id + StateSuffix), header.Envelope);
        if (state is null)
        {
            // An unreadable state cannot be started over either: the next save could not replace it, and every attempt
            // would deliver again. The message waits in corrupt/ for an operator.
            movedAside = MoveAside(id, "delivery state " + UnreadableReason);
            return null;
        }

        RememberTenant(header.Envelope);
        // Recovery counts what it finds here; for a message already counted (each attempt loads it) this changes nothing.
        SpoolMetrics.Enqueued(id, header.Envelope.TenantId, state.Attempts > 0 ? QueueState.Deferred : QueueState.Queued);
        return new SpooledMessage(path, offset, length, header.Envelope, header.EightBitData, state, file);
    }

    const string UnreadableReason = "file not readable (permissions, or not a regular file)";

    /// <summary>
    /// The whole queue file when it is at most <see cref="SpooledMessage.InMemoryLimit"/> octets (below the large object
    /// heap, so the copy dies young); null when it is larger. Opened without FileStream's lock and stats
    /// (<see cref="DurableFile.OpenForRead"/>): open, fstat, pread, close.
    /// </summary>
    static byte[]? ReadWhole(string path)
    {
        using var handle = DurableFile.OpenForRead(path);
        if (handle is null)
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1);
            return stream.Length <= SpooledMessage.InMemoryLimit ? ReadExactly(stream) : null;
        }

        var size = RandomAccess.GetLength(handle);
        if (size > SpooledMessage.InMemoryLimit)
        {
            // The caller opens it again as a stream: one more open for a message over 64 KiB, rare and already costly.
            return null;
        }

        var file = new byte[size];
        var read = 0;
        while (read < file.Length)
        {
            var n = RandomAccess.Read(handle, file.AsSpan(read), read);
            if (n == 0)
            {
                // Shorter than its size a moment ago: a queue file never shrinks, so it is damaged (the header check says
                // how); what was read is parsed as it is.
                return file[..read];
            }

            read += n;
        }

        return file;

        static byte[] ReadExactly(FileStream stream)
        {
            var bytes = new byte[stream.Length];
            stream.ReadExactly(bytes);
            return bytes;
        }
    }

    /// <summary>The message's delivery state; null when the state file exists but cannot be read at all (see TryLoad).</summary>
    DeliveryState? ReadState(string path, SpoolEnvelope envelope)
    {
        string reason;
        if (Directory.Exists(path))
        {
            return null;
        }

        try
        {
            var bytes = File.ReadAllBytes(path);
            var state = JsonSerializer.Deserialize(bytes, SpoolJsonContext.Default.DeliveryState);
            if (state is not null && state.Recipients is not null && state.Matches(envelope))
            {
                return state;
            }

            reason = "does not match the envelope";
        }
        catch (FileNotFoundException)
        {
            // Never attempted: no state file is written at commit, to keep the commit at one file.
            return DeliveryState.Initial(envelope);
        }
        catch (Exception ex) when (ex is JsonException or IOException)
        {
            reason = ex.GetType().Name;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }

        // Starting over may send duplicates to recipients already delivered: at-least-once, never loss.
        SpoolLog.StateReset(_logger, envelope.Id, reason);
        return DeliveryState.Initial(envelope);
    }

    /// <inheritdoc />
    public Task SaveAsync(DeliveryState state, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (!IsValidId(state.Id))
        {
            throw new ArgumentException("Not a queue id.", nameof(state));
        }

        cancellationToken.ThrowIfCancellationRequested();

        // Before anything is written: from here on a load looks for the state file again.
        var mayHaveState = !_withoutState.TryRemove(state.Id, out _);
        TakeCommitted(state.Id);
        var message = Path.Combine(_queue, state.Id);
        var statePath = Path.Combine(_state, state.Id + StateSuffix);
        if (!state.IsComplete)
        {
            WriteStateAtomically(statePath, state);
            SpoolMetrics.Enqueued(state.Id, TenantOf(state.Id), QueueState.Deferred);
            _wakeups.Schedule(state.Id, state.NextAttemptAt);
            return Task.CompletedTask;
        }

        if (state.AnyFailed)
        {
            // Message first, then its state: a crash in between leaves an orphan state that recovery moves after it.
            MoveReplacing(message, Path.Combine(_failed, state.Id));
            WriteStateAtomically(Path.Combine(_failed, state.Id + StateSuffix), state);
            if (mayHaveState)
            {
                TryDelete(statePath);
            }

            SpoolLog.MovedToFailed(_logger, state.Id);
        }
        else
        {
            // Message first: a crash before the state goes leaves an orphan state (removed on recovery),
            // never a message without its "delivered" marks (which would be delivered again).
            Recycle(message);
            if (mayHaveState)
            {
                TryDelete(statePath);
            }

            SpoolLog.Completed(_logger, state.Id);
        }

        _tenantById.TryRemove(state.Id, out _);
        SpoolMetrics.Dequeued(state.Id);
        return Task.CompletedTask;
    }

    /// <summary>
    /// Takes a delivered message's file out of queue/ by renaming it into tmp/ for reuse by a later commit, rather
    /// than unlinking it: no inode is freed or allocated per message. A crash loses nothing (tmp/ is emptied at
    /// start); the pool is bounded, beyond it files are deleted.
    /// </summary>
    void Recycle(string message)
    {
        if (_recycled.Count >= MaxRecycled)
        {
            File.Delete(message);
            return;
        }

        // A counter from a random start names it: unique in this process, and tmp/ is emptied at start. A Guid cost a
        // read(2) of /dev/urandom per delivered message.
        var target = Path.Combine(_tmp, string.Create(CultureInfo.InvariantCulture, $"free.{(ulong)Interlocked.Increment(ref _freeSequence):x16}.msg"));
        DurableFile.MoveNoReplace(message, target);
        _recycled.Add(target);
    }

    long _freeSequence = Random.Shared.NextInt64();

    const int MaxRecycled = 4096;
    readonly System.Collections.Concurrent.ConcurrentBag<string> _recycled = [];

    /// <inheritdoc />
    public void Schedule(string id, DateTimeOffset due) => _wakeups.Schedule(id, due);

    /// <inheritdoc />
    public string? TenantOf(string id) => _tenantById.TryGetValue(id, out var tenant) ? tenant : null;

    /// <summary>Queued messages per tenant, from the same memory as <see cref="TenantOf"/> (no disk read; dashboard).</summary>
    internal Dictionary<string, int> QueuedPerTenant() =>
        _tenantById.Values.CountBy(t => t, StringComparer.Ordinal).ToDictionary(StringComparer.Ordinal);

    void RememberTenant(SpoolEnvelope envelope)
    {
        if (envelope.TenantId is { } tenant)
        {
            _tenantById[envelope.Id] = tenant;
        }
    }

    /// <inheritdoc />
    public IReadOnlyList<SpoolEntry> List(SpoolArea area)
    {
        var directory = area == SpoolArea.Queue ? _queue : _failed;
        var stateDirectory = area == SpoolArea.Queue ? _state : _failed;
        if (!Directory.Exists(directory))
        {
            return [];
        }

        var entries = new List<SpoolEntry>();
        foreach (var path in Directory.EnumerateFiles(directory).Order(StringComparer.Ordinal))
        {
            var id = Path.GetFileName(path);
            if (IsValidId(id) && Read(id, area) is { } entry)
            {
                entries.Add(entry);
            }
        }

        return entries;
    }

    /// <summary>
    /// The ids of <paramref name="area"/> without reading any file (a directory listing), for callers that filter or page
    /// before paying for the headers.
    /// </summary>
    internal IEnumerable<string> Ids(SpoolArea area)
    {
        var directory = area == SpoolArea.Queue ? _queue : _failed;
        return Directory.Exists(directory) ? Directory.EnumerateFiles(directory).Select(p => Path.GetFileName(p)).Where(IsValidId) : [];
    }

    /// <summary>One entry of <paramref name="area"/> (the id must be valid), or null when it vanished or is damaged.</summary>
    internal SpoolEntry? Read(string id, SpoolArea area)
    {
        var directory = area == SpoolArea.Queue ? _queue : _failed;
        var stateDirectory = area == SpoolArea.Queue ? _state : _failed;
        try
        {
            using var stream = new FileStream(Path.Combine(directory, id), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1);
            var header = SpoolFileFormat.ReadHeader(stream, out _, out var length);
            var state = ReadStateQuietly(Path.Combine(stateDirectory, id + StateSuffix), header.Envelope);
            return new SpoolEntry(id, area, header.Envelope, state, length);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            // Listing is read-only: a file that vanished or is damaged is skipped, not moved.
            return null;
        }
    }

    static DeliveryState ReadStateQuietly(string path, SpoolEnvelope envelope)
    {
        try
        {
            var state = JsonSerializer.Deserialize(File.ReadAllBytes(path), SpoolJsonContext.Default.DeliveryState);
            return state is not null && state.Recipients is not null && state.Matches(envelope) ? state : DeliveryState.Initial(envelope);
        }
        catch (Exception ex) when (ex is IOException or JsonException or UnauthorizedAccessException)
        {
            return DeliveryState.Initial(envelope);
        }
    }

    void WriteStateAtomically(string path, DeliveryState state)
    {
        // The temporary name lives in tmp/ so that a crash leaves nothing but what recovery already deletes.
        var tmp = Path.Combine(_tmp, string.Create(CultureInfo.InvariantCulture, $"{state.Id}.{Guid.NewGuid():N}.state"));
        try
        {
            using (var stream = new FileStream(tmp, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None, BufferSize = 4096, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite }))
            {
                JsonSerializer.Serialize(stream, state, SpoolJsonContext.Default.DeliveryState);

                // Data fsync so that a crash cannot leave an empty state file behind the rename (delayed allocation).
                // The directory is not synced: losing this rename only repeats an attempt (at-least-once).
                if (_fsync)
                {
                    stream.Flush(flushToDisk: true);
                    CountFileFsync();
                }
            }

            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
    }

    bool MoveAside(string id, string reason)
    {
        Forget(id);
        var source = Path.Combine(_queue, id);
        var destination = Path.Combine(_corrupt, SafeFileName(id));
        try
        {
            if (File.Exists(destination))
            {
                destination += "." + _time.GetUtcNow().ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture);
            }

            File.Move(source, destination);
            SpoolLog.CorruptMovedAside(_logger, SafeFileName(id), destination, reason);
            // An operator event as well as a log line: a quarantined file is a message that will not be delivered
            // unless someone looks at corrupt/ (the reason is ours, never file content).
            _audit?.Write(new Audit.AuditEvent
            {
                Time = _time.GetUtcNow(),
                Action = Audit.AuditActions.SpoolQuarantine,
                Result = "moved",
                Reason = reason,
                QueueId = SafeFileName(id),
                Subject = Path.GetFileName(destination),
            });
            return true;
        }
        catch (FileNotFoundException)
        {
            return false;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            SpoolLog.MoveAsideFailed(_logger, SafeFileName(id), ex);
            return false;
        }
    }

    static string SafeFileName(string name)
    {
        var chars = name.Select(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' ? c : '_').ToArray();
        return chars.Length == 0 ? "_" : new string(chars);
    }

    static void MoveReplacing(string source, string destination) => File.Move(source, destination, overwrite: true);

    void EnsureDirectories()
    {
        if (_initialized)
        {
            return;
        }

        lock (_initGate)
        {
            if (_initialized)
            {
                return;
            }

            var existed = Directory.Exists(_queue);
            foreach (var directory in new[] { _tmp, _queue, _state, _failed, _corrupt })
            {
                Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }

            // New directories are entries in their parent: sync it so that queue/ itself survives a crash
            // before the first message in it is acknowledged.
            if (_fsync && !existed)
            {
                DurableFile.SyncDirectory(_root);
            }

            // Opened before the first message file is written, so that its syncs report every write-back error since
            // (DurableFile.FileSystemSync).
            if (SyncsFileSystem)
            {
                _fileSystem ??= new DurableFile.FileSystemSync(_queue);
            }

            _initialized = true;
        }
    }

    void CountFileFsync()
    {
        Interlocked.Increment(ref _fileFsyncs);
        SpoolMetrics.FileFsync();
    }

    void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            SpoolLog.CleanupFailed(_logger, Path.GetFileName(path), ex);
        }
    }

    /// <summary>Ids are produced by <see cref="NewId"/>; anything else is refused before it can become a path.</summary>
    internal static bool IsValidId(string? id) =>
        !string.IsNullOrEmpty(id) && id.Length <= 64 && id.All(char.IsAsciiLetterOrDigit);

    public void Dispose()
    {
        _wakeups.Dispose();
        _fileSystem?.Dispose();
    }
}
