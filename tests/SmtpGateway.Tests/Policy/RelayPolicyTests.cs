using System.Net;
using SmtpGateway.Policy;

namespace SmtpGateway.Tests.Policy;

public sealed class RelayPolicyTests
{
    readonly RelayPolicy _policy = new([IPNetwork.Parse("192.0.2.0/24"), IPNetwork.Parse("2001:db8::/32")]);

    [Theory]
    [InlineData("192.0.2.7", true)]
    [InlineData("::ffff:192.0.2.7", true)] // dual-stack sockets report IPv4 clients this way
    [InlineData("192.0.3.1", false)]
    [InlineData("2001:db8::5", true)]
    [InlineData("2001:db9::5", false)]
    [InlineData("127.0.0.1", false)]
    public void Only_listed_networks_may_relay_unauthenticated(string client, bool allowed)
    {
        var reply = _policy.Evaluate(new RelayFacts(IPAddress.Parse(client), Authenticated: false));
        Assert.Equal(allowed, reply is null);
        if (!allowed)
        {
            Assert.Equal("554 5.7.1 Relay access denied", reply!.ToString());
        }
    }

    [Fact]
    public void Authenticated_sessions_may_relay_from_anywhere()
    {
        Assert.Null(_policy.Evaluate(new RelayFacts(IPAddress.Parse("203.0.113.9"), Authenticated: true)));
    }

    [Fact]
    public void An_empty_network_list_is_not_an_open_relay()
    {
        Assert.NotNull(new RelayPolicy([]).Evaluate(new RelayFacts(IPAddress.Loopback, false)));
    }
}
