using System.Net;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Identity;

namespace SmtpGateway.Tests.Identity;

public sealed class AuthThrottleTests
{
    readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));

    static IPAddress Address(int i) => new([10, (byte)(i >> 16), (byte)(i >> 8), (byte)i]);

    [Fact]
    public void A_full_table_evicts_the_least_recently_seen_addresses_never_the_active_guesser()
    {
        var throttle = new AuthThrottle(3, 5, TimeSpan.FromMinutes(10), _clock, maxTrackedAddresses: 100);
        var guesser = IPAddress.Parse("192.0.2.7");
        for (var i = 0; i < 4; i++)
        {
            throttle.RecordFailure(guesser);
        }

        // The attacker fills the table with throw-away sources, each seen after the guesser's last attempt...
        for (var i = 0; i < 99; i++)
        {
            _clock.Advance(TimeSpan.FromMilliseconds(10));
            throttle.RecordFailure(Address(i));
        }

        // ...but the guesser keeps guessing, so it is the most recently seen when the table overflows.
        _clock.Advance(TimeSpan.FromMilliseconds(10));
        throttle.RecordFailure(guesser);
        throttle.RecordFailure(Address(1000));

        Assert.True(throttle.IsBlocked(guesser));
        Assert.Equal(5, throttle.FailuresInWindow(guesser));
        Assert.Equal(0, throttle.FailuresInWindow(Address(0))); // the oldest went
        Assert.Equal(1, throttle.FailuresInWindow(Address(98)));
    }

    [Fact]
    public void Addresses_whose_failures_left_the_window_are_evicted_first()
    {
        var throttle = new AuthThrottle(3, 5, TimeSpan.FromMinutes(10), _clock, maxTrackedAddresses: 10);
        for (var i = 0; i < 5; i++)
        {
            throttle.RecordFailure(Address(i));
        }

        _clock.Advance(TimeSpan.FromMinutes(11));
        for (var i = 5; i < 11; i++)
        {
            throttle.RecordFailure(Address(i));
        }

        for (var i = 5; i < 11; i++)
        {
            Assert.Equal(1, throttle.FailuresInWindow(Address(i)));
        }
    }
}
