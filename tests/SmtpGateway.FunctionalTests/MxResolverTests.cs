using System.Net;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;

namespace SmtpGateway.FunctionalTests;

/// <summary>RFC 5321 section 5.1 and RFC 7505 against a real DNS server (unbound), through DnsClient.</summary>
[Collection(GatewayCollection.Name)]
public sealed class MxResolverTests : IAsyncLifetime
{
    readonly string _work = Directory.CreateTempSubdirectory("smtpgw-dns-").FullName;
    Unbound _dns = null!;

    static readonly string[] Records =
    [
        "probe.test. 300 IN A 127.0.0.1",
        "ordered.test. 300 IN MX 30 mx3.ordered.test.", "ordered.test. 300 IN MX 10 mx1.ordered.test.", "ordered.test. 300 IN MX 20 mx2.ordered.test.",
        "mx1.ordered.test. 300 IN A 127.0.0.31", "mx1.ordered.test. 300 IN A 127.0.0.32", "mx2.ordered.test. 300 IN A 127.0.0.33",
        "mx3.ordered.test. 300 IN A 127.0.0.34",
        "implicit.test. 300 IN A 127.0.0.35",
        "nullmx.test. 300 IN MX 0 .",
        "dangling.test. 300 IN MX 10 nowhere.dangling.test.",
        "noaddress.test. 300 IN TXT \\\"v=spf1 -all\\\"",
    ];

    public async Task InitializeAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        _dns = await Unbound.StartAsync(_work, ["test."], Records, "probe.test", cts.Token);
    }

    public Task DisposeAsync()
    {
        _dns.Dispose();
        Directory.Delete(_work, recursive: true);
        return Task.CompletedTask;
    }

    MxResolver Resolver(string? server = null) =>
        new(new DnsConfig { Servers = [server ?? _dns.Endpoint], Timeout = TimeSpan.FromMilliseconds(500), Retries = 1 }, new MxConfig { UseIPv6 = false, AllowPrivateDestinations = true });

    [Fact]
    public async Task MX_hosts_come_in_preference_order_with_all_their_addresses()
    {
        var route = await Resolver().ResolveAsync("ordered.test", CancellationToken.None);

        Assert.False(route.Failed);
        Assert.Equal(["mx1.ordered.test", "mx2.ordered.test", "mx3.ordered.test"], route.Hosts.Select(h => h.Name));
        Assert.Equal(["127.0.0.31", "127.0.0.32"], route.Hosts[0].Addresses.Select(a => a.ToString()).Order());
    }

    [Fact]
    public async Task Domain_without_MX_is_its_own_implicit_MX()
    {
        var route = await Resolver().ResolveAsync("implicit.test", CancellationToken.None);

        var host = Assert.Single(route.Hosts);
        Assert.Equal("implicit.test", host.Name);
        Assert.Equal([IPAddress.Parse("127.0.0.35")], host.Addresses);
    }

    [Theory]
    [InlineData("nullmx.test", 556, "5.1.10 ")]        // RFC 7505 null MX
    [InlineData("nosuch.test", 550, "5.4.4 ")]         // NXDOMAIN
    [InlineData("noaddress.test", 550, "5.4.4 ")]      // no MX, no A
    [InlineData("dangling.test", 550, "5.4.4 ")]       // MX points at a name that does not exist
    public async Task Permanent_routing_failures(string domain, int code, string status)
    {
        var route = await Resolver().ResolveAsync(domain, CancellationToken.None);

        Assert.True(route.Failed);
        Assert.Equal(code, route.FailureCode);
        Assert.StartsWith(status, route.FailureText);
    }

    [Fact]
    public async Task A_resolver_that_does_not_answer_is_a_transient_failure()
    {
        // A UDP socket that takes queries and never answers (and no TCP listener): every try times out. Mail must not bounce.
        using var silent = new System.Net.Sockets.UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)silent.Client.LocalEndPoint!).Port;

        var route = await Resolver($"127.0.0.1:{port}").ResolveAsync("ordered.test", CancellationToken.None);

        Assert.True(route.Failed);
        Assert.Equal(451, route.FailureCode);
        Assert.Equal("4.4.3 DNS lookup of MX for ordered.test failed (timeout)", route.FailureText);
    }

    [Fact]
    public async Task A_resolver_port_that_refuses_is_a_transient_failure()
    {
        var route = await Resolver($"127.0.0.1:{FreePort.Next()}").ResolveAsync("ordered.test", CancellationToken.None);

        Assert.True(route.Failed);
        Assert.Equal(451, route.FailureCode);
        Assert.StartsWith("4.4.3 ", route.FailureText);
    }

    [Fact]
    public async Task Answers_are_cached_for_their_TTL()
    {
        var resolver = Resolver();
        var first = await resolver.ResolveAsync("ordered.test", CancellationToken.None);

        // With the server gone, the cached answers (TTL 300 s) still route.
        _dns.Dispose();
        var second = await resolver.ResolveAsync("ordered.test", CancellationToken.None);

        Assert.False(second.Failed);
        Assert.Equal(first.Hosts.Select(h => h.Name), second.Hosts.Select(h => h.Name));
    }
}
