using System.Net;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Identity;

namespace SmtpGateway.Tests.Delivery;

public sealed class EgressDirectoryTests
{
    /// <summary>
    /// Egress over a snapshot of <paramref name="tenants"/>. Egress tests do not care about domains, but a tenant needs one
    /// to compile, so a tenant without any gets "&lt;id&gt;.example".
    /// </summary>
    internal static EgressDirectory NewDirectory(string defaultHelo, TlsPolicyConfig? gatewayTls, Dictionary<string, TenantConfig> tenants)
    {
        foreach (var (id, tenant) in tenants)
        {
            if (tenant.Domains.Count == 0)
            {
                tenant.Domains.Add($"{id}.example");
            }
        }

        var errors = new List<string>();
        var snapshot = TenantSnapshot.Build(tenants, errors);
        Assert.Empty(errors);
        return new EgressDirectory(() => snapshot, defaultHelo, gatewayTls);
    }

    [Fact]
    public void TLS_policy_exact_domain_beats_parent_suffix_beats_tenant_default_beats_gateway()
    {
        var gateway = new TlsPolicyConfig { Default = TlsPolicy.Opportunistic, Domains = { ["bank.example"] = TlsPolicy.Verify, [".corp.example"] = TlsPolicy.Required } };
        var tenants = new Dictionary<string, TenantConfig>
        {
            ["strict"] = new() { Egress = new EgressConfig { Tls = new TlsPolicyConfig { Default = TlsPolicy.Required, Domains = { ["legacy.example"] = TlsPolicy.Opportunistic } } } },
        };
        var directory = NewDirectory("gw.example", gateway, tenants);

        var plain = directory.For("someone").Tls;
        Assert.Equal(TlsPolicy.Opportunistic, plain.For("example.net"));
        Assert.Equal(TlsPolicy.Verify, plain.For("bank.example"));
        Assert.Equal(TlsPolicy.Required, plain.For("mail.corp.example"));
        Assert.Equal(TlsPolicy.Opportunistic, plain.For("corp.example"));

        var strict = directory.For("strict").Tls;
        Assert.Equal(TlsPolicy.Required, strict.For("example.net"));
        Assert.Equal(TlsPolicy.Opportunistic, strict.For("legacy.example"));
        Assert.Equal(TlsPolicy.Verify, strict.For("BANK.example."));
    }

    [Fact]
    public void Tenant_egress_comes_from_the_Tenants_section_and_defaults_to_the_gateway()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Tenants:tenant-a:Domains:0"] = "tenant-a.example",
            ["Tenants:tenant-a:Egress:HeloName"] = "out.tenant-a.example",
            ["Tenants:tenant-a:Egress:SourceAddress"] = "192.0.2.10",
            ["Tenants:tenant-b:Domains:0"] = "tenant-b.example",
            ["Tenants:tenant-b:Egress:Smarthost:Host"] = "relay.tenant-b.example",
            ["Tenants:tenant-b:Egress:Smarthost:Port"] = "587",
            ["Tenants:tenant-b:Egress:Smarthost:Tls"] = "Verify",
        }).Build();
        using var tenants = new TenantDirectoryService(configuration, NullLoggerFactory.Instance);
        var directory = new EgressDirectory(() => tenants.Current, "gw.example", null);

        var a = directory.For("tenant-a");
        Assert.Equal("out.tenant-a.example", a.HeloName);
        Assert.Equal(IPAddress.Parse("192.0.2.10"), a.SourceAddress);
        Assert.Null(a.Smarthost);
        var b = directory.For("tenant-b");
        Assert.Equal("gw.example", b.HeloName);
        Assert.Equal(new TenantSmarthost("relay.tenant-b.example", 587, TlsPolicy.Verify), b.Smarthost);
        Assert.Equal("gw.example", directory.For("unknown").HeloName);
    }

    [Fact]
    public void Invalid_egress_is_refused_with_every_error_and_its_path()
    {
        var errors = GatewayConfigValidator.CollectTenantEgress(new Dictionary<string, TenantConfig>
        {
            ["t"] = new()
            {
                Egress = new EgressConfig
                {
                    HeloName = "not a name", SourceAddress = "300.1.1.1",
                    Smarthost = new TenantSmarthostConfig { Host = "", Port = 70000 },
                    Tls = new TlsPolicyConfig { Domains = { ["bad domain"] = TlsPolicy.Required } },
                },
            },
        });

        Assert.Equal(5, errors.Count);
        Assert.Contains(errors, e => e.StartsWith("Tenants:t:Egress:HeloName:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:t:Egress:SourceAddress:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:t:Egress:Smarthost:Host:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:t:Egress:Smarthost:Port:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:t:Egress:Tls:Domains:bad domain:", StringComparison.Ordinal));

        // The tenant snapshot refuses a tenant with a bad egress section, with the same path.
        var snapshotErrors = new List<string>();
        TenantSnapshot.Build(new Dictionary<string, TenantConfig> { ["t"] = new() { Domains = ["t.example"], Egress = new EgressConfig { SourceAddress = "nope" } } }, snapshotErrors);
        Assert.Equal(["Tenants:t:Egress:SourceAddress: 'nope' is not an IP address."], snapshotErrors);
    }

    [Fact]
    public void Delivery_settings_are_validated()
    {
        var config = new GatewayConfig
        {
            Listeners = [new ListenerConfig { Name = "relay", Kind = ListenerKind.Relay, Port = 2526 }],
            Dns = { Servers = ["127.0.0.1:5353", "not-an-ip"], Timeout = TimeSpan.Zero },
            Delivery =
            {
                Mode = DeliveryMode.Mx,
                Mx = { Port = 0, MaxHosts = 0 },
                MaxConnectionsPerTenant = 0,
                Backoff = { FailuresBeforeBackoff = 0 },
                Tls = { TrustAnchorsPath = "/nonexistent/anchors.pem" },
            },
        };

        var errors = GatewayConfigValidator.Collect(config);

        foreach (var path in new[] { "Gateway:Dns:Servers:1", "Gateway:Dns:Timeout", "Gateway:Delivery:Mx:Port", "Gateway:Delivery:Mx:",
                     "Gateway:Delivery:MaxConnectionsPerTenant", "Gateway:Delivery:Backoff:FailuresBeforeBackoff", "Gateway:Delivery:Tls:TrustAnchorsPath" })
        {
            Assert.Contains(errors, e => e.StartsWith(path, StringComparison.Ordinal));
        }

        Assert.DoesNotContain(errors, e => e.StartsWith("Gateway:Dns:Servers:0", StringComparison.Ordinal));
    }
}
