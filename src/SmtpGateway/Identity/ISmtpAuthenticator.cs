using System.Net;

namespace SmtpGateway.Identity;

/// <summary>What the Listener knows about the client when it asks for authentication.</summary>
public sealed record AuthRequest(string SessionId, IPAddress ClientAddress, string Listener, string Mechanism, string AuthorizationIdentity, string UserName, string Password);

/// <summary>Outcome of an AUTH attempt. The reason never reaches the client (every failure is the same 535).</summary>
public sealed record AuthResult(bool Succeeded, TenantSession? Session, string? FailureReason)
{
    public static AuthResult Fail(string reason) => new(false, null, reason);
}

/// <summary>Verifies SASL credentials and says which tenant the session acts for.</summary>
public interface ISmtpAuthenticator
{
    ValueTask<AuthResult> AuthenticateAsync(AuthRequest request, CancellationToken cancellationToken);
}
