using SmtpGateway.Configuration;

namespace SmtpGateway.Tests.Signing;

/// <summary>Issue 12: the signing gate's settings under Gateway:Hsm are checked at start, like every other setting.</summary>
public sealed class SigningGateConfigTests
{
    static GatewayConfig Embedded() => Configuration.EmbeddedConfig.Load();

    [Fact]
    public void The_defaults_are_valid_and_leave_each_tenant_within_its_token_sessions()
    {
        var config = Embedded();
        Assert.Empty(GatewayConfigValidator.Collect(config));
        Assert.Null(config.Hsm.MaxConcurrentSigning);
        Assert.Equal(TimeSpan.FromSeconds(30), config.Hsm.SigningWaitTimeout);
        Assert.InRange(SmtpGateway.Signing.SigningGateOptions.DefaultCapacity, 4, 64);
        Assert.True(config.TenantLimits.MaxConcurrentSigning < config.Hsm.MaxSessionsPerToken);
    }

    [Theory]
    [InlineData(0, 30, 256)]
    [InlineData(8, 0, 256)]
    [InlineData(8, 600, 256)]
    [InlineData(8, 30, -1)]
    public void Out_of_range_signing_settings_refuse_the_start(int capacity, int timeoutSeconds, int waiters)
    {
        var config = Embedded();
        config.Hsm.MaxConcurrentSigning = capacity;
        config.Hsm.SigningWaitTimeout = TimeSpan.FromSeconds(timeoutSeconds);
        config.Hsm.MaxSigningWaitersPerTenant = waiters;
        Assert.Contains(GatewayConfigValidator.Collect(config), e => e.StartsWith("Gateway:Hsm:", StringComparison.Ordinal) && e.Contains("MaxConcurrentSigning", StringComparison.Ordinal));
    }
}
