using System.Globalization;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Vault;

namespace SmtpGateway.Admin;

/// <summary>The answer to a vault delete.</summary>
public sealed record VaultDeleted(string Name, int Removed);

/// <summary>
/// A tenant's upstream credentials (what `smtpgw vault` does, through the running gateway's own <see cref="CredentialVault"/>
/// and <see cref="VaultOperations"/>). Secrets come only in a request body (<see cref="VaultSecretBody"/>), are never
/// echoed, logged or audited; changes are audited as vault-set, vault-rotate and vault-delete with channel "api" and the
/// admin key id.
/// </summary>
public static class VaultEndpoints
{
    public static IEndpointRouteBuilder MapVault(this IEndpointRouteBuilder e)
    {
        // The collection on its own (not the group's ""), so that its route template, audited per call, has no trailing slash.
        e.MapGet("/api/v1/tenants/{tenant}/vault", (string tenant, HttpContext context, TenantDirectoryService directory, CredentialVault credentials,
            ILoggerFactory loggers) =>
        {
            if (AdminEndpoints.Visible(context, directory, tenant) is null)
            {
                return AdminResults.TenantNotFound();
            }

            try
            {
                return Results.Ok(credentials.List(tenant).Select(VaultListItem.From).ToList());
            }
            // The vault reports a damaged or unreadable file as an UpstreamCredentialException (its delivery-side type).
            catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException or UpstreamCredentialException or HsmException)
            {
                ResourceLog.VaultFailed(loggers.CreateLogger("SmtpGateway.Admin"), "list", tenant, ex.Message);
                return AdminResults.Unavailable(AdminResults.VaultUnavailable);
            }
        }).WithTags("vault").WithName("ListVault").WithSummary("The tenant's credentials: names, versions, kind, user, created, retirement. Never a secret.");

        var vault = e.MapGroup("/api/v1/tenants/{tenant}/vault").WithTags("vault");
        // set and rotate differ in one flag; a lambda keeps its parameter names, which minimal APIs bind by.
        static Func<string, string, HttpContext, TenantDirectoryService, CredentialVault, IOptions<GatewayConfig>, ILoggerFactory, Task<IResult>> Store(bool rotate) =>
            (string tenant, string name, HttpContext context, TenantDirectoryService directory, CredentialVault credentials, IOptions<GatewayConfig> options,
                ILoggerFactory loggers) => StoreAsync(context, directory, credentials, options.Value, loggers, tenant, name, rotate);
        vault.MapPut("/{name}", Store(rotate: false))
            .WithName("SetVaultCredential")
            .WithSummary("Stores a new credential (version 1); 409 when the name exists. Body: {user, password} | {user, accessToken} | {user, refreshToken, clientSecret?, tokenEndpoint, clientId}.")
            .Accepts<VaultSecretBodySchema>("application/json");
        vault.MapPost("/{name}/rotate", Store(rotate: true))
            .WithName("RotateVaultCredential")
            .WithSummary("Stores a new version; the previous ones stay usable for grace (\"hh:mm:ss\", default Gateway:Vault:RotationGrace), then are destroyed.")
            .Accepts<VaultSecretBodySchema>("application/json");

        vault.MapDelete("/{name}", (string tenant, string name, string? version, HttpContext context, TenantDirectoryService directory, CredentialVault credentials,
            ILoggerFactory loggers) =>
        {
            if (AdminEndpoints.Visible(context, directory, tenant) is null)
            {
                return AdminResults.TenantNotFound();
            }

            var errors = new Dictionary<string, string[]>();
            if (NameError(name) is { } nameError)
            {
                errors["name"] = [nameError];
            }

            int? only = null;
            if (version is not null)
            {
                if (int.TryParse(version, NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v > 0)
                {
                    only = v;
                }
                else
                {
                    errors["version"] = ["the version is a positive whole number."];
                }
            }

            if (errors.Count > 0)
            {
                return AdminResults.Invalid(errors);
            }

            var principal = AdminPrincipal.Of(context)!;
            int removed;
            try
            {
                removed = credentials.Delete(tenant, name, only, "api", principal.KeyId);
            }
            catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException or HsmException or UpstreamCredentialException)
            {
                ResourceLog.VaultFailed(loggers.CreateLogger("SmtpGateway.Admin"), "delete", tenant, ex.Message);
                return AdminResults.Unavailable(AdminResults.VaultUnavailable);
            }

            if (removed == 0)
            {
                return AdminResults.NotFound(only is { } o ? $"{name} has no version {o}" : $"no credential '{name}'");
            }

            ResourceLog.Vault(loggers.CreateLogger("SmtpGateway.Admin"), "delete", only is { } d ? $"{name}#v{d}" : name, tenant, principal.ToString());
            return Results.Ok(new VaultDeleted(name, removed));
        }).WithName("DeleteVaultCredential").WithSummary("Destroys a credential, or one version of it (?version=); the gateway stops using it at once.");
        return e;
    }

    static string? NameError(string name)
    {
        try
        {
            CredentialVault.CheckName(name);
            return null;
        }
        catch (ArgumentException ex)
        {
            return ex.Message;
        }
    }

    static async Task<IResult> StoreAsync(HttpContext context, TenantDirectoryService directory, CredentialVault vault, GatewayConfig config,
        ILoggerFactory loggers, string tenant, string name, bool rotate)
    {
        if (AdminEndpoints.Visible(context, directory, tenant) is null)
        {
            return AdminResults.TenantNotFound();
        }

        var logger = loggers.CreateLogger("SmtpGateway.Admin");
        var action = rotate ? "rotate" : "set";
        // The body holds the secret: read into a pinned buffer that is zeroed whatever happens (never a string).
        var buffer = SecretBuffer.Allocate(VaultSecretBody.MaxBytes + 1);
        try
        {
            var length = 0;
            int read;
            while (length < buffer.Length && (read = await context.Request.Body.ReadAsync(buffer.AsMemory(length), context.RequestAborted).ConfigureAwait(false)) > 0)
            {
                length += read;
            }

            if (length > VaultSecretBody.MaxBytes)
            {
                return AdminResults.Invalid("body", $"the body is larger than {VaultSecretBody.MaxBytes} bytes.");
            }

            var errors = new Dictionary<string, List<string>>();
            if (NameError(name) is { } nameError)
            {
                errors["name"] = [nameError];
            }

            using var body = VaultSecretBody.Parse(buffer.AsSpan(0, length), rotate, errors);
            if (errors.Count > 0)
            {
                return AdminResults.Invalid(errors.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray()));
            }

            var principal = AdminPrincipal.Of(context)!;
            try
            {
                using var secret = body.ToSecret();
                var stored = VaultOperations.Store(vault, tenant, name, secret, rotate ? body.Grace ?? config.Vault.RotationGrace : null, "api", principal.KeyId);
                ResourceLog.Vault(logger, action, $"{stored.Name}#v{stored.Version}", tenant, principal.ToString());
                return rotate ? Results.Ok(stored) : Results.Created($"/api/v1/tenants/{tenant}/vault/{Uri.EscapeDataString(name)}", stored);
            }
            catch (InvalidOperationException ex)
            {
                // set on a name that exists, rotate on one that does not: the CLI's own words.
                return AdminResults.Conflict(ex.Message);
            }
            catch (ArgumentException ex)
            {
                return AdminResults.Invalid("body", ex.Message);
            }
            catch (Exception ex) when (ex is HsmException or UpstreamCredentialException or IOException or InvalidDataException or UnauthorizedAccessException)
            {
                ResourceLog.VaultFailed(logger, action, tenant, ex.Message);
                return AdminResults.Unavailable(AdminResults.VaultUnavailable);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(buffer);
        }
    }
}

/// <summary>The vault set/rotate body as the OpenAPI document shows it (the handler reads it with <see cref="VaultSecretBody"/>).</summary>
public sealed record VaultSecretBodySchema(string User, string? Password, string? AccessToken, string? RefreshToken, string? ClientSecret, string? TokenEndpoint,
    string? ClientId, string? Grace);
