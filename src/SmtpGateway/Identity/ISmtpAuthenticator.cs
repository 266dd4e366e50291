using System.Net;

namespace SmtpGateway.Identity;

/// <summary>What the Listener knows about the client when it asks for authentication.</summary>
/// <param name="Channel">The audit channel (smtp, mcp): the same credential check serves every door.</param>
public sealed record AuthRequest(string SessionId, IPAddress ClientAddress, string Listener, string Mechanism, string AuthorizationIdentity, string UserName, string Password, string Channel = "smtp")
{
    // The generated record ToString would print the password (a session token) into any log or exception that formats it.
    public override string ToString() => $"AuthRequest {{ SessionId = {SessionId}, ClientAddress = {ClientAddress}, Listener = {Listener}, Mechanism = {Mechanism}, UserName = {UserName}, Channel = {Channel} }}";
}

/// <summary>
/// Outcome of an AUTH attempt. The reason never reaches the client: every refusal is the same 535, and a
/// <paramref name="Temporary"/> failure (the credentials could not be checked at all, e.g. the tenant's HSM token is
/// unavailable) the same 454.
/// </summary>
public sealed record AuthResult(bool Succeeded, TenantSession? Session, string? FailureReason, bool Temporary = false)
{
    public static AuthResult Fail(string reason) => new(false, null, reason);

    public static AuthResult Unavailable(string reason) => new(false, null, reason, Temporary: true);
}

/// <summary>Verifies SASL credentials and says which tenant the session acts for.</summary>
public interface ISmtpAuthenticator
{
    ValueTask<AuthResult> AuthenticateAsync(AuthRequest request, CancellationToken cancellationToken);
}
