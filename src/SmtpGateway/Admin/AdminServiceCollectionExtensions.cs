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
        // The document says how to authenticate, so generated clients send the key: bearer on every /api operation.
        services.AddOpenApi(o => o.AddDocumentTransformer((document, _, _) =>
        {
            document.Components ??= new Microsoft.OpenApi.OpenApiComponents();
            document.Components.SecuritySchemes ??= new Dictionary<string, Microsoft.OpenApi.IOpenApiSecurityScheme>();
            document.Components.SecuritySchemes["adminKey"] = new Microsoft.OpenApi.OpenApiSecurityScheme
            {
                Type = Microsoft.OpenApi.SecuritySchemeType.Http,
                Scheme = "bearer",
                Description = "An admin key: smtpgw admin key create --operator | --tenant T",
            };
            document.Security = [new Microsoft.OpenApi.OpenApiSecurityRequirement { [new Microsoft.OpenApi.OpenApiSecuritySchemeReference("adminKey", document)] = [] }];
            return Task.CompletedTask;
        }));
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
