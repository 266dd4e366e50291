namespace SmtpGateway.Tests.Fakes;

/// <summary>
/// Waits for a condition that another thread makes true (a timer callback of a fake clock, a server's bookkeeping). A
/// poll, not a wait for time to pass: it ends as soon as the condition holds; the timeout only bounds a failing test.
/// </summary>
internal static class Poll
{
    public static async Task UntilAsync(Func<bool> condition, TimeSpan? timeout = null)
    {
        var limit = timeout ?? TimeSpan.FromSeconds(10);
        var start = TimeProvider.System.GetTimestamp();
        while (!condition())
        {
            if (TimeProvider.System.GetElapsedTime(start) > limit)
            {
                throw new TimeoutException($"condition not met within {limit.TotalSeconds:0.#} s");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(5), TimeProvider.System);
        }
    }
}
