using SmtpGateway.Configuration;

namespace SmtpGateway.Delivery;

/// <summary>When to try again, and when to give up (RFC 5321 section 4.5.4.1), from <see cref="RetryConfig"/>.</summary>
public sealed class RetryPolicy
{
    /// <summary>Used only if the schedule is empty (validation should refuse that); RFC 5321 section 4.5.4.1 asks for at least 30 minutes.</summary>
    static readonly TimeSpan FallbackDelay = TimeSpan.FromMinutes(30);

    readonly RetryConfig _config;
    readonly Func<double> _random;

    /// <param name="config">Retry settings.</param>
    /// <param name="random">Uniform [0, 1) source for jitter; tests pass a fixed one.</param>
    public RetryPolicy(RetryConfig config, Func<double>? random = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        _config = config;
        _random = random ?? Random.Shared.NextDouble;
    }

    public TimeSpan MaxAge => _config.MaxAge;

    /// <summary>Delay after attempt number <paramref name="attempts"/> (1-based) before jitter; the last schedule entry repeats.</summary>
    public TimeSpan BaseDelay(int attempts)
    {
        var schedule = _config.Schedule;
        if (schedule is null || schedule.Count == 0)
        {
            return FallbackDelay;
        }

        return schedule[Math.Clamp(attempts - 1, 0, schedule.Count - 1)];
    }

    /// <summary>
    /// Base delay stretched by up to the Jitter fraction, so that messages deferred together by one outage
    /// do not all come back in the same second: delay * (1 + U[0,1) * Jitter).
    /// </summary>
    public TimeSpan NextDelay(int attempts)
    {
        var jitter = Math.Max(0, _config.Jitter);
        return BaseDelay(attempts) * (1 + _random() * jitter);
    }

    /// <summary>True when a message received at <paramref name="receivedAt"/> is too old to try again.</summary>
    public bool IsExpired(DateTimeOffset receivedAt, DateTimeOffset now) => now - receivedAt >= _config.MaxAge;

    /// <summary>
    /// Next attempt time after attempt <paramref name="attempts"/> ended at <paramref name="now"/>. Never later than
    /// the expiry time, so the last attempt happens when the message expires rather than up to a schedule step after.
    /// </summary>
    public DateTimeOffset NextAttemptAt(int attempts, DateTimeOffset receivedAt, DateTimeOffset now)
    {
        var next = now + NextDelay(attempts);
        var expiry = receivedAt + _config.MaxAge;
        return next > expiry ? (expiry > now ? expiry : now) : next;
    }
}
