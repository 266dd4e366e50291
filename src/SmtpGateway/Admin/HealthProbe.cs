using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace SmtpGateway.Admin;

/// <summary>
/// One probe's last answer, reused for <see cref="Ttl"/>: a load balancer scraping /readyz every 100 ms, or a flood of
/// requests, runs the real probe (a spool write with fsync, an HSM call, a DNS query) at most once per interval, and
/// concurrent callers share one probe in flight rather than each starting their own.
/// </summary>
internal sealed class HealthProbe(TimeProvider time, Func<CancellationToken, Task<HealthCheckResult>> probe)
{
    /// <summary>How long an answer is reused.</summary>
    public static readonly TimeSpan Ttl = TimeSpan.FromSeconds(2);

    /// <summary>The longest a check may take before /readyz counts it unhealthy (a hanging HSM or resolver).</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    readonly Lock _gate = new();
    Task<HealthCheckResult>? _current;
    long _completedAt;

    /// <summary>The cached answer, or a fresh probe when it is older than <see cref="Ttl"/>; the caller's token only stops its wait.</summary>
    public Task<HealthCheckResult> GetAsync(CancellationToken cancellationToken)
    {
        Task<HealthCheckResult> current;
        lock (_gate)
        {
            // Aged from the probe's end, not its start: a slow probe (a resolver timing out) is not restarted the moment it ends.
            if (_current is null || (_current.IsCompleted && time.GetElapsedTime(Interlocked.Read(ref _completedAt)) >= Ttl))
            {
                _current = RunAsync();
            }

            current = _current;
        }

        return current.WaitAsync(cancellationToken);
    }

    async Task<HealthCheckResult> RunAsync()
    {
        try
        {
            // Not the caller's token: the probe serves every caller until it ends; its own timeout is its business.
            return await Task.Run(() => probe(CancellationToken.None), CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            // Written before the task completes, so whoever sees it completed reads this time.
            Interlocked.Exchange(ref _completedAt, time.GetTimestamp());
        }
    }
}
