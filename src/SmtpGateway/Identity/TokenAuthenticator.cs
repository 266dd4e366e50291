using SmtpGateway.Audit;
using SmtpGateway.Hsm;
using SmtpGateway.Identity.Tokens;

namespace SmtpGateway.Identity;

/// <summary>
/// AUTH PLAIN/LOGIN with user name = tenant id and password = session token (issue #3). Every outcome is audited
/// with its reason; the client only ever learns "535 5.7.8", or "454 4.7.0" when the tenant's HSM token cannot check
/// the token's MAC now: an outage must not tell a client with good credentials that they are bad.
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
            Result = result.Succeeded ? "ok" : result.Temporary ? "error" : "refused",
            Reason = result.FailureReason,
            Tenant = crossTenant ? check!.Payload!.Tenant : check?.Reason == "unknown tenant" || !TenantSnapshot.IsValidTenantId(request.UserName) ? null : request.UserName,
            Subject = crossTenant ? $"user name '{request.UserName}'" : request.Mechanism,
            SessionId = request.SessionId,
            ClientIp = request.ClientAddress.ToString(),
            Listener = request.Listener,
            TokenId = check?.Payload?.Id,
            CrossTenant = crossTenant,
            Channel = request.Channel,
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

        try
        {
            check = tokens.Verify(request.UserName, request.Password);
        }
        catch (HsmException ex)
        {
            // The message names tenant, token and label (never a PIN or key); the kind says what an operator should look at.
            return AuthResult.Unavailable($"HSM unavailable ({ex.Kind}): {ex.Message}");
        }

        if (check.Temporary)
        {
            // Revocations cannot be read now: the credentials may well be good, so "try again later" (454), no strike.
            return AuthResult.Unavailable(check.Reason!);
        }

        if (!check.Valid)
        {
            return AuthResult.Fail(check.Reason!);
        }

        var payload = check.Payload!;
        return new AuthResult(true, new TenantSession(payload.Tenant, TenantSessionKind.Token, payload, payload.Senders), null);
    }
}
