using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;

namespace SmtpGateway.Admin;

/// <summary>
/// <c>/healthz</c> (alive: 200 while the process serves HTTP, no check runs) and <c>/readyz</c> (200 only when every
/// check tagged <see cref="ReadyTag"/> is healthy, else 503), for HAProxy, systemd and orchestrators. Both anonymous.
/// </summary>
/// <remarks>
/// The body lists each check by name with its status and a short description written by the check itself: never an
/// exception's text (a PKCS#11 or file-system message is logged for the operator instead), never a tenant id or a path,
/// because the endpoint answers anyone who can reach it.
/// </remarks>
public static class HealthEndpoints
{
    /// <summary>The tag of the checks /readyz runs.</summary>
    public const string ReadyTag = "ready";

    static readonly JsonWriterOptions Compact = new() { Indented = false };

    public static IServiceCollection AddGatewayHealth(this IServiceCollection services)
    {
        // Every check answers from its own cached probe (HealthProbe), so a scrape flood costs no disk, HSM or DNS work. They
        // are singletons: AddCheck<T> alone would make a new instance (and an empty cache) for every request.
        services.AddSingleton<ListenerHealthCheck>();
        services.AddSingleton<SpoolHealthCheck>();
        services.AddSingleton<HsmHealthCheck>();
        services.AddSingleton<DnsHealthCheck>();
        services.AddHealthChecks()
            .AddCheck<ListenerHealthCheck>("listeners", tags: [ReadyTag])
            .AddCheck<SpoolHealthCheck>("spool", tags: [ReadyTag], timeout: HealthProbe.Timeout)
            .AddCheck<HsmHealthCheck>("hsm", tags: [ReadyTag], timeout: HealthProbe.Timeout)
            .AddCheck<DnsHealthCheck>("dns", tags: [ReadyTag], timeout: HealthProbe.Timeout);
        // The health check service logs every unhealthy check at Error on every request: a load balancer polling a gateway
        // that is not ready would write several lines a second. The checks log their own changes of state (HealthLog).
        services.AddLogging(logging => logging.AddFilter("Microsoft.Extensions.Diagnostics.HealthChecks", LogLevel.None));
        return services;
    }

    public static IEndpointRouteBuilder MapGatewayHealth(this IEndpointRouteBuilder e)
    {
        e.MapHealthChecks("/healthz", new HealthCheckOptions { Predicate = _ => false, ResponseWriter = WriteAsync });
        e.MapHealthChecks("/readyz", new HealthCheckOptions
        {
            Predicate = check => check.Tags.Contains(ReadyTag),
            ResponseWriter = WriteAsync,
            ResultStatusCodes =
            {
                [HealthStatus.Healthy] = StatusCodes.Status200OK,
                [HealthStatus.Degraded] = StatusCodes.Status200OK,
                [HealthStatus.Unhealthy] = StatusCodes.Status503ServiceUnavailable,
            },
        });
        return e;
    }

    /// <summary>{"status":"Healthy","checks":{"spool":{"status":"Healthy","description":"…","durationMs":0.4},…}}</summary>
    internal static async Task WriteAsync(HttpContext context, HealthReport report)
    {
        context.Response.ContentType = "application/json; charset=utf-8";
        using var buffer = new MemoryStream();
        await using (var json = new Utf8JsonWriter(buffer, Compact))
        {
            json.WriteStartObject();
            json.WriteString("status", report.Status.ToString());
            json.WriteNumber("durationMs", Math.Round(report.TotalDuration.TotalMilliseconds, 1));
            json.WriteStartObject("checks");
            foreach (var (name, entry) in report.Entries)
            {
                json.WriteStartObject(name);
                json.WriteString("status", entry.Status.ToString());
                // A check that threw (a bug) or timed out has the framework's text here; say only what happened.
                json.WriteString("description", entry.Exception is null ? entry.Description : $"the check failed ({entry.Exception.GetType().Name})");
                json.WriteNumber("durationMs", Math.Round(entry.Duration.TotalMilliseconds, 1));
                json.WriteEndObject();
            }

            json.WriteEndObject();
            json.WriteEndObject();
        }

        await context.Response.Body.WriteAsync(buffer.ToArray(), context.RequestAborted).ConfigureAwait(false);
    }
}
