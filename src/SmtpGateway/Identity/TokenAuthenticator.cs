using SmtpGateway.Audit;
using SmtpGateway.Identity.Tokens;

namespace SmtpGateway.Identity;

/// <summary>
/// AUTH PLAIN/LOGIN with user name = tenant id and password = session token (issue #3). Every outcome is audited
/// with its reason; the client only ever learns "535 5.7.8".
/// </summary>
public sealed class TokenAuthenticator(TokenService tokens, IAuditLog audit) : ISmtpAuthenticator
{
    public ValueTask<AuthResult> AuthenticateAsync(AuthRequest request, CancellationToken cancellationToken)
    {
        var result = Check(request, out var check);
        var crossTenant = check?.Reason == TokenService.TenantMismatch;
        audit.Write(new AuditEvent
        {
            Action = AuditActions.Auth,
            Result = result.Succeeded ? "ok" : "refused",
            Reason = result.FailureReason,
            Tenant = crossTenant ? check!.Payload!.Tenant : check?.Reason == "unknown tenant" || !TenantSnapshot.IsValidTenantId(request.UserName) ? null : request.UserName,
            Subject = crossTenant ? $"user name '{request.UserName}'" : request.Mechanism,
            SessionId = request.SessionId,
            ClientIp = request.ClientAddress.ToString(),
            Listener = request.Listener,
            TokenId = check?.Payload?.Id,
            CrossTenant = crossTenant,
        });
        return ValueTask.FromResult(result);
    }

    AuthResult Check(AuthRequest request, out TokenCheck? check)
    {
        check = null;

        // RFC 4616: an authorization identity, if given, must be the authenticated tenant: no acting for another.
        if (request.AuthorizationIdentity.Length > 0 && request.AuthorizationIdentity != request.UserName)
        {
            return AuthResult.Fail("authorization identity differs from user name");
        }

        check = tokens.Verify(request.UserName, request.Password);
        if (!check.Valid)
        {
            return AuthResult.Fail(check.Reason!);
        }

        var payload = check.Payload!;
        return new AuthResult(true, new TenantSession(payload.Tenant, TenantSessionKind.Token, payload, payload.Senders), null);
    }
}
