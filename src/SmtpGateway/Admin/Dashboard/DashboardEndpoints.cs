using System.Collections.Frozen;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using SmtpGateway.Admin.Dashboard;
using SmtpGateway.Audit;
using SmtpGateway.Bounces;
using SmtpGateway.Identity;
using SmtpGateway.Spool;

// In SmtpGateway.Admin (not .Dashboard) so that AddAdmin and MapAdmin call these without another using.
namespace SmtpGateway.Admin;

/// <summary>
/// The read-only dashboard: the page at / (and its script and stylesheet under /dashboard/), anonymous because it holds
/// no data, and GET /api/v1/dashboard, operator only, which the page reads with the key the operator typed in.
/// </summary>
public static class DashboardEndpoints
{
    public const string ApiRoute = "/api/v1/dashboard";

    /// <summary>
    /// The page's own origin only: no inline script or style, nothing from elsewhere, no framing (the key is typed into it).
    /// </summary>
    const string ContentSecurityPolicy = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

    static readonly FrozenDictionary<string, Asset> Assets = new Dictionary<string, Asset>(StringComparer.Ordinal)
    {
        ["index.html"] = Asset.Load("index.html", "text/html; charset=utf-8"),
        ["dashboard.js"] = Asset.Load("dashboard.js", "text/javascript; charset=utf-8"),
        ["dashboard.css"] = Asset.Load("dashboard.css", "text/css; charset=utf-8"),
        ["favicon.svg"] = Asset.Load("favicon.svg", "image/svg+xml"),
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>
    /// The per-tenant hour of counts (fed from the gateway meter), the ring of recent cross-tenant refusals (a tap on the
    /// audit log, so call this after the gateway's services are registered) and the view that puts them together.
    /// </summary>
    public static IServiceCollection AddGatewayDashboard(this IServiceCollection services)
    {
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            return new TenantActivity(sp.GetRequiredService<TimeProvider>(), () => directory.Current);
        });
        services.AddSingleton(sp => new ActivityMeterFeed(sp.GetRequiredService<TenantActivity>()));
        services.AddHostedService<ActivityFeedStarter>();
        services.AddSingleton<CrossTenantRefusals>();
        TapAuditLog(services);
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            var spool = sp.GetService<ISpoolQueue>() as FileSpool;
            return new DashboardView(
                sp.GetRequiredService<TimeProvider>(),
                () => directory.Current,
                sp.GetRequiredService<TenantActivity>(),
                sp.GetRequiredService<CrossTenantRefusals>(),
                sp.GetRequiredService<ReputationTracker>(),
                spool is null ? static () => FrozenDictionary<string, int>.Empty : spool.QueuedPerTenant);
        });
        return services;
    }

    public static IEndpointRouteBuilder MapGatewayDashboard(this IEndpointRouteBuilder e)
    {
        e.MapGet("/", (HttpContext context) => Serve(context, "index.html")).ExcludeFromDescription();
        e.MapGet("/dashboard/{file}", (HttpContext context, string file) => Serve(context, file)).ExcludeFromDescription();
        e.MapGet(ApiRoute, (HttpContext context, DashboardView view) =>
        {
            // Every tenant's numbers side by side: no tenant key sees them, not even filtered down to its own.
            if (AdminPrincipal.Of(context) is not { IsOperator: true })
            {
                return AdminResults.OperatorOnly();
            }

            context.Response.Headers.CacheControl = "no-store";
            return Results.Json(view.Build(), DashboardJsonContext.Default.DashboardSnapshot);
        })
            .WithTags("dashboard").WithName("GetDashboard")
            .WithSummary("Per tenant: the last hour per minute (accepted, delivered, deferred, bounced), queue depth, pause rate and threshold; recent cross-tenant refusals. Operator only.")
            .Produces<DashboardSnapshot>();
        return e;
    }

    static IResult Serve(HttpContext context, string file)
    {
        if (!Assets.TryGetValue(file, out var asset))
        {
            return Results.NotFound();
        }

        var headers = context.Response.Headers;
        headers.ContentSecurityPolicy = ContentSecurityPolicy;
        headers.XContentTypeOptions = "nosniff";
        headers.XFrameOptions = "DENY";
        headers["Referrer-Policy"] = "no-referrer";
        headers.CacheControl = "no-cache";
        return Results.Bytes(asset.Content, asset.ContentType);
    }

    /// <summary>
    /// Wraps whatever <see cref="IAuditLog"/> the gateway registered with <see cref="CrossTenantAuditTap"/>: every event still
    /// reaches it, and the refused cross-tenant ones are kept for the page too.
    /// </summary>
    static void TapAuditLog(IServiceCollection services)
    {
        var inner = services.LastOrDefault(d => d.ServiceType == typeof(IAuditLog) && !d.IsKeyedService)
            ?? throw new InvalidOperationException("AddGatewayDashboard needs the gateway's IAuditLog: register the gateway services (AddSmtpGateway) first.");
        services.Replace(ServiceDescriptor.Singleton<IAuditLog>(sp => new CrossTenantAuditTap(
            Resolve(sp, inner), sp.GetRequiredService<CrossTenantRefusals>(), sp.GetRequiredService<TimeProvider>())));
    }

    static IAuditLog Resolve(IServiceProvider sp, ServiceDescriptor descriptor) => (IAuditLog)(
        descriptor.ImplementationInstance
        ?? descriptor.ImplementationFactory?.Invoke(sp)
        ?? ActivatorUtilities.CreateInstance(sp, descriptor.ImplementationType!));

    sealed record Asset(byte[] Content, string ContentType)
    {
        public static Asset Load(string name, string contentType)
        {
            using var stream = typeof(DashboardEndpoints).Assembly.GetManifestResourceStream("SmtpGateway.Dashboard." + name)
                ?? throw new InvalidOperationException($"embedded dashboard file {name} is missing from the build");
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            return new Asset(copy.ToArray(), contentType);
        }
    }

    /// <summary>Starts the meter feed before any other hosted service starts, so the first messages are counted too.</summary>
    sealed class ActivityFeedStarter(ActivityMeterFeed feed) : IHostedLifecycleService
    {
        public Task StartingAsync(CancellationToken cancellationToken)
        {
            feed.Start();
            return Task.CompletedTask;
        }

        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
