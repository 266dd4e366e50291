using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Configuration;
using SmtpGateway.Identity;

namespace SmtpGateway.Admin;

public sealed record ReloadResponse(int Tenants);

/// <summary>POST /api/v1/reload (operator only): re-reads the configuration now instead of waiting for the file watcher.</summary>
public static class ReloadEndpoints
{
    public static IEndpointRouteBuilder MapReload(this IEndpointRouteBuilder e)
    {
        e.MapPost("/api/v1/reload", (HttpContext context, IConfiguration configuration, TenantDirectoryService directory) =>
        {
            if (AdminPrincipal.Of(context) is not { IsOperator: true })
            {
                return AdminResults.OperatorOnly();
            }

            if (configuration is not IConfigurationRoot root)
            {
                return AdminResults.Unavailable("The configuration cannot be reloaded in this process.");
            }

            // The directory swaps (or refuses) its snapshot inside Reload(), on this thread: the change token fires
            // synchronously, so the outcome is known when Reload() returns.
            IReadOnlyList<string>? rejected = null;
            TenantSnapshot? loaded = null;
            void OnRejected(IReadOnlyList<string> errors) => rejected = errors;
            void OnReloaded(TenantSnapshot snapshot) => loaded = snapshot;
            directory.ReloadRejected += OnRejected;
            directory.Reloaded += OnReloaded;
            try
            {
                root.Reload();
            }
            finally
            {
                directory.ReloadRejected -= OnRejected;
                directory.Reloaded -= OnReloaded;
            }

            // A refused reload keeps the running configuration: 409, with every error (each names its configuration path).
            return rejected is { } errors && loaded is null
                ? Results.ValidationProblem(new Dictionary<string, string[]> { ["configuration"] = [.. errors] }, statusCode: StatusCodes.Status409Conflict,
                    title: "The new configuration is rejected; the running one stays.")
                : Results.Ok(new ReloadResponse((loaded ?? directory.Current).Tenants.Count));
        }).WithTags("gateway").WithName("Reload").WithSummary("Reload the configuration now (operator only): the tenant count, or 409 with every error while the running configuration stays.");
        return e;
    }
}
