using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.Memory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Hosting;
using SmtpGateway.Identity;
using SmtpGateway.Signing;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Identity;

/// <summary>
/// One tenant snapshot: identity lookups, delivery egress and HSM token lookup all see the same compile of "Tenants",
/// before and after a reload, and a refused reload leaves every one of them on the last good snapshot.
/// ConfigurationRoot.Reload() fires the reload token synchronously, so no test waits for a file watcher.
/// </summary>
public sealed class TenantSnapshotConsistencyTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    (ConfigurationRoot Root, string PinFile) NewConfiguration()
    {
        // Outside the data directory, as the start-up check requires of a PIN file.
        var pinFile = Path.Combine(_dir.Path, "pins", "tenant-a.pin");
        SmtpGateway.Tests.Hsm.TestPinFiles.Write(pinFile, "1234");
        var root = new ConfigurationRoot([new MemoryConfigurationProvider(new MemoryConfigurationSource
        {
            InitialData = new Dictionary<string, string?>
            {
                ["Gateway:DataDirectory"] = Path.Combine(_dir.Path, "data"),
                ["Tenants:tenant-a:Domains:0"] = "one.tenant-a.example",
                ["Tenants:tenant-a:Egress:Smarthost:Host"] = "relay-1.tenant-a.example",
                ["Tenants:tenant-a:Egress:Smarthost:Port"] = "587",
                ["Tenants:tenant-a:Hsm:TokenLabel"] = "tenant-a-token-1",
                ["Tenants:tenant-a:Hsm:PinFile"] = pinFile,
                ["Tenants:tenant-b:Domains:0"] = "tenant-b.example",
            },
        })]);
        return (root, pinFile);
    }

    /// <summary>A valid edit: tenant-a's domain, smarthost and token label change together.</summary>
    static void MoveTenantA(ConfigurationRoot root)
    {
        root["Tenants:tenant-a:Domains:0"] = "two.tenant-a.example";
        root["Tenants:tenant-a:Egress:Smarthost:Host"] = "relay-2.tenant-a.example";
        root["Tenants:tenant-a:Hsm:TokenLabel"] = "tenant-a-token-2";
        root.Reload();
    }

    /// <summary>An invalid edit: tenant-a's smarthost and token change, but tenant-b claims tenant-a's domain.</summary>
    static void BreakTenantB(ConfigurationRoot root)
    {
        root["Tenants:tenant-a:Egress:Smarthost:Host"] = "relay-3.tenant-a.example";
        root["Tenants:tenant-a:Hsm:TokenLabel"] = "tenant-a-token-3";
        root["Tenants:tenant-b:Domains:0"] = "two.tenant-a.example";
        root.Reload();
    }

    [Fact]
    public void A_reload_is_seen_by_identity_egress_and_HSM_tokens_as_one_snapshot_and_a_refused_one_by_none()
    {
        var (root, _) = NewConfiguration();
        using var directory = new TenantDirectoryService(root, NullLoggerFactory.Instance);
        var egress = new EgressDirectory(() => directory.Current, "gw.example", null);
        var tokens = new TenantHsmTokens(_dir.Path, () => directory.Current);

        var first = directory.Current;
        Assert.Equal("tenant-a", first.FindByDomain("one.tenant-a.example")?.Id);
        Assert.Equal("relay-1.tenant-a.example", egress.For("tenant-a").Smarthost?.Host);
        Assert.Equal("tenant-a-token-1", tokens.Resolve("tenant-a").TokenLabel);

        MoveTenantA(root);

        var second = directory.Current;
        Assert.NotSame(first, second);
        var tenant = second.Find("tenant-a")!;
        Assert.Null(second.FindByDomain("one.tenant-a.example"));
        Assert.Same(tenant, second.FindByDomain("two.tenant-a.example"));
        // Delivery routes with the very smarthost record the snapshot compiled, not a copy of its own.
        Assert.Same(tenant.Egress.Smarthost, egress.For("tenant-a").Smarthost);
        Assert.Equal(new TenantSmarthost("relay-2.tenant-a.example", 587, null), egress.For("tenant-a").Smarthost);
        Assert.Equal("tenant-a-token-2", tokens.Label("tenant-a"));
        Assert.Equal("tenant-a-token-2", tokens.Resolve("tenant-a").TokenLabel); // the token cached before the reload is not reused
        Assert.Equal(tenant.Hsm.PinFile, tokens.PinFile("tenant-a"));

        // Sessions and attempts that began on the first snapshot keep it.
        Assert.Equal("relay-1.tenant-a.example", egress.For(first, "tenant-a").Smarthost?.Host);

        BreakTenantB(root);

        Assert.Same(second, directory.Current);
        Assert.Equal("tenant-b", directory.Current.FindByDomain("tenant-b.example")?.Id);
        Assert.Equal("relay-2.tenant-a.example", egress.For("tenant-a").Smarthost?.Host);
        Assert.Equal("tenant-a-token-2", tokens.Resolve("tenant-a").TokenLabel);
    }

    [Fact]
    public void Registered_delivery_egress_follows_the_registered_tenant_directory()
    {
        var (root, _) = NewConfiguration();
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddSingleton<IConfiguration>(root);
        services.AddSingleton(Options.Create(new GatewayConfig { DataDirectory = _dir.Path, Delivery = { Mode = DeliveryMode.Smarthost } }));
        services.AddSpool();
        services.AddDelivery();
        using var provider = services.BuildServiceProvider();
        var directory = provider.GetRequiredService<TenantDirectoryService>();
        var egress = provider.GetRequiredService<EgressDirectory>();
        Assert.Equal("relay-1.tenant-a.example", egress.For("tenant-a").Smarthost?.Host);

        MoveTenantA(root);
        Assert.Same(directory.Current.Find("tenant-a")!.Egress.Smarthost, egress.For("tenant-a").Smarthost);

        BreakTenantB(root);
        Assert.Equal("relay-2.tenant-a.example", egress.For("tenant-a").Smarthost?.Host);
    }

    [Fact]
    public void The_gateway_wires_HSM_tokens_and_egress_to_its_one_tenant_directory()
    {
        var (root, _) = NewConfiguration();
        root["Gateway:Listeners:0:Name"] = "relay";
        root["Gateway:Listeners:0:Kind"] = "Relay";
        root["Gateway:Listeners:0:Port"] = "2526";
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddSmtpGateway(root);
        using var provider = services.BuildServiceProvider();
        var directory = provider.GetRequiredService<TenantDirectoryService>();
        var tokens = provider.GetRequiredService<TenantHsmTokens>();
        var egress = provider.GetRequiredService<EgressDirectory>();

        MoveTenantA(root);

        var tenant = directory.Current.Find("tenant-a")!;
        Assert.Equal("tenant-a-token-2", tokens.Resolve("tenant-a").TokenLabel);
        Assert.Same(tenant.Egress.Smarthost, egress.For("tenant-a").Smarthost);
    }

    [Fact]
    public void An_invalid_tenant_egress_fails_start_validation_with_its_path()
    {
        var (root, _) = NewConfiguration();
        root["Tenants:tenant-b:Egress:SourceAddress"] = "not-an-address";
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddSingleton<IConfiguration>(root);
        services.AddOptions<GatewayConfig>().Configure(c => c.DataDirectory = _dir.Path);
        services.AddSpool();
        services.AddDelivery();
        using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IOptions<GatewayConfig>>().Value);
        Assert.Contains(ex.Failures, f => f.StartsWith("Tenants:tenant-b:Egress:SourceAddress:", StringComparison.Ordinal));
    }
}
