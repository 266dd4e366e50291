using Microsoft.Extensions.Configuration;
using SmtpGateway.Configuration;

namespace SmtpGateway.Tests.Vault;

public sealed class VaultConfigTests
{
    [Fact]
    public void Defaults_are_the_documented_ones()
    {
        var vault = new GatewayConfig().Vault;
        Assert.Equal((TimeSpan.FromMinutes(10), TimeSpan.FromMinutes(5), TimeSpan.FromSeconds(15)), (vault.RotationGrace, vault.RefreshBefore, vault.TokenEndpointTimeout));
    }

    [Fact]
    public void Bad_values_are_reported_with_their_paths()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Gateway:Vault:RotationGrace"] = "00:00:00",
            ["Gateway:Vault:RefreshBefore"] = "-00:01:00",
            ["Gateway:Vault:TokenEndpointTimeout"] = "-00:00:01",
        }).Build().GetSection(GatewayConfig.SectionName).Get<GatewayConfig>()!;

        var errors = GatewayConfigValidator.Collect(config).Where(e => e.StartsWith("Gateway:Vault:", StringComparison.Ordinal)).ToList();

        Assert.Equal(3, errors.Count);
        Assert.Contains(errors, e => e.StartsWith("Gateway:Vault:RotationGrace:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Gateway:Vault:RefreshBefore:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Gateway:Vault:TokenEndpointTimeout:", StringComparison.Ordinal));
    }
}
