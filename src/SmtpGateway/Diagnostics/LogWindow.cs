namespace SmtpGateway.Diagnostics;

/// <summary>
/// A warning written at most once per <paramref name="interval"/>; the occurrences in between are counted and reported
/// with the next one, so a flood (of refusals, say) cannot fill the log and the operator still learns how many there were.
/// One instance per thing warned about (a tenant and a limit, a tenant and a refusal reason).
/// </summary>
internal sealed class LogWindow(TimeSpan interval)
{
    readonly Lock _lock = new();
    long _next = long.MinValue;
    int _skipped;

    /// <summary>True when the warning is due now, with the occurrences left out since the last one written.</summary>
    public bool ShouldWrite(TimeProvider time, out int skipped)
    {
        var now = time.GetTimestamp();
        lock (_lock)
        {
            if (_next != long.MinValue && now < _next)
            {
                _skipped++;
                skipped = 0;
                return false;
            }

            _next = now + (long)(interval.TotalSeconds * time.TimestampFrequency);
            skipped = _skipped;
            _skipped = 0;
            return true;
        }
    }
}
