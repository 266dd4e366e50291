using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;

namespace SmtpGateway.Admin;

/// <summary>POST tokens: ttl like the CLI's --ttl ("15m", "2h", "1d" or "hh:mm:ss"; default Gateway:Identity:DefaultTokenTtl).</summary>
public sealed record TokenMintRequest(string? Ttl, IReadOnlyList<string>? Senders, string? Description);

/// <summary>The minted token, shown this once (only its id is stored, and only its id is ever shown again).</summary>
public sealed record TokenMintResponse(string Token, string Id, string Tenant, string? Description, IReadOnlyList<string> Senders, DateTimeOffset Issued, DateTimeOffset Expires)
{
    public override string ToString() => $"TokenMintResponse {{ Id = {Id}, Tenant = {Tenant} }}";
}

public sealed record TokenRevokeResponse(string Id, string Tenant, string State);

/// <summary>POST tokens/rotate-key: how long tokens under the older keys keep working ("10m", "0"; default Gateway:Identity:KeyRotationGrace).</summary>
public sealed record TokenRotateKeyRequest(string? Grace);

public sealed record TokenRotateKeyResponse(string Tenant, string KeyId, DateTimeOffset OldKeysRetireAt);

/// <summary>A tenant's session tokens through the admin API (issue #13): the same <see cref="TokenAdministration"/> as `smtpgw token`.</summary>
public static class TokenEndpoints
{
    public static IEndpointRouteBuilder MapTokens(this IEndpointRouteBuilder e)
    {
        var tokens = e.MapGroup("/api/v1/tenants/{tenant}/tokens").WithTags("tokens");
        tokens.MapGet("/", (string tenant, HttpContext context, TenantDirectoryService directory, TokenAdministration admin) =>
            AdminEndpoints.Visible(context, directory, tenant) is null ? AdminResults.TenantNotFound() : Results.Ok(admin.Tokens.List(tenant)))
            .WithName("ListTokens").WithSummary("The tenant's session tokens (never a token itself): id, description, senders, issued, expiry, state.");

        tokens.MapPost("/", async (string tenant, HttpContext context, TenantDirectoryService directory, TokenAdministration admin) =>
        {
            if (AdminEndpoints.Visible(context, directory, tenant) is null)
            {
                return AdminResults.TenantNotFound();
            }

            var (request, bad) = await AdminRequestBody.ReadAsync<TokenMintRequest>(context);
            if (bad is not null)
            {
                return bad;
            }

            var check = admin.CheckMint(tenant, request?.Ttl, request?.Senders, request?.Description);
            if (!check.Valid)
            {
                return AdminResults.Invalid(check.Errors.ToDictionary());
            }

            return Guard(context, () =>
            {
                var minted = admin.Mint(tenant, check, AdminAudit.Origin(context));
                var r = minted.Record;
                return Results.Json(new TokenMintResponse(minted.Token, r.Id, r.Tenant, r.Description, r.Senders, r.Issued, r.Expires), statusCode: StatusCodes.Status201Created);
            });
        }).Accepts<TokenMintRequest>("application/json").Produces<TokenMintResponse>(StatusCodes.Status201Created)
            .WithName("MintToken").WithSummary("Mint a session token for the tenant (201); the token is in this response only.");

        tokens.MapDelete("/{id}", (string tenant, string id, HttpContext context, TenantDirectoryService directory, TokenAdministration admin) =>
        {
            if (AdminEndpoints.Visible(context, directory, tenant) is null)
            {
                return AdminResults.TenantNotFound();
            }

            // Another tenant's token id answers exactly as an unknown one: a tenant key learns nothing of others' ids.
            if (id.Length > 64 || admin.Find(tenant, id) is null)
            {
                return AdminResults.NotFound("No such token.");
            }

            return Guard(context, () =>
            {
                var record = admin.Revoke(id, AdminAudit.Origin(context));
                return Results.Ok(new TokenRevokeResponse(record.Id, record.Tenant, "revoked"));
            });
        }).WithName("RevokeToken").WithSummary("Revoke one of the tenant's tokens; the gateway refuses it at once (AUTH and the next MAIL FROM).");

        tokens.MapPost("/rotate-key", async (string tenant, HttpContext context, TenantDirectoryService directory, TokenAdministration admin) =>
        {
            if (AdminEndpoints.Visible(context, directory, tenant) is null)
            {
                return AdminResults.TenantNotFound();
            }

            var (request, bad) = await AdminRequestBody.ReadAsync<TokenRotateKeyRequest>(context);
            if (bad is not null)
            {
                return bad;
            }

            TimeSpan? grace = null;
            if (request?.Grace is { } text)
            {
                try
                {
                    grace = TokenAdministration.ParseDuration(text);
                }
                catch (FormatException ex)
                {
                    return AdminResults.Invalid("grace", ex.Message);
                }
            }

            return Guard(context, () =>
            {
                var (key, retireAt) = admin.RotateKey(tenant, grace, AdminAudit.Origin(context));
                return Results.Ok(new TokenRotateKeyResponse(tenant, key.Id, retireAt));
            });
        }).Accepts<TokenRotateKeyRequest>("application/json").Produces<TokenRotateKeyResponse>()
            .WithName("RotateTokenKey").WithSummary("New tokens of the tenant are signed with a new key; tokens under older keys work until the grace period ends.");
        return e;
    }

    /// <summary>A refusal by the token service is the client's (400); the HSM or the registry failing is ours (503), never reported as done.</summary>
    static IResult Guard(HttpContext context, Func<IResult> action)
    {
        try
        {
            return action();
        }
        catch (TokenException ex)
        {
            return AdminResults.Invalid("request", ex.Message);
        }
        catch (Exception ex) when (ex is HsmException or IOException or UnauthorizedAccessException or InvalidDataException)
        {
            return AdminResults.Unavailable(context, ex);
        }
    }
}
