using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using SmtpGateway.Bounces;
using SmtpGateway.Identity;

namespace SmtpGateway.Admin;

/// <summary>The answer to a suppression add: the address as it is kept (normalised) and whether it was new.</summary>
public sealed record SuppressionResult(string Address, bool Added);

/// <summary>The body of a suppression add.</summary>
/// <param name="Reason">The operator's note, kept as the entry's detail (the entry's reason is "manual").</param>
public sealed record SuppressionAddRequest(string? Address, string? Reason);

/// <summary>
/// A tenant's suppression list (what `smtpgw suppression` does). The running gateway's own <see cref="SuppressionList"/>
/// is changed, so an add refuses the next RCPT to that address at once, and a remove lifts it at once.
/// </summary>
public static class SuppressionEndpoints
{
    public static IEndpointRouteBuilder MapSuppression(this IEndpointRouteBuilder e)
    {
        // The collection on its own (not the group's ""), so that its route template, audited per call, has no trailing slash.
        e.MapGet("/api/v1/tenants/{tenant}/suppression", (string tenant, HttpContext context, TenantDirectoryService directory, SuppressionList list, ILoggerFactory loggers) =>
            AdminEndpoints.Visible(context, directory, tenant) is null ? AdminResults.TenantNotFound()
            : Guarded(loggers, "list", tenant, () => Results.Ok(list.List(tenant))))
            .WithTags("suppression").WithName("ListSuppression").WithSummary("The tenant's suppressed recipients (hard bounces, complaints, manual), oldest first.");

        e.MapPost("/api/v1/tenants/{tenant}/suppression", async (string tenant, HttpContext context, TenantDirectoryService directory, SuppressionList list, ILoggerFactory loggers) =>
        {
            if (AdminEndpoints.Visible(context, directory, tenant) is null)
            {
                return AdminResults.TenantNotFound();
            }

            var (body, bodyError) = await ReadAsync(context.Request).ConfigureAwait(false);
            if (bodyError is not null)
            {
                return bodyError;
            }

            var errors = new Dictionary<string, string[]>();
            if (ManualSuppression.AddressError(body!.Address) is { } addressError)
            {
                errors["address"] = [addressError];
            }

            if (ManualSuppression.NoteError(body.Reason) is { } noteError)
            {
                errors["reason"] = [noteError];
            }

            if (errors.Count > 0)
            {
                return AdminResults.Invalid(errors);
            }

            var address = SuppressionList.Normalize(body.Address!)!;
            return Guarded(loggers, "add", tenant, () =>
            {
                var added = ManualSuppression.Add(list, tenant, address, body.Reason);
                if (added)
                {
                    ResourceLog.Suppression(loggers.CreateLogger("SmtpGateway.Admin"), "add", address, tenant, AdminPrincipal.Of(context)!.ToString());
                }

                var result = new SuppressionResult(address, added);
                return added ? Results.Created($"/api/v1/tenants/{tenant}/suppression/{Uri.EscapeDataString(address)}", result) : Results.Ok(result);
            });
        }).WithTags("suppression").WithName("AddSuppression").WithSummary("Suppresses a recipient for the tenant: {address, reason?}. 201 when added, 200 when it already was.")
            .Accepts<SuppressionAddRequest>("application/json");

        var suppression = e.MapGroup("/api/v1/tenants/{tenant}/suppression").WithTags("suppression");
        suppression.MapDelete("/{address}", (string tenant, string address, HttpContext context, TenantDirectoryService directory, SuppressionList list,
            ILoggerFactory loggers) =>
        {
            if (AdminEndpoints.Visible(context, directory, tenant) is null)
            {
                return AdminResults.TenantNotFound();
            }

            if (ManualSuppression.AddressError(address) is { } error)
            {
                return AdminResults.Invalid("address", error);
            }

            return Guarded(loggers, "remove", tenant, () =>
            {
                if (!list.Remove(tenant, address))
                {
                    return AdminResults.NotFound($"{SuppressionList.Normalize(address)} is not suppressed");
                }

                ResourceLog.Suppression(loggers.CreateLogger("SmtpGateway.Admin"), "remove", SuppressionList.Normalize(address)!, tenant, AdminPrincipal.Of(context)!.ToString());
                return Results.NoContent();
            });
        }).WithName("RemoveSuppression").WithSummary("Lets the tenant mail a suppressed recipient again (at once).");
        return e;
    }

    /// <summary>
    /// Runs a suppression-list action; a disk failure answers 503 with a fixed detail (its text names paths) and goes to
    /// the log.
    /// </summary>
    static IResult Guarded(ILoggerFactory loggers, string action, string tenant, Func<IResult> run)
    {
        try
        {
            return run();
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            ResourceLog.Failed(loggers.CreateLogger("SmtpGateway.Admin"), "suppression", action, tenant, ex.Message);
            return AdminResults.Unavailable(AdminResults.SuppressionUnavailable);
        }
    }

    /// <summary>The JSON body, or a 400 saying why there is none (not JSON, not an object, wrong types).</summary>
    static async Task<(SuppressionAddRequest? Body, IResult? Error)> ReadAsync(HttpRequest request)
    {
        try
        {
            var body = await JsonSerializer.DeserializeAsync<SuppressionAddRequest>(request.Body, JsonSerializerOptions.Web, request.HttpContext.RequestAborted)
                .ConfigureAwait(false);
            return body is null ? (null, AdminResults.Invalid("body", "a JSON object {address, reason?} is required.")) : (body, null);
        }
        catch (JsonException)
        {
            return (null, AdminResults.Invalid("body", "the body is not a JSON object {address, reason?} with string values."));
        }
    }
}
