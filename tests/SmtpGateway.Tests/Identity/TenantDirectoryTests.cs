using System.Net;
using Microsoft.Extensions.Configuration;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;

namespace SmtpGateway.Tests.Identity;

public sealed class TenantDirectoryTests
{
    static TenantSnapshot Build(Dictionary<string, TenantConfig> config, out List<string> errors)
    {
        errors = [];
        return TenantSnapshot.Build(config, errors);
    }

    [Theory]
    [InlineData("tenant-a.example", "a")]
    [InlineData("TENANT-A.Example.", "a")]
    [InlineData("bücher.example", "b")]
    [InlineData("xn--bcher-kva.example", "b")]
    [InlineData("BÜCHER.EXAMPLE", "b")]
    [InlineData("tenаnt-a.example", null)] // Cyrillic "а": a lookalike, not the tenant's domain
    [InlineData("bounces.tenant-a.example", "a")]
    [InlineData("other.example", null)]
    public void Domains_map_case_insensitively_with_idn_normalised(string domain, string? tenant)
    {
        var snapshot = Build(new()
        {
            ["a"] = new() { Domains = ["tenant-a.example"], BounceDomain = "bounces.tenant-a.example" },
            ["b"] = new() { Domains = ["xn--bcher-kva.example"] },
        }, out var errors);
        Assert.Empty(errors);
        Assert.Equal(tenant, snapshot.FindByDomain(DomainName.Normalize(domain))?.Id);
    }

    [Fact]
    public void Dkim_signing_is_required_unless_the_tenant_opts_out_explicitly()
    {
        // Bound the way the gateway binds config/gateway.json, so the JSON spelling "Dkim": { "Unsigned": true } is what counts.
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Tenants:a:Domains:0"] = "a.example",
            ["Tenants:b:Domains:0"] = "b.example",
            ["Tenants:b:Dkim:Unsigned"] = "true",
        }).Build();
        var tenants = configuration.GetSection("Tenants").Get<Dictionary<string, TenantConfig>>()!;
        var snapshot = Build(tenants, out var errors);
        Assert.Empty(errors);
        Assert.False(snapshot.Find("a")!.Unsigned);
        Assert.True(snapshot.Find("b")!.Unsigned);
    }

    [Theory]
    [InlineData("0.0.0.0/0", 16)]
    [InlineData("10.0.0.0/15", 16)]
    [InlineData("::/0", 48)]
    [InlineData("2001:db8::/47", 48)]
    public void A_network_wider_than_16_or_48_bits_is_refused_unless_the_tenant_allows_it(string network, int widest)
    {
        Build(new() { ["a"] = new() { Domains = ["a.example"], Networks = [network] } }, out var errors);
        var error = Assert.Single(errors);
        Assert.StartsWith("Tenants:a:Networks:0:", error, StringComparison.Ordinal);
        Assert.Contains($"wider than /{widest}", error, StringComparison.Ordinal);
        Assert.Contains("AllowWideNetworks", error, StringComparison.Ordinal);

        var snapshot = Build(new() { ["a"] = new() { Domains = ["a.example"], Networks = [network], AllowWideNetworks = true } }, out errors);
        Assert.Empty(errors);
        Assert.Single(snapshot.Find("a")!.Networks);
    }

    [Theory]
    [InlineData("10.1.0.0/16")]
    [InlineData("192.0.2.7/32")]
    [InlineData("2001:db8:1::/48")]
    public void Networks_of_16_or_48_bits_and_narrower_need_no_opt_in(string network)
    {
        Build(new() { ["a"] = new() { Domains = ["a.example"], Networks = [network] } }, out var errors);
        Assert.Empty(errors);
    }

    [Fact]
    public void Tenant_limits_take_unset_values_from_the_gateway_defaults_and_report_every_bad_one()
    {
        var defaults = new TenantLimitDefaults { MessagesPerMinute = 100, MaxConcurrentSigning = 2 };
        var errors = new List<string>();
        var snapshot = TenantSnapshot.Build(new Dictionary<string, TenantConfig>
        {
            ["a"] = new() { Domains = ["a.example"], Limits = new() { RecipientsPerMinute = 7, MaxMessageSize = 100_000 } },
            ["b"] = new() { Domains = ["b.example"] },
        }, errors, defaults, gatewayMaxMessageSize: 1_000_000);
        Assert.Empty(errors);
        Assert.Equal(new TenantLimits(100, 7, 1_000, 100_000, 2), snapshot.Find("a")!.Limits);
        Assert.Equal(new TenantLimits(100, 300_000, 1_000, 1_000_000, 2), snapshot.Find("b")!.Limits);

        TenantSnapshot.Build(new Dictionary<string, TenantConfig>
        {
            ["a"] = new() { Domains = ["a.example"], Limits = new() { MessagesPerMinute = 0, MaxSessions = -1, MaxMessageSize = 2_000_000 } },
        }, errors, defaults, gatewayMaxMessageSize: 1_000_000);
        Assert.Contains(errors, e => e.StartsWith("Tenants:a:Limits:MessagesPerMinute:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:a:Limits:MaxSessions:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:a:Limits:MaxMessageSize:", StringComparison.Ordinal) && e.Contains("above", StringComparison.Ordinal));
        Assert.Equal(3, errors.Count);
    }

    [Fact]
    public void A_domain_or_network_claimed_twice_is_an_error_with_paths()
    {
        Build(new()
        {
            ["a"] = new() { Domains = ["shared.example"], Networks = ["10.0.0.0/8"], AllowWideNetworks = true },
            ["b"] = new() { Domains = ["SHARED.example."], Networks = ["10.1.0.0/16"], BounceDomain = "evil.example" },
            ["Bad Id"] = new() { Domains = ["x.example"] },
            ["c"] = new() { Domains = ["c..example"], Networks = ["nope"] },
        }, out var errors);
        Assert.Contains(errors, e => e.StartsWith("Tenants:b:Domains:0:", StringComparison.Ordinal) && e.Contains("claimed by tenant 'a'", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:b:Networks:0:", StringComparison.Ordinal) && e.Contains("overlaps", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:b:BounceDomain:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:Bad Id:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:c:Domains:0:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:c:Networks:0:", StringComparison.Ordinal));
    }

    [Fact]
    public void Client_address_maps_to_the_most_specific_network()
    {
        var snapshot = Build(new()
        {
            ["a"] = new() { Domains = ["a.example"], Networks = ["192.0.2.0/25"] },
            ["b"] = new() { Domains = ["b.example"], Networks = ["192.0.2.128/25", "2001:db8::/48"] },
        }, out var errors);
        Assert.Empty(errors);
        Assert.Equal("a", snapshot.FindByAddress(IPAddress.Parse("192.0.2.5"))?.Id);
        Assert.Equal("b", snapshot.FindByAddress(IPAddress.Parse("::ffff:192.0.2.200"))?.Id);
        Assert.Equal("b", snapshot.FindByAddress(IPAddress.Parse("2001:db8::1"))?.Id);
        Assert.Null(snapshot.FindByAddress(IPAddress.Parse("198.51.100.1")));
    }

    [Fact]
    public void Inbound_routes_and_reputation_settings_are_validated_with_the_tenant_and_every_error_has_its_path()
    {
        var snapshot = Build(new()
        {
            ["a"] = new()
            {
                Domains = ["tenant-a.example"],
                Inbound = new InboundRouteConfig { Route = InboundRouteKind.Forward },
                Reputation = new ReputationConfig { MaxBounceRate = 1.5, MinimumVolume = 0, Window = TimeSpan.FromSeconds(5) },
            },
            ["b"] = new()
            {
                Domains = ["tenant-b.example"],
                Inbound = new InboundRouteConfig { Route = InboundRouteKind.Webhook, Webhook = { Url = "ftp://hooks.example/x", SecretEnvironmentVariable = "SMTPGW_TEST_UNSET_SECRET" } },
            },
        }, out var errors);

        Assert.Contains(errors, e => e.StartsWith("Tenants:a:Inbound:Forward:Host:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:a:Reputation:MaxBounceRate:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:a:Reputation:MinimumVolume:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:a:Reputation:Window:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:b:Inbound:Webhook:Url:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:b:Inbound:Webhook:", StringComparison.Ordinal) && e.Contains("SMTPGW_TEST_UNSET_SECRET", StringComparison.Ordinal));

        // Plain HTTP leaves the envelope headers open to whoever is on the path: only to loopback.
        Build(new()
        {
            ["d"] = new() { Domains = ["tenant-d.example"], Inbound = new InboundRouteConfig { Route = InboundRouteKind.Webhook, Webhook = { Url = "http://hooks.example/x", SecretEnvironmentVariable = "PATH" } } },
            ["e"] = new() { Domains = ["tenant-e.example"], Inbound = new InboundRouteConfig { Route = InboundRouteKind.Webhook, Webhook = { Url = "http://127.0.0.1:8080/x", SecretEnvironmentVariable = "PATH" } } },
        }, out var plain);
        Assert.Equal(["Tenants:d:Inbound:Webhook:Url: must be https (plain http is allowed only to a loopback address)."], plain);

        // Defaults are valid: drop folder, 10 % over an hour with at least 100 outcomes.
        Build(new() { ["c"] = new() { Domains = ["tenant-c.example"] } }, out var none);
        Assert.Empty(none);
    }
}
