using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Identity;
using SmtpGateway.Listener;
using SmtpGateway.Spool;

namespace SmtpGateway.Hosting;

public static class GatewayServiceCollectionExtensions
{
    /// <summary>
    /// Registers every stage. Hosted services start in registration order and stop in reverse, so the spool
    /// recovers before the listener accepts, and the listener drains before delivery and spool stop.
    /// </summary>
    public static IServiceCollection AddSmtpGateway(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<GatewayConfig>()
            .Bind(configuration.GetSection(GatewayConfig.SectionName))
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<GatewayConfig>, GatewayConfigValidator>();
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton(sp => GatewayModel.Build(sp.GetRequiredService<IOptions<GatewayConfig>>().Value));
        services.AddSingleton<ISmtpAuthenticator, RejectAllAuthenticator>();
        services.AddSingleton<ListenerMetrics>();

        services.AddSpool();
        services.AddDelivery();

        services.AddSingleton(sp =>
        {
            var config = sp.GetRequiredService<IOptions<GatewayConfig>>().Value;
            var model = sp.GetRequiredService<GatewayModel>();
            var sessionServices = new SessionServices(
                config.ServerName,
                config.Limits,
                model.Tls,
                model.Relay,
                sp.GetRequiredService<ISmtpAuthenticator>(),
                sp.GetRequiredService<IMessageSpool>(),
                sp.GetRequiredService<TimeProvider>(),
                sp.GetRequiredService<ListenerMetrics>());
            return new SmtpListenerService(model.Listeners, sessionServices, config.ShutdownTimeout, sp.GetRequiredService<ILoggerFactory>());
        });
        services.AddHostedService(sp => sp.GetRequiredService<SmtpListenerService>());

        services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromMinutes(2));
        services.AddOptions<HostOptions>().Configure<IOptions<GatewayConfig>>((host, gateway) =>
            host.ShutdownTimeout = gateway.Value.ShutdownTimeout + TimeSpan.FromSeconds(30));
        return services;
    }
}
