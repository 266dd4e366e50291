using Microsoft.Extensions.DependencyInjection;
using SmtpGateway.Audit;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Signing;

namespace SmtpGateway.Admin;

public static class TokenDkimServiceCollectionExtensions
{
    /// <summary>
    /// The token and DKIM control planes on the gateway's own singletons (token service, HSM, tenant tokens, selector
    /// store, audit log), so an API call changes the running process itself, never a second copy of its state.
    /// </summary>
    public static IServiceCollection AddTokenDkimAdministration(this IServiceCollection services)
    {
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            return new TokenAdministration(sp.GetRequiredService<TokenService>(), () => directory.Current,
                sp.GetRequiredService<Configuration.IdentityConfig>(), sp.GetRequiredService<IAuditLog>());
        });
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            return new DkimAdministration(sp.GetRequiredService<DkimKeyStore>(), sp.GetRequiredService<IHsm>(), sp.GetRequiredService<TenantHsmTokens>(),
                () => directory.Current, sp.GetRequiredService<IAuditLog>(), sp.GetRequiredService<TimeProvider>());
        });
        return services;
    }
}
