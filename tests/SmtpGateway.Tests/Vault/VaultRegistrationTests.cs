using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Hosting;
using SmtpGateway.Hsm;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Listener;
using SmtpGateway.Vault;

namespace SmtpGateway.Tests.Vault;

public sealed class VaultRegistrationTests
{
    [Fact]
    public async Task The_vault_is_the_one_upstream_credential_source_and_its_sweeper_runs()
    {
        var keys = new InMemoryTenantKeys();
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton(Options.Create(new GatewayConfig { DataDirectory = Path.GetTempPath() }));
        services.AddSingleton<IAuditLog>(new RecordingAudit());
        services.AddSingleton<ITenantKeys>(keys);
        services.AddVault();
        await using var provider = services.BuildServiceProvider();

        var vault = provider.GetRequiredService<CredentialVault>();
        Assert.Same(vault, provider.GetRequiredService<IUpstreamCredentials>());
        // A registration made earlier (the token and return-path keys) is kept, not replaced.
        Assert.Same(keys, provider.GetRequiredService<ITenantKeys>());
        Assert.Contains(provider.GetServices<IHostedService>(), s => s is VaultSweeper);
    }
}
