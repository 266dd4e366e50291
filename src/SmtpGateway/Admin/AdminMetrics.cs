using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Admin;

/// <summary>
/// Prometheus text format at <c>/metrics</c> of the admin endpoint: every instrument of the gateway meter
/// (<see cref="Telemetry.MeterName"/>), through OpenTelemetry's Prometheus exporter. Names keep their <c>smtpgw.</c>
/// prefix (dots become underscores, the unit a suffix, counters end in <c>_total</c>); labels are tenant ids and closed
/// sets only, so the page is anonymous like a load balancer's health check: it says how much, never who or what.
/// </summary>
public static class AdminMetrics
{
    public const string Path = "/metrics";

    public static IServiceCollection AddGatewayMetrics(this IServiceCollection services)
    {
        services.AddOpenTelemetry()
            // target_info's service_name: "smtpgw" rather than the SDK's unknown_service:<process>.
            .ConfigureResource(resource => resource.AddService("smtpgw"))
            .WithMetrics(metrics => metrics
                .AddMeter(Telemetry.MeterName)
                // No response cache: a scrape says what is true now (the exporter's default would answer a second scraper
                // within 300 ms with the first one's page). A scrape is one pass over the in-memory series.
                .AddPrometheusExporter(options => options.ScrapeResponseCacheDurationMilliseconds = 0));
        return services;
    }

    public static IEndpointRouteBuilder MapGatewayMetrics(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapPrometheusScrapingEndpoint(Path).AllowAnonymous();
        return endpoints;
    }
}
