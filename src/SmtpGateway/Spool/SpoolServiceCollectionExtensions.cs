using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;

namespace SmtpGateway.Spool;

/// <summary>Runs spool recovery when the host starts, before any later hosted service (delivery, then the Listener).</summary>
internal sealed class SpoolRecoveryService(FileSpool spool) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => spool.RecoverAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

public static class SpoolServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="FileSpool"/> as the singleton <see cref="IMessageSpool"/> and <see cref="ISpoolQueue"/>,
    /// and its recovery as a hosted service. Hosted services start in registration order, so call this
    /// before AddDelivery() and before adding the Listener: recovery then finishes before mail is accepted.
    /// Needs IOptions&lt;GatewayConfig&gt; and logging from the host.
    /// </summary>
    public static IServiceCollection AddSpool(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddOptions();
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<FileSpool>();
        services.TryAddSingleton<IMessageSpool>(sp => sp.GetRequiredService<FileSpool>());
        services.TryAddSingleton<ISpoolQueue>(sp => sp.GetRequiredService<FileSpool>());
        services.AddHostedService<SpoolRecoveryService>();
        return services;
    }
}
