using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Spool;
using SmtpGateway.Vault;

namespace SmtpGateway.Delivery;

/// <summary>The tenants' event logs (null when Delivery:EventsDirectory is empty), shared by delivery, bounces and the listener.</summary>
public sealed record DeliveryEvents(DeliveryEventLog? Log);

public static class DeliveryServiceCollectionExtensions
{
    /// <summary>
    /// Registers the transport chosen by DeliveryConfig.Mode as <see cref="IDeliveryTransport"/> and
    /// <see cref="DeliveryService"/> as a hosted service (with the event log, DSNs and the queue control directory).
    /// Call after AddSpool(), so that recovery has filled the ready queue when the workers start.
    /// Tenant egress settings come from the tenant snapshot (<see cref="TenantDirectoryService"/>, registered here from the
    /// host's IConfiguration when AddSmtpGateway has not registered it).
    /// </summary>
    public static IServiceCollection AddDelivery(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddOptions();

        // The configuration binder appends a bound list to the one a property starts with, so "Retry:Schedule": ["00:00:10"]
        // would follow the seven default delays instead of replacing them. A configured schedule replaces the default.
        services.AddOptions<GatewayConfig>().PostConfigure<IServiceProvider>((config, sp) =>
        {
            var section = sp.GetService<IConfiguration>()?.GetSection($"{GatewayConfig.SectionName}:Delivery:Retry:Schedule");
            if (section is not null && section.GetChildren().Any() && section.Get<List<TimeSpan>>() is { } schedule)
            {
                config.Delivery.Retry.Schedule = schedule;
            }
        });

        // Delivery alone (without AddSmtpGateway) still reads tenant egress from the host's configuration, through the
        // same one tenant snapshot; without a configuration there are no tenants.
        services.TryAddSingleton(sp => new TenantDirectoryService(
            sp.GetService<IConfiguration>() ?? new ConfigurationBuilder().Build(), sp.GetRequiredService<ILoggerFactory>()));
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<GatewayConfig>, TenantDirectoryValidator>());
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<DropTransport>();
        services.TryAddSingleton(sp =>
        {
            var config = sp.GetRequiredService<IOptions<GatewayConfig>>().Value;
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            return new EgressDirectory(() => directory.Current, config.Delivery.Smarthost.HeloName ?? config.ServerName, config.Delivery.Tls);
        });
        services.TryAddSingleton<IMxResolver>(sp =>
        {
            var config = sp.GetRequiredService<IOptions<GatewayConfig>>().Value;
            return new MxResolver(config.Dns, config.Delivery.Mx, config.Delivery.AllowPrivateDestinations);
        });
        // The vault is optional: without one, a tenant smarthost that names a credential is deferred (4.7.0), never sent unauthenticated.
        services.TryAddSingleton(sp => new SmarthostTransport(
            sp.GetRequiredService<IOptions<GatewayConfig>>().Value, sp.GetRequiredService<EgressDirectory>(), sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<SmarthostTransport>>(), sp.GetService<IUpstreamCredentials>()));
        services.TryAddSingleton(sp => new MxTransport(
            sp.GetRequiredService<IOptions<GatewayConfig>>().Value, sp.GetRequiredService<IMxResolver>(), sp.GetRequiredService<EgressDirectory>(),
            sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<MxTransport>>(), credentials: sp.GetService<IUpstreamCredentials>()));
        services.TryAddSingleton<IDeliveryTransport>(sp =>
        {
            IDeliveryTransport transport = sp.GetRequiredService<IOptions<GatewayConfig>>().Value.Delivery.Mode switch
            {
                DeliveryMode.Smarthost => sp.GetRequiredService<SmarthostTransport>(),
                DeliveryMode.Mx => sp.GetRequiredService<MxTransport>(),
                _ => sp.GetRequiredService<DropTransport>(),
            };

            // Tenant return paths (VERP), when envelope isolation is registered (the full gateway).
            if (transport is IOutboundTransport smtp)
            {
                smtp.Engine.ReturnPaths = sp.GetService<DeliveryHooks>()?.ReturnPaths;
            }

            return transport;
        });
        services.TryAddSingleton(sp =>
        {
            var config = sp.GetRequiredService<IOptions<GatewayConfig>>().Value;
            var logger = sp.GetRequiredService<ILogger<DeliveryService>>();
            return new DeliveryEvents(string.IsNullOrWhiteSpace(config.Delivery.EventsDirectory)
                ? null
                : new DeliveryEventLog(Path.IsPathRooted(config.Delivery.EventsDirectory)
                    ? config.Delivery.EventsDirectory
                    : Path.Combine(GatewayPaths.DataDirectory(config), config.Delivery.EventsDirectory), logger));
        });
        services.TryAddSingleton(sp =>
        {
            var config = sp.GetRequiredService<IOptions<GatewayConfig>>().Value;
            var time = sp.GetRequiredService<TimeProvider>();
            var logger = sp.GetRequiredService<ILogger<DeliveryService>>();
            var spool = sp.GetRequiredService<ISpoolQueue>();
            var events = sp.GetRequiredService<DeliveryEvents>().Log;
            var dsn = config.Delivery.Dsn.Enabled && sp.GetService<IMessageSpool>() is { } store
                ? new DsnGenerator(store, config.ServerName, config.Delivery.Dsn.MaxReturnedHeaderBytes, time, logger)
                : null;
            var control = spool is FileSpool fileSpool ? new QueueControl(fileSpool, time, logger) : null;
            // The full gateway routes inbound mail and reports through the TenantRouter; delivery alone uses the transport.
            var transport = (IDeliveryTransport?)sp.GetService<TenantRouter>() ?? sp.GetRequiredService<IDeliveryTransport>();
            return new DeliveryService(spool, transport, config.Delivery, time, logger, random: null, events, dsn, control, sp.GetService<DeliveryHooks>());
        });
        services.AddHostedService(sp => sp.GetRequiredService<DeliveryService>());
        return services;
    }
}
