namespace SmtpGateway.Spool;

/// <summary>
/// Group commit for the spool's syncs: the fsync of queue/ after the renames, and with SpoolSync.FileSystem the syncfs
/// of the file system after the writes. A committer waits here after the step the sync must cover; one loop (per kind of
/// sync) syncs and completes every waiter that enqueued before that sync started.
/// A waiter that arrives while a sync runs joins the next one, because the running sync may have started before its
/// step. Under concurrency N sessions share one sync instead of paying N.
/// </summary>
internal sealed class GroupCommitter(Action sync)
{
    readonly Lock _gate = new();
    TaskCompletionSource? _next;
    bool _running;
    long _syncs;

    /// <summary>Syncs performed so far.</summary>
    public long SyncCount => Interlocked.Read(ref _syncs);

    /// <summary>Completes after a sync that started after this call; faults with that sync's exception.</summary>
    public Task WaitForSyncAsync()
    {
        lock (_gate)
        {
            _next ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var task = _next.Task;
            if (!_running)
            {
                _running = true;
                ThreadPool.UnsafeQueueUserWorkItem(static self => self.Run(), this, preferLocal: false);
            }

            return task;
        }
    }

    void Run()
    {
        while (true)
        {
            TaskCompletionSource batch;
            lock (_gate)
            {
                if (_next is null)
                {
                    _running = false;
                    return;
                }

                batch = _next;
                _next = null;
            }

            try
            {
                sync();
                Interlocked.Increment(ref _syncs);
                batch.SetResult();
            }
            catch (Exception ex)
            {
                batch.SetException(ex);
            }
        }
    }
}
