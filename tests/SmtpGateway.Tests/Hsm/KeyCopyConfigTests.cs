using SmtpGateway.Configuration;

namespace SmtpGateway.Tests.Hsm;

/// <summary>Gateway:Hsm:KeyCopyRecheckInterval: how long a DKIM key deleted by another process may still sign.</summary>
public sealed class KeyCopyConfigTests
{
    [Fact]
    public void Default_is_unset_and_valid()
    {
        // Unset: 1 s with SoftHSM2, no copies with any other module (Pkcs11HsmSessionCopyTests).
        var config = Configuration.EmbeddedConfig.Load();
        Assert.Null(config.Hsm.KeyCopyRecheckInterval);
        Assert.Empty(GatewayConfigValidator.Collect(config));
    }

    [Theory]
    [InlineData(0, true)]
    [InlineData(300, true)]
    [InlineData(301, false)]
    [InlineData(-1, false)]
    public void Interval_is_zero_to_five_minutes(int seconds, bool valid)
    {
        var config = Configuration.EmbeddedConfig.Load();
        config.Hsm.KeyCopyRecheckInterval = TimeSpan.FromSeconds(seconds);
        var errors = GatewayConfigValidator.Collect(config);
        Assert.Equal(valid, !errors.Any(e => e.StartsWith("Gateway:Hsm:KeyCopyRecheckInterval:", StringComparison.Ordinal)));
    }
}
