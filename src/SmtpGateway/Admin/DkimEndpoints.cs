using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Signing;

namespace SmtpGateway.Admin;

/// <summary>POST dkim/keygen: a key pair in the tenant's token; selector defaults to "ed"/"rsa" and the time.</summary>
public sealed record DkimKeygenRequest(string? Domain, string? Selector, string? Algorithm);

/// <summary>POST dkim/rotate: with neither flag step 1 (publish pending selectors), then activate, then retire (as `dkim rotate`).</summary>
public sealed record DkimRotateRequest(string? Domain, bool Activate = false, bool Retire = false);

public sealed record DkimRotateResponse(string Tenant, string Domain, string Step, IReadOnlyList<DkimSelectorView> Selectors, string Message);

/// <summary>A tenant's DKIM selectors through the admin API (issue #13): the same <see cref="DkimAdministration"/> as `smtpgw dkim`.</summary>
public static class DkimEndpoints
{
    public static IEndpointRouteBuilder MapDkim(this IEndpointRouteBuilder e)
    {
        var dkim = e.MapGroup("/api/v1/tenants/{tenant}/dkim").WithTags("dkim");
        dkim.MapGet("/", (string tenant, HttpContext context, TenantDirectoryService directory, DkimAdministration admin) =>
            AdminEndpoints.Visible(context, directory, tenant) is null ? AdminResults.TenantNotFound()
            : Guard(context, () => Results.Ok(admin.Selectors(tenant).Select(DkimSelectorView.Of).ToList())))
            .WithName("ListDkimSelectors").WithSummary("The tenant's DKIM selectors: state (pending, active, retiring, retired) and the TXT record to publish.");

        dkim.MapPost("/keygen", async (string tenant, HttpContext context, TenantDirectoryService directory, DkimAdministration admin) =>
        {
            if (AdminEndpoints.Visible(context, directory, tenant) is null)
            {
                return AdminResults.TenantNotFound();
            }

            var (request, bad) = await AdminRequestBody.ReadAsync<DkimKeygenRequest>(context);
            if (bad is not null)
            {
                return bad;
            }

            var errors = new Dictionary<string, string[]>(StringComparer.Ordinal);
            var domain = Check(errors, "domain", list => admin.CheckDomain(tenant, request?.Domain, list));
            var algorithm = Check(errors, "algorithm", list => DkimAdministration.CheckAlgorithm(request?.Algorithm, list));
            var selector = request?.Selector is null ? null : Check(errors, "selector", list => DkimAdministration.CheckSelector(request.Selector, list));
            if (errors.Count > 0)
            {
                return AdminResults.Invalid(errors);
            }

            return Guard(context, () =>
            {
                var created = admin.Keygen(tenant, domain!, selector ?? admin.DefaultSelector(algorithm!.Value), algorithm!.Value, AdminAudit.Origin(context));
                return Results.Json(DkimSelectorView.Of(created), statusCode: StatusCodes.Status201Created);
            });
        }).Accepts<DkimKeygenRequest>("application/json").Produces<DkimSelectorView>(StatusCodes.Status201Created)
            .WithName("GenerateDkimKey").WithSummary("Generate a DKIM key pair in the tenant's HSM token (201): active when it is the domain's first of its algorithm, else pending.");

        dkim.MapPost("/rotate", async (string tenant, HttpContext context, TenantDirectoryService directory, DkimAdministration admin) =>
        {
            if (AdminEndpoints.Visible(context, directory, tenant) is null)
            {
                return AdminResults.TenantNotFound();
            }

            var (request, bad) = await AdminRequestBody.ReadAsync<DkimRotateRequest>(context);
            if (bad is not null)
            {
                return bad;
            }

            var errors = new Dictionary<string, string[]>(StringComparer.Ordinal);
            var domain = Check(errors, "domain", list => admin.CheckDomain(tenant, request?.Domain, list));
            if (request is { Activate: true, Retire: true })
            {
                errors["step"] = ["give at most one of activate and retire."];
            }

            if (errors.Count > 0)
            {
                return AdminResults.Invalid(errors);
            }

            var step = request!.Activate ? DkimRotateStep.Activate : request.Retire ? DkimRotateStep.Retire : DkimRotateStep.Publish;
            return Guard(context, () =>
            {
                var result = admin.Rotate(tenant, domain!, step, AdminAudit.Origin(context));
                return Results.Ok(new DkimRotateResponse(tenant, result.Domain, step.ToString().ToLowerInvariant(),
                    result.Changed.Select(DkimSelectorView.Of).ToList(), result.Message));
            });
        }).Accepts<DkimRotateRequest>("application/json").Produces<DkimRotateResponse>()
            .WithName("RotateDkimKeys").WithSummary("One DKIM rotation step for a domain: publish pending selectors, then activate, then retire.");
        return e;
    }

    static T? Check<T>(Dictionary<string, string[]> errors, string field, Func<List<string>, T?> check)
    {
        var list = new List<string>();
        var value = check(list);
        if (list.Count > 0)
        {
            errors[field] = [.. list];
        }

        return value;
    }

    /// <summary>A step the selectors do not allow now (a selector that exists, nothing pending) is 409; the HSM or the disk failing is 503.</summary>
    static IResult Guard(HttpContext context, Func<IResult> action)
    {
        try
        {
            return action();
        }
        catch (InvalidOperationException ex)
        {
            return AdminResults.Conflict(ex.Message);
        }
        catch (Exception ex) when (ex is HsmException or SigningException or IOException or UnauthorizedAccessException)
        {
            return AdminResults.Unavailable(context, ex);
        }
    }
}
