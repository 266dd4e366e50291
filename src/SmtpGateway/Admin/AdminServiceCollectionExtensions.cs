using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;

namespace SmtpGateway.Admin;

public static class AdminServiceCollectionExtensions
{
    /// <summary>The admin endpoint's services (issue #13); each feature adds its own line.</summary>
    public static IServiceCollection AddAdmin(this IServiceCollection services)
    {
        services.AddRouting();
        services.AddProblemDetails();
        services.AddOpenApi();
        services.ConfigureHttpJsonOptions(o => o.SerializerOptions.Converters.Add(new System.Text.Json.Serialization.JsonStringEnumConverter()));
        services.AddGatewayMetrics();
        services.AddSingleton(sp => new AdminKeyStore(
            GatewayPaths.DataDirectory(sp.GetRequiredService<IOptions<GatewayConfig>>().Value), sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(sp =>
        {
            var admin = sp.GetRequiredService<IOptions<GatewayConfig>>().Value.Admin;
            return new AdminKeyThrottle(
                new AuthThrottle(admin.BadKeyFailuresBeforeDelay, admin.BadKeyFailuresBeforeBlock, admin.BadKeyWindow, sp.GetRequiredService<TimeProvider>()),
                admin.BadKeyWindow);
        });
        services.AddGatewayHealth();
        services.AddGatewayDashboard();
        services.AddTokenDkimAdministration();
        return services;
    }
}
