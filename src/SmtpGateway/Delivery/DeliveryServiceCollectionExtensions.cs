using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;

namespace SmtpGateway.Delivery;

public static class DeliveryServiceCollectionExtensions
{
    /// <summary>
    /// Registers the transport chosen by DeliveryConfig.Mode as <see cref="IDeliveryTransport"/> and
    /// <see cref="DeliveryService"/> as a hosted service. Call after AddSpool(), so that recovery has
    /// filled the ready queue when the workers start.
    /// </summary>
    public static IServiceCollection AddDelivery(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddOptions();
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<DropTransport>();
        services.TryAddSingleton<SmarthostTransport>();
        services.TryAddSingleton<IDeliveryTransport>(sp =>
            sp.GetRequiredService<IOptions<GatewayConfig>>().Value.Delivery.Mode switch
            {
                DeliveryMode.Smarthost => sp.GetRequiredService<SmarthostTransport>(),
                _ => sp.GetRequiredService<DropTransport>(),
            });
        services.AddHostedService<DeliveryService>();
        return services;
    }
}
