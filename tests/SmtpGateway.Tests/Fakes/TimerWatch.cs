using Microsoft.Extensions.Time.Testing;

namespace SmtpGateway.Tests.Fakes;

/// <summary>
/// A <see cref="FakeTimeProvider"/> that remembers the due time of every timer created on it, so a test can wait until
/// the code under test has armed the timer it is about to hold on (a condition), instead of sleeping a while and
/// hoping it got there.
/// </summary>
internal sealed class TimerWatch(DateTimeOffset start) : FakeTimeProvider(start)
{
    readonly List<TimeSpan> _dueTimes = [];

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        lock (_dueTimes)
        {
            _dueTimes.Add(dueTime);
        }

        return base.CreateTimer(callback, state, dueTime, period);
    }

    /// <summary>Waits (at most 10 s of real time) until <paramref name="count"/> timers due in exactly <paramref name="dueTime"/> exist.</summary>
    public Task WaitForTimersAsync(TimeSpan dueTime, int count = 1) => Poll.UntilAsync(() =>
    {
        lock (_dueTimes)
        {
            return _dueTimes.Count(d => d == dueTime) >= count;
        }
    });
}
