using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Delivery;

/// <summary>The destination guard's range table (issue 12): each range, the addresses just inside and just outside it, and IPv6 forms that carry IPv4.</summary>
public sealed class DestinationGuardTests
{
    [Theory]
    // Public: allowed.
    [InlineData("93.184.216.34", null)]
    [InlineData("8.8.8.8", null)]
    [InlineData("2606:2800:220:1:248:1893:25c8:1946", null)]
    [InlineData("2001:db8::1", null)]
    // 0.0.0.0/8.
    [InlineData("0.0.0.0", "this-network")]
    [InlineData("0.255.255.255", "this-network")]
    [InlineData("1.0.0.0", null)]
    // 10.0.0.0/8.
    [InlineData("9.255.255.255", null)]
    [InlineData("10.0.0.0", "private")]
    [InlineData("10.255.255.255", "private")]
    [InlineData("11.0.0.0", null)]
    // 100.64.0.0/10.
    [InlineData("100.63.255.255", null)]
    [InlineData("100.64.0.0", "shared")]
    [InlineData("100.127.255.255", "shared")]
    [InlineData("100.128.0.0", null)]
    // 127.0.0.0/8.
    [InlineData("126.255.255.255", null)]
    [InlineData("127.0.0.1", "loopback")]
    [InlineData("127.255.255.255", "loopback")]
    [InlineData("128.0.0.0", null)]
    // 169.254.0.0/16 and the metadata endpoint in it.
    [InlineData("169.253.255.255", null)]
    [InlineData("169.254.0.0", "link-local")]
    [InlineData("169.254.169.254", "metadata")]
    [InlineData("169.254.169.253", "link-local")]
    [InlineData("169.254.255.255", "link-local")]
    [InlineData("169.255.0.0", null)]
    // 172.16.0.0/12.
    [InlineData("172.15.255.255", null)]
    [InlineData("172.16.0.0", "private")]
    [InlineData("172.31.255.255", "private")]
    [InlineData("172.32.0.0", null)]
    // 192.0.0.0/24.
    [InlineData("191.255.255.255", null)]
    [InlineData("192.0.0.0", "ietf-protocol")]
    [InlineData("192.0.0.255", "ietf-protocol")]
    [InlineData("192.0.1.0", null)]
    // 192.168.0.0/16.
    [InlineData("192.167.255.255", null)]
    [InlineData("192.168.0.0", "private")]
    [InlineData("192.168.255.255", "private")]
    [InlineData("192.169.0.0", null)]
    // 198.18.0.0/15.
    [InlineData("198.17.255.255", null)]
    [InlineData("198.18.0.0", "benchmarking")]
    [InlineData("198.19.255.255", "benchmarking")]
    [InlineData("198.20.0.0", null)]
    // 224.0.0.0/4 and 240.0.0.0/4 (with the broadcast address).
    [InlineData("223.255.255.255", null)]
    [InlineData("224.0.0.0", "multicast")]
    [InlineData("239.255.255.255", "multicast")]
    [InlineData("240.0.0.0", "reserved")]
    [InlineData("255.255.255.255", "reserved")]
    // IPv6 unspecified, loopback, IPv4-compatible (::/96).
    [InlineData("::", "unspecified")]
    [InlineData("::1", "loopback")]
    [InlineData("::2", "ipv4-compatible")]
    [InlineData("::8.8.8.8", "ipv4-compatible")]
    [InlineData("::1:0:0", null)]
    // IPv4-mapped: the embedded address decides.
    [InlineData("::ffff:127.0.0.1", "loopback")]
    [InlineData("::ffff:169.254.169.254", "metadata")]
    [InlineData("::ffff:10.0.0.1", "private")]
    [InlineData("::ffff:93.184.216.34", null)]
    // NAT64 well-known prefix 64:ff9b::/96: the embedded address decides; the local-use prefix is refused.
    [InlineData("64:ff9b::7f00:1", "loopback")]
    [InlineData("64:ff9b::a9fe:a9fe", "metadata")]
    [InlineData("64:ff9b::c0a8:101", "private")]
    [InlineData("64:ff9b::5db8:d822", null)]
    [InlineData("64:ff9b:0:0:0:1::", null)] // just past the /96: an ordinary global address
    [InlineData("64:ff9b:1::5db8:d822", "nat64-local")]
    [InlineData("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "nat64-local")]
    [InlineData("64:ff9b:2::", null)]
    // 6to4 2002::/16: the IPv4 address in bits 16-47 decides.
    [InlineData("2002:7f00:1::1", "loopback")]
    [InlineData("2002:a9fe:a9fe::", "metadata")]
    [InlineData("2002:0a00:0001::1", "private")]
    [InlineData("2002:c612:0001::1", "benchmarking")]
    [InlineData("2002:5db8:d822::1", null)]
    [InlineData("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", null)]
    [InlineData("2003::1", null)]
    // fc00::/7, fe80::/10, fec0::/10, ff00::/8.
    [InlineData("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", null)]
    [InlineData("fc00::", "unique-local")]
    [InlineData("fd00::1", "unique-local")]
    [InlineData("fd00:ec2::254", "metadata")]
    [InlineData("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique-local")]
    [InlineData("fe00::", null)]
    [InlineData("fe80::", "link-local")]
    [InlineData("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "link-local")]
    [InlineData("fec0::", "site-local")]
    [InlineData("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "site-local")]
    [InlineData("ff00::", "multicast")]
    [InlineData("ff02::1", "multicast")]
    [InlineData("feff::1", "site-local")]
    public void Range_table_refuses_each_special_range_and_nothing_beside_it(string address, string? range)
    {
        Assert.Equal(range, DestinationGuard.RefusedRange(IPAddress.Parse(address)));
        Assert.Equal(range is null, MxResolver.IsPublic(IPAddress.Parse(address)));
    }

    [Fact]
    public void A_link_local_address_with_a_scope_is_still_link_local() =>
        Assert.Equal("link-local", DestinationGuard.RefusedRange(IPAddress.Parse("fe80::1%2")));

    [Fact]
    public void Range_names_are_a_small_closed_set()
    {
        // They are the metric label "range": a new row must reuse a name or add one on purpose.
        var names = DestinationRanges.Ranges.Select(r => r.Name).Distinct().Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(
            ["6to4", "benchmarking", "ietf-protocol", "ipv4-compatible", "ipv4-mapped", "link-local", "loopback", "metadata", "multicast", "nat64", "nat64-local",
                "private", "reserved", "shared", "site-local", "this-network", "unique-local", "unspecified"],
            names);
    }

    [Fact]
    public async Task A_name_is_resolved_once_and_only_its_allowed_addresses_are_returned()
    {
        var questions = 0;
        var logger = new CapturingLogger();
        var policy = new DestinationPolicy(false, logger, resolver: (_, _) =>
        {
            questions++;
            return Task.FromResult(new[] { IPAddress.Parse("10.0.0.1"), IPAddress.Parse("93.184.216.34"), IPAddress.Parse("127.0.0.1") });
        });

        var addresses = await policy.ResolveAsync(DestinationGuard.Smarthost, "tenant-a", "relay.example", 25, CancellationToken.None);

        Assert.Equal([IPAddress.Parse("93.184.216.34")], addresses);
        Assert.Equal(1, questions);
        Assert.Equal(2, logger.Lines.Count(l => l.Contains("Destination guard: smarthost for tenant tenant-a: relay.example", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Every_address_refused_throws_with_a_transient_reply_naming_the_first_range()
    {
        var policy = new DestinationPolicy(false, NullLogger.Instance,
            resolver: (_, _) => Task.FromResult(new[] { IPAddress.Parse("169.254.169.254"), IPAddress.Parse("fd00::1") }));

        var refused = await Assert.ThrowsAsync<DestinationRefusedException>(() =>
            policy.ResolveAsync(DestinationGuard.Forward, "tenant-a", "mail.example", 25, CancellationToken.None));

        Assert.Equal("451 4.4.3 mail.example resolves only to refused non-public addresses (metadata)", refused.Reply.ToString());
    }

    [Fact]
    public async Task Opt_outs_allow_everything_or_only_the_gateways_own_smarthost()
    {
        HostResolver loopback = (_, _) => Task.FromResult(new[] { IPAddress.Loopback });
        var all = new DestinationPolicy(true, NullLogger.Instance, resolver: loopback);
        Assert.Equal([IPAddress.Loopback], await all.ResolveAsync(DestinationGuard.Webhook, "t", "hook.example", 443, CancellationToken.None));

        var delivery = new DeliveryConfig { Mode = DeliveryMode.Smarthost, Smarthost = { Host = "relay.internal", Port = 2525, AllowPrivateDestinations = true } };
        var own = DestinationPolicy.For(delivery, NullLogger.Instance, loopback);
        Assert.Equal([IPAddress.Loopback], await own.ResolveAsync(DestinationGuard.Smarthost, "t", "RELAY.internal", 2525, CancellationToken.None));
        var spaced = DestinationPolicy.For(new DeliveryConfig { Mode = DeliveryMode.Smarthost, Smarthost = { Host = " relay.internal ", Port = 2525, AllowPrivateDestinations = true } }, NullLogger.Instance, loopback);
        Assert.Equal([IPAddress.Loopback], await spaced.ResolveAsync(DestinationGuard.Smarthost, "t", " relay.internal ", 2525, CancellationToken.None));
        await Assert.ThrowsAsync<DestinationRefusedException>(() => own.ResolveAsync(DestinationGuard.Smarthost, "t", "relay.internal", 25, CancellationToken.None));
        await Assert.ThrowsAsync<DestinationRefusedException>(() => own.ResolveAsync(DestinationGuard.Smarthost, "t", "other.internal", 2525, CancellationToken.None));

        // An unused smarthost (Mode Mx) trusts nothing.
        delivery.Mode = DeliveryMode.Mx;
        Assert.Empty(DestinationPolicy.TrustedSmarthost(delivery));
    }

    [Theory]
    [InlineData("127.0.0.1", false, false, "Gateway:Delivery:Smarthost:Host: 127.0.0.1 is a loopback address")]
    [InlineData("10.1.2.3", false, false, "Gateway:Delivery:Smarthost:Host: 10.1.2.3 is a private address")]
    [InlineData("127.0.0.1", true, false, null)]
    [InlineData("127.0.0.1", false, true, null)]
    [InlineData("relay.example", false, false, null)] // names are checked at connect time
    [InlineData("93.184.216.34", false, false, null)]
    public void Gateway_smarthost_literal_is_validated_at_start(string host, bool allowAll, bool allowSmarthost, string? error)
    {
        var config = new GatewayConfig
        {
            Delivery = { Mode = DeliveryMode.Smarthost, AllowPrivateDestinations = allowAll, Smarthost = { Host = host, AllowPrivateDestinations = allowSmarthost } },
        };

        var errors = GatewayConfigValidator.Collect(config).Where(e => e.Contains("destination guard", StringComparison.Ordinal)).ToList();

        if (error is null)
        {
            Assert.Empty(errors);
        }
        else
        {
            var message = Assert.Single(errors);
            Assert.StartsWith(error, message, StringComparison.Ordinal);
            Assert.EndsWith("or set Gateway:Delivery:Smarthost:AllowPrivateDestinations to true.", message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Tenant_smarthost_that_is_the_gateways_trusted_smarthost_is_allowed_others_are_not()
    {
        var delivery = new DeliveryConfig { Mode = DeliveryMode.Smarthost, Smarthost = { Host = "10.0.0.5", Port = 25, AllowPrivateDestinations = true } };
        var tenants = new Dictionary<string, TenantConfig>
        {
            ["same"] = new() { Egress = { Smarthost = new TenantSmarthostConfig { Host = "10.0.0.5", Port = 25 } } },
            ["other"] = new() { Egress = { Smarthost = new TenantSmarthostConfig { Host = "10.0.0.6", Port = 25 } } },
        };
        var errors = new List<string>();

        DestinationRanges.CheckTenants(tenants, delivery, errors);

        Assert.StartsWith("Tenants:other:Egress:Smarthost:Host: 10.0.0.6 is a private address", Assert.Single(errors), StringComparison.Ordinal);
    }
}
