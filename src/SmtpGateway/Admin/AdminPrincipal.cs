using Microsoft.AspNetCore.Http;

namespace SmtpGateway.Admin;

/// <summary>
/// Who an admin request acts for: an operator key (every tenant), a tenant-scoped key (one tenant), or the local CLI
/// over the unix socket (an operator). Set by <see cref="AdminAuthentication"/> on every /api/ request.
/// </summary>
public sealed record AdminPrincipal(string KeyId, string? Tenant)
{
    /// <summary>The key id the local CLI's requests are audited under (no key: the socket's file mode is the credential).</summary>
    public const string LocalKeyId = "local";

    public bool IsOperator => Tenant is null;

    /// <summary>
    /// False for another tenant's resources: the caller answers 404 exactly as for an absent tenant, so a tenant key
    /// cannot learn which other tenants exist.
    /// </summary>
    public bool CanSee(string tenant) => Tenant is null || string.Equals(Tenant, tenant, StringComparison.Ordinal);

    public static AdminPrincipal? Of(HttpContext context) => context.Features.Get<AdminPrincipal>();

    public override string ToString() => Tenant is null ? $"operator key {KeyId}" : $"tenant key {KeyId} ({Tenant})";
}
