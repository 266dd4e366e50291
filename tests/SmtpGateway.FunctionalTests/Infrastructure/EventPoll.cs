using System.Diagnostics;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>Polling of a peer's event list (a JSON-lines file it appends to) until a condition holds.</summary>
internal static class EventPoll
{
    /// <summary>
    /// Reads <paramref name="read"/> every 100 ms until <paramref name="done"/> holds and returns that list; throws
    /// TimeoutException with <paramref name="describe"/>'s text after <paramref name="timeout"/> or once <paramref name="stopped"/>.
    /// </summary>
    public static async Task<IReadOnlyList<T>> UntilAsync<T>(Func<IReadOnlyList<T>> read, Func<IReadOnlyList<T>, bool> done, Func<bool> stopped,
        Func<IReadOnlyList<T>, string> describe, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var events = read();
            if (done(events))
            {
                return events;
            }

            if (clock.Elapsed > timeout || stopped())
            {
                throw new TimeoutException(describe(events));
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }
    }
}
