namespace SmtpGateway.Audit;

/// <summary>
/// Who asked for a control-plane change, stamped on its audit event: the CLI acting on the data directory (listener
/// "cli"), or an admin API call (channel "api", the admin key id; "local" for the CLI over the gateway's unix socket).
/// The same change (token-mint, dkim-rotate...) is audited alike whichever door it came through.
/// </summary>
public sealed record AuditOrigin(string? Listener, string? Channel, string? KeyId, string? ClientIp)
{
    /// <summary>The CLI working on the data directory itself (no gateway answered on the socket).</summary>
    public static AuditOrigin Cli { get; } = new("cli", null, null, null);

    /// <summary>
    /// An event for <paramref name="action"/>. The admin key id goes into TokenId when the event has no token of its
    /// own, else into the subject, so an event never loses either.
    /// </summary>
    public AuditEvent Event(string action, string? tenant, string? subject, string? tokenId = null) => new()
    {
        Action = action,
        Result = "ok",
        Tenant = tenant,
        TokenId = tokenId ?? KeyId,
        Subject = tokenId is not null && KeyId is not null ? $"{subject}{(subject is null ? "" : "; ")}admin key {KeyId}" : subject,
        Listener = Listener,
        Channel = Channel,
        ClientIp = ClientIp,
    };
}
