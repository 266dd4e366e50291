using Microsoft.AspNetCore.Http;
using SmtpGateway.Audit;

namespace SmtpGateway.Admin;

/// <summary>The origin stamped on a change made through the API (token-mint, dkim-rotate...), besides the per-call "admin" event.</summary>
public static class AdminAudit
{
    public static AuditOrigin Origin(HttpContext context)
    {
        var principal = AdminPrincipal.Of(context)!;
        // Over the unix socket the caller is the local CLI: its events keep listener "cli", as when it works on the files.
        var local = principal.KeyId == AdminPrincipal.LocalKeyId;
        return new AuditOrigin(local ? "cli" : null, "api", principal.KeyId, context.Connection.RemoteIpAddress?.ToString());
    }
}
