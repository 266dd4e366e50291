using Microsoft.Extensions.Configuration;
using SmtpGateway.Configuration;
using SmtpGateway.Hosting;
using SmtpGateway.Identity;

namespace SmtpGateway.Cli;

/// <summary>What every control-plane verb needs from --config: the gateway section, the tenant map, the data directory.</summary>
internal sealed record CliConfiguration(IConfiguration Configuration, GatewayConfig Gateway, TenantSnapshot Tenants, string DataDirectory)
{
    /// <summary>Loads and validates the tenant map; prints every error and returns null when it is invalid.</summary>
    public static CliConfiguration? Load(string? configPath)
    {
        var configuration = new ConfigurationBuilder().AddGatewaySources(configPath).Build();
        var gateway = configuration.GetSection(GatewayConfig.SectionName).Get<GatewayConfig>() ?? new GatewayConfig();
        var errors = new List<string>();
        var tenants = TenantDirectoryService.Load(configuration, errors);
        foreach (var error in errors)
        {
            Console.Error.WriteLine($"error: {error}");
        }

        return errors.Count > 0 ? null : new CliConfiguration(configuration, gateway, tenants, GatewayPaths.DataDirectory(gateway));
    }
}
