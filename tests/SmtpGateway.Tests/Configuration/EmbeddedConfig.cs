using Microsoft.Extensions.Configuration;
using SmtpGateway.Configuration;
using SmtpGateway.Hosting;

namespace SmtpGateway.Tests.Configuration;

/// <summary>The embedded default config as the gateway binds it, with TLS files that exist so that only the setting under test can fail validation.</summary>
public static class EmbeddedConfig
{
    public static GatewayConfig Load(IReadOnlyDictionary<string, string?>? overrides = null)
    {
        var config = new ConfigurationBuilder()
            .AddJsonStream(GatewayConfiguration.EmbeddedDefault())
            .AddInMemoryCollection(overrides ?? new Dictionary<string, string?>())
            .Build().GetSection(GatewayConfig.SectionName).Get<GatewayConfig>()!;
        config.Tls.CertificatePath = config.Tls.KeyPath = typeof(EmbeddedConfig).Assembly.Location;
        return config;
    }
}
