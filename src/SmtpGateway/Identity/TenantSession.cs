using SmtpGateway.Identity.Tokens;

namespace SmtpGateway.Identity;

public enum TenantSessionKind
{
    /// <summary>AUTH with a session token.</summary>
    Token,

    /// <summary>Legacy app recognised by its client address on the relay listener.</summary>
    Network,
}

/// <summary>
/// The tenant a session acts for, fixed at AUTH (or at connect, by address). Every later stage takes the tenant
/// from here, never from message content (ARCHITECTURE section 3).
/// </summary>
public sealed record TenantSession(string TenantId, TenantSessionKind Kind, TokenPayload? Token, IReadOnlyList<string> SenderScope)
{
    public string? TokenId => Token?.Id;
}
