using Microsoft.Extensions.Configuration;
using SmtpGateway.Configuration;
using SmtpGateway.Hosting;

namespace SmtpGateway.Tests.Configuration;

public sealed class GatewayConfigValidatorTests
{
    [Fact]
    public void Embedded_default_binds_and_names_the_documented_endpoints()
    {
        var config = new ConfigurationBuilder().AddJsonStream(GatewayConfiguration.EmbeddedDefault()).Build()
            .GetSection(GatewayConfig.SectionName).Get<GatewayConfig>()!;
        Assert.Equal(
            [("submission", ListenerKind.Submission, 2525), ("submissions", ListenerKind.ImplicitTls, 2465), ("relay", ListenerKind.Relay, 2526)],
            config.Listeners.Select(l => (l.Name, l.Kind, l.Port)).ToList());
        Assert.All(config.Listeners, l => Assert.Equal("127.0.0.1", l.Address));
        Assert.Equal(DeliveryMode.Drop, config.Delivery.Mode);
        Assert.Equal("data", config.DataDirectory);
        Assert.Equal(TimeSpan.FromDays(5), config.Delivery.Retry.MaxAge);

        // Only the TLS files (made by ./run.sh) are missing in a fresh checkout's test directory.
        config.Tls.CertificatePath = config.Tls.KeyPath = typeof(GatewayConfigValidatorTests).Assembly.Location;
        Assert.Empty(GatewayConfigValidator.Collect(config));
    }

    [Fact]
    public void The_admin_endpoint_is_off_unless_configured_and_every_admin_error_is_listed()
    {
        Assert.False(new GatewayConfig().Admin.Enabled);
        var embedded = new ConfigurationBuilder().AddJsonStream(GatewayConfiguration.EmbeddedDefault()).Build()
            .GetSection(GatewayConfig.SectionName).Get<GatewayConfig>()!;
        Assert.True(embedded.Admin.Enabled);
        Assert.Equal(("127.0.0.1", 8025), (embedded.Admin.Address, embedded.Admin.Port));

        var config = new GatewayConfig
        {
            Listeners = [new ListenerConfig { Name = "relay", Kind = ListenerKind.Relay, Address = "127.0.0.1", Port = 2526 }],
            Admin = new AdminConfig
            {
                Enabled = true, Address = "localhost", Port = 70000, MaxRequestBodySize = 10,
                Tls = new TlsConfig { CertificatePath = "/nonexistent.crt" },
                BadKeyFailuresBeforeDelay = 10, BadKeyFailuresBeforeBlock = 5, BadKeyWindow = TimeSpan.Zero,
            },
        };
        var errors = GatewayConfigValidator.Collect(config);
        foreach (var expected in new[]
                 {
                     "Gateway:Admin:Address", "Gateway:Admin:Port", "Gateway:Admin:MaxRequestBodySize", "Gateway:Admin:Tls:CertificatePath",
                     "Gateway:Admin:Tls:KeyPath", "Gateway:Admin:BadKeyFailuresBeforeDelay", "Gateway:Admin:BadKeyWindow",
                 })
        {
            Assert.Contains(errors, e => e.StartsWith(expected, StringComparison.Ordinal));
        }

        // A non-loopback address in clear text is refused unless the operator says a TLS proxy is in front.
        var wide = new GatewayConfig { Listeners = config.Listeners, Admin = new AdminConfig { Enabled = true, Address = "10.0.0.5" } };
        Assert.Contains(GatewayConfigValidator.Collect(wide), e => e.StartsWith("Gateway:Admin:Address: 10.0.0.5 is not loopback", StringComparison.Ordinal));
        wide.Admin.AllowPlaintext = true;
        Assert.DoesNotContain(GatewayConfigValidator.Collect(wide), e => e.StartsWith("Gateway:Admin", StringComparison.Ordinal));

        // Off: its settings are not checked (nothing listens).
        config.Admin.Enabled = false;
        Assert.DoesNotContain(GatewayConfigValidator.Collect(config), e => e.StartsWith("Gateway:Admin", StringComparison.Ordinal));
    }

    [Fact]
    public void Every_error_is_reported_with_its_path()
    {
        var config = new GatewayConfig
        {
            ServerName = "bad name",
            Listeners =
            [
                new ListenerConfig { Name = "a", Kind = ListenerKind.Submission, Address = "not-an-ip", Port = 70000 },
                new ListenerConfig { Name = "a", Kind = ListenerKind.Relay, Address = "127.0.0.1", Port = 25 },
                new ListenerConfig { Name = "b", Kind = ListenerKind.Relay, Address = "127.0.0.1", Port = 25 },
            ],
            Identity = new IdentityConfig { Audience = "", RefreshInterval = TimeSpan.FromSeconds(5) },
            Tls = new TlsConfig { CertificatePath = "/nonexistent/cert.pem" },
            Limits = new LimitsConfig { MaxMessageSize = 1000, MaxCommandLineLength = 100, MaxTextLineLength = 80, CommandTimeout = TimeSpan.Zero, MaxRecipients = 0 },
            Delivery = new DeliveryConfig { Mode = DeliveryMode.Smarthost, Workers = 0, Smarthost = new SmarthostConfig { Host = "", Port = 0 }, Retry = new RetryConfig { Schedule = [], Jitter = 2 } },
        };

        var errors = GatewayConfigValidator.Collect(config);
        string[] expectedPaths =
        [
            "Gateway:ServerName", "Gateway:Listeners:0:Address", "Gateway:Listeners:0:Port", "Gateway:Listeners:1:Name",
            "Gateway:Listeners:2:Port", "Gateway:Tls:CertificatePath", "Gateway:Tls:KeyPath", "Gateway:Identity:Audience", "Gateway:Identity:RefreshInterval",
            "Gateway:Limits:MaxMessageSize", "Gateway:Limits:MaxRecipients", "Gateway:Limits:MaxCommandLineLength",
            "Gateway:Limits:MaxTextLineLength", "Gateway:Limits:CommandTimeout", "Gateway:Delivery:Workers",
            "Gateway:Delivery:Smarthost:Host", "Gateway:Delivery:Smarthost:Port", "Gateway:Delivery:Retry:Schedule",
            "Gateway:Delivery:Retry:Jitter",
        ];
        foreach (var path in expectedPaths)
        {
            Assert.Contains(errors, e => e.StartsWith(path + ":", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void Environment_style_overrides_win_over_the_file()
    {
        var dir = Directory.CreateTempSubdirectory("smtpgw-cfg");
        try
        {
            var file = Path.Combine(dir.FullName, "gateway.json");
            File.WriteAllText(file, """{ "Gateway": { "DataDirectory": "from-file", "Delivery": { "Mode": "Drop" } } }""");
            Environment.SetEnvironmentVariable("SMTPGW__Gateway__Delivery__Mode", "Smarthost");
            var config = new ConfigurationBuilder().AddGatewaySources(file).Build().GetSection("Gateway").Get<GatewayConfig>()!;
            Assert.Equal(DeliveryMode.Smarthost, config.Delivery.Mode);
            Assert.Equal("from-file", config.DataDirectory);
        }
        finally
        {
            Environment.SetEnvironmentVariable("SMTPGW__Gateway__Delivery__Mode", null);
            dir.Delete(true);
        }
    }

    [Theory]
    [InlineData(-1, true)]
    [InlineData(0, false)]
    [InlineData(100, false)]
    [InlineData(10_000, false)]
    [InlineData(10_001, true)]
    public void The_audit_sync_interval_is_between_zero_and_ten_seconds(int milliseconds, bool refused)
    {
        var config = new GatewayConfig();
        config.Audit.SyncInterval = TimeSpan.FromMilliseconds(milliseconds);
        var errors = GatewayConfigValidator.Collect(config);
        Assert.Equal(refused, errors.Any(e => e.Contains("Audit:SyncInterval", StringComparison.Ordinal)));
        Assert.Equal(TimeSpan.FromMilliseconds(100), new AuditConfig().SyncInterval);
    }

    [Fact]
    public void A_missing_explicit_config_file_is_an_error_not_a_silent_default()
    {
        Assert.Throws<FileNotFoundException>(() => new ConfigurationBuilder().AddGatewaySources("/nonexistent/gateway.json"));
    }
}
