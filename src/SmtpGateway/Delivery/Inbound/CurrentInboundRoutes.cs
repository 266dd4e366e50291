using Microsoft.Extensions.Logging;
using SmtpGateway.Identity;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery.Inbound;

/// <summary>
/// The tenants' inbound routes as the current tenant snapshot states them: rebuilt when the configuration reloads, so a
/// changed webhook URL or forward host applies to the next attempt without a restart.
/// </summary>
internal sealed class CurrentInboundRoutes : IDeliveryTransport, IDisposable
{
    readonly Func<TenantSnapshot> _tenants;
    readonly string _dataDirectory;
    readonly TimeProvider _time;
    readonly ILogger _logger;
    readonly Lock _lock = new();

    // Redirects are refused and every connection goes through the destination guard (InboundRouter.CreateWebhookClient).
    readonly HttpClient _http;
    readonly DestinationPolicy _destinations;

    (TenantSnapshot Snapshot, InboundRouter Router)? _current;

    /// <param name="destinations">The destination guard's policy (Gateway:Delivery:AllowPrivateDestinations) for Forward and Webhook.</param>
    public CurrentInboundRoutes(Func<TenantSnapshot> tenants, string dataDirectory, TimeProvider time, ILogger logger, DestinationPolicy destinations)
    {
        _destinations = destinations;
        _http = InboundRouter.CreateWebhookClient(destinations);
        _tenants = tenants;
        _dataDirectory = dataDirectory;
        _time = time;
        _logger = logger;
    }

    public Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken) =>
        Router().DeliverAsync(message, recipients, cancellationToken);

    InboundRouter Router()
    {
        var snapshot = _tenants();
        lock (_lock)
        {
            if (_current is { } current && ReferenceEquals(current.Snapshot, snapshot))
            {
                return current.Router;
            }

            var routes = snapshot.Tenants.ToDictionary(kv => kv.Key, kv => kv.Value.Inbound, StringComparer.Ordinal);
            var router = new InboundRouter(routes, _dataDirectory, _http, _time, _logger, _destinations);
            _current = (snapshot, router);
            return router;
        }
    }

    public void Dispose() => _http.Dispose();
}
