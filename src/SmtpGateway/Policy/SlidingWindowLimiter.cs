using System.Threading.RateLimiting;

namespace SmtpGateway.Policy;

/// <summary>
/// A sliding-window <see cref="RateLimiter"/> whose clock is a <see cref="TimeProvider"/>: at most
/// <see cref="PermitLimit"/> permits in any window, counted in segments, a permit returning when its segment leaves the
/// window. No queue: a request over the limit fails at once (an SMTP reply cannot wait).
/// </summary>
/// <remarks>
/// Not the library's SlidingWindowRateLimiter: with AutoReplenishment=false its TryReplenish still checks the elapsed time
/// on the Stopwatch, so a fake clock cannot move it, and its permit limit is fixed at creation. Here the segments move with
/// the provider's clock (read at each call; no timer), and a config reload changes the limit without losing the count.
/// </remarks>
internal sealed class SlidingWindowLimiter : RateLimiter
{
    readonly TimeProvider _time;
    readonly TimeSpan _segment;
    readonly int[] _perSegment;
    readonly Lock _lock = new();
    int _current;
    int _inWindow;
    long _segmentStart;
    long _successful;
    long _failed;

    public SlidingWindowLimiter(TimeProvider time, int permitLimit, TimeSpan window, int segments)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(segments, 1);
        _time = time;
        PermitLimit = permitLimit;
        _segment = window / segments;
        _perSegment = new int[segments];
        _segmentStart = time.GetTimestamp();
    }

    /// <summary>Permits per window; may change at any time (a config reload), counting the permits already in the window.</summary>
    public int PermitLimit { get; set; }

    public override TimeSpan? IdleDuration => null;

    public override RateLimiterStatistics? GetStatistics()
    {
        lock (_lock)
        {
            Slide();
            return new RateLimiterStatistics
            {
                CurrentAvailablePermits = Math.Max(0, PermitLimit - _inWindow),
                CurrentQueuedCount = 0,
                TotalSuccessfulLeases = _successful,
                TotalFailedLeases = _failed,
            };
        }
    }

    protected override RateLimitLease AttemptAcquireCore(int permitCount)
    {
        lock (_lock)
        {
            Slide();
            if (_inWindow + permitCount > PermitLimit)
            {
                _failed++;
                return Lease.Refused;
            }

            _perSegment[_current] += permitCount;
            _inWindow += permitCount;
            _successful++;
            return Lease.Granted;
        }
    }

    protected override ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken) =>
        ValueTask.FromResult(AttemptAcquireCore(permitCount));

    /// <summary>Moves the window on by the segments that elapsed; after a whole window everything is free and segments restart now.</summary>
    void Slide()
    {
        var elapsed = _time.GetElapsedTime(_segmentStart);
        if (elapsed < _segment)
        {
            return;
        }

        var steps = elapsed.Ticks / _segment.Ticks;
        if (steps >= _perSegment.Length)
        {
            Array.Clear(_perSegment);
            _inWindow = 0;
            _segmentStart = _time.GetTimestamp();
            return;
        }

        for (var i = 0; i < steps; i++)
        {
            _current = (_current + 1) % _perSegment.Length;
            _inWindow -= _perSegment[_current];
            _perSegment[_current] = 0;
        }

        // Whole segments only, keeping the remainder: a caller every 7 s still moves the window every segment.
        _segmentStart += steps * _segment.Ticks * _time.TimestampFrequency / TimeSpan.TicksPerSecond;
    }

    /// <summary>Nothing to give back: a window permit expires with its segment.</summary>
    sealed class Lease(bool acquired) : RateLimitLease
    {
        public static readonly Lease Granted = new(true);
        public static readonly Lease Refused = new(false);

        public override bool IsAcquired => acquired;

        public override IEnumerable<string> MetadataNames => [];

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            metadata = null;
            return false;
        }
    }
}
