using System.Net;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Identity;
using SmtpGateway.Listener;
using SmtpGateway.Smtp;

namespace SmtpGateway.Tests.Identity;

/// <summary>Per-client limits count an IPv6 client per /64: a host owns the whole /64 and can pick any address in it.</summary>
public sealed class ClientAddressTests
{
    [Theory]
    [InlineData("192.0.2.7", "192.0.2.7")]
    [InlineData("::ffff:192.0.2.7", "192.0.2.7")]
    [InlineData("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::")]
    [InlineData("::1", "::")]
    public void Keys(string address, string key) => Assert.Equal(IPAddress.Parse(key), ClientAddress.Key(IPAddress.Parse(address)));

    [Fact]
    public void Auth_failures_from_one_64_add_up_whatever_the_address()
    {
        var throttle = new AuthThrottle(2, 4, TimeSpan.FromMinutes(10), new FakeTimeProvider());
        for (var i = 1; i <= 4; i++)
        {
            throttle.RecordFailure(IPAddress.Parse($"2001:db8:1:2::{i:x}"));
        }

        Assert.True(throttle.IsBlocked(IPAddress.Parse("2001:db8:1:2:ffff::1")));
        Assert.False(throttle.IsBlocked(IPAddress.Parse("2001:db8:1:3::1")));
    }

    [Fact]
    public void The_per_client_connection_cap_counts_a_64_as_one_client()
    {
        var limiter = new ConnectionLimiter(100, 2);
        Assert.Null(limiter.TryAcquire(IPAddress.Parse("2001:db8::1")));
        Assert.Null(limiter.TryAcquire(IPAddress.Parse("2001:db8::2")));
        Assert.Equal(SmtpReplies.TooManyConnectionsFromIp, limiter.TryAcquire(IPAddress.Parse("2001:db8::3")));
        Assert.Null(limiter.TryAcquire(IPAddress.Parse("2001:db8:0:1::3")));

        limiter.Release(IPAddress.Parse("2001:db8::1"));
        Assert.Null(limiter.TryAcquire(IPAddress.Parse("2001:db8::99")));
        Assert.Equal(3, limiter.Active);
    }
}
