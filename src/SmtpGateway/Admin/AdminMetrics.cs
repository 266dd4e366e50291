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
/// <para>
/// Beside them the runtime's own meter, <see cref="RuntimeMeterName"/> (.NET 9+): GC (bytes allocated since start,
/// collections, heap sizes, pause time), thread pool, lock contention, JIT, process CPU and working set, under their
/// <c>dotnet_</c> names. Operators see allocation and GC pressure next to the traffic that causes it, and
/// perf/bench.sh reports bytes allocated per message from <c>dotnet_gc_heap_total_allocated_bytes_total</c>
/// (issue 15). The instruments are observable ones read at scrape time (the exceptions counter aside), so the hot path
/// pays nothing for them.
/// </para>
/// </summary>
public static class AdminMetrics
{
    public const string Path = "/metrics";

    /// <summary>The runtime's built-in meter (System.Diagnostics.Metrics.RuntimeMetrics in .NET 9+).</summary>
    public const string RuntimeMeterName = "System.Runtime";

    /// <summary>The runtime's exception counter: its <c>error.type</c> label is any exception type name.</summary>
    const string RuntimeExceptions = "dotnet.exceptions";

    public static IServiceCollection AddGatewayMetrics(this IServiceCollection services)
    {
        services.AddOpenTelemetry()
            // target_info's service_name: "smtpgw" rather than the SDK's unknown_service:<process>.
            .ConfigureResource(resource => resource.AddService("smtpgw"))
            .WithMetrics(metrics => metrics
                .AddMeter(Telemetry.MeterName, RuntimeMeterName)
                // A count without the exception type: type names are an open set (a label value per type thrown,
                // third-party ones included), where every other label on the page is a closed one.
                .AddView(RuntimeExceptions, new MetricStreamConfiguration { TagKeys = [] })
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
