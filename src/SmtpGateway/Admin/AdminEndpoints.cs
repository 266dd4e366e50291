using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using SmtpGateway.Bounces;
using SmtpGateway.Identity;

namespace SmtpGateway.Admin;

/// <summary>The admin endpoint's one map: middleware order, then each feature's endpoints (one line each).</summary>
public static class AdminEndpoints
{
    public static void MapAdmin(WebApplication app)
    {
        // An error the framework answers without a body (a 415 for a wrong Content-Type, a 400 from a binding failure, a
        // 405) becomes problem+json too, like every refusal the handlers write.
        app.UseStatusCodePages();
        app.UseRouting();
        app.UseMiddleware<AdminAuthentication>();
        app.MapOpenApi("/openapi.json");
        app.MapTenants();
        app.MapGatewayHealth();
        app.MapGatewayMetrics();
        app.MapGatewayDashboard();
        app.MapQueue();
        app.MapSuppression();
        app.MapVault();
        app.MapEvents();
        app.MapTokens();
        app.MapDkim();
        app.MapReload();
    }

    /// <summary>Tenant summary shown by the API (never a secret: the HSM PIN source is named, not read).</summary>
    public sealed record TenantView(
        string Id, IReadOnlyList<string> Domains, string? BounceDomain, IReadOnlyList<string> Networks, bool Paused, TenantLimits Limits,
        string? Smarthost, string? HsmToken, bool Unsigned);

    static IEndpointRouteBuilder MapTenants(this IEndpointRouteBuilder e)
    {
        var tenants = e.MapGroup("/api/v1/tenants").WithTags("tenants");
        tenants.MapGet("/", (HttpContext context, TenantDirectoryService directory, ReputationTracker reputation) =>
        {
            var principal = AdminPrincipal.Of(context)!;
            return Results.Ok(directory.Current.Tenants.Values
                .Where(t => principal.CanSee(t.Id))
                .OrderBy(t => t.Id, StringComparer.Ordinal)
                .Select(t => View(t, reputation))
                .ToList());
        }).WithName("ListTenants").WithSummary("Tenants this key may see (all for an operator key, its own for a tenant key).");
        tenants.MapGet("/{tenant}", (string tenant, HttpContext context, TenantDirectoryService directory, ReputationTracker reputation) =>
            Visible(context, directory, tenant) is { } t ? Results.Ok(View(t, reputation)) : AdminResults.TenantNotFound())
            .WithName("GetTenant").WithSummary("One tenant's configuration summary and state.");
        return e;
    }

    /// <summary>The tenant when it exists and the caller's key may see it; null answers 404 in both other cases.</summary>
    public static TenantModel? Visible(HttpContext context, TenantDirectoryService directory, string tenant) =>
        AdminPrincipal.Of(context) is { } principal && principal.CanSee(tenant) ? directory.Current.Find(tenant) : null;

    static TenantView View(TenantModel t, ReputationTracker reputation) => new(
        t.Id, [.. t.Domains.Order(StringComparer.Ordinal)], t.BounceDomain, [.. t.Networks.Select(n => n.ToString())], reputation.IsPaused(t.Id), t.Limits,
        t.Egress.Smarthost is { } s ? $"{s.Host}:{s.Port}" : null, t.Hsm.TokenLabel, t.Unsigned);
}
