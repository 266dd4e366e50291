namespace SmtpGateway.Spool;

/// <summary>
/// In-memory wake-ups for deferred messages: one TimeProvider timer armed for the earliest due id,
/// so a hundred thousand deferred messages cost a heap entry each, not a timer each.
/// One wake-up per id: scheduling an id again replaces its earlier time (the latest decision wins,
/// as it does in the state file); superseded heap entries are skipped when they surface.
/// </summary>
internal sealed class WakeupQueue : IDisposable
{
    /// <summary>Timers cannot be armed further out than ~49 days; re-arming daily is free.</summary>
    static readonly TimeSpan MaxTimerDelay = TimeSpan.FromDays(1);

    readonly TimeProvider _time;
    readonly Action<string> _due;
    readonly Lock _gate = new();
    readonly PriorityQueue<string, DateTimeOffset> _heap = new();
    readonly Dictionary<string, DateTimeOffset> _dueById = new(StringComparer.Ordinal);
    readonly ITimer _timer;
    DateTimeOffset? _armedFor;
    bool _disposed;

    public WakeupQueue(TimeProvider time, Action<string> due)
    {
        _time = time;
        _due = due;
        _timer = time.CreateTimer(static self => ((WakeupQueue)self!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _dueById.Count;
            }
        }
    }

    public void Schedule(string id, DateTimeOffset at)
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            if (at > _time.GetUtcNow())
            {
                if (_dueById.TryGetValue(id, out var existing) && existing == at)
                {
                    return;
                }

                _dueById[id] = at;
                _heap.Enqueue(id, at);
                if (_armedFor is null || at < _armedFor)
                {
                    ArmLocked(at);
                }

                return;
            }

            _dueById.Remove(id);
        }

        _due(id);
    }

    void OnTimer()
    {
        List<string> due = [];
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _armedFor = null;
            var now = _time.GetUtcNow();
            while (_heap.TryPeek(out var id, out var at) && at <= now)
            {
                _heap.Dequeue();
                if (_dueById.TryGetValue(id, out var current) && current == at)
                {
                    _dueById.Remove(id);
                    due.Add(id);
                }
            }

            if (_heap.TryPeek(out _, out var next))
            {
                ArmLocked(next);
            }
        }

        foreach (var id in due)
        {
            _due(id);
        }
    }

    void ArmLocked(DateTimeOffset at)
    {
        var delay = at - _time.GetUtcNow();
        if (delay < TimeSpan.Zero)
        {
            delay = TimeSpan.Zero;
        }

        if (delay > MaxTimerDelay)
        {
            delay = MaxTimerDelay;
        }

        _armedFor = at;
        _timer.Change(delay, Timeout.InfiniteTimeSpan);
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
            _heap.Clear();
            _dueById.Clear();
        }

        _timer.Dispose();
    }
}
