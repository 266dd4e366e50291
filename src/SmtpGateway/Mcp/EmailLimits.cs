namespace SmtpGateway.Mcp;

/// <summary>
/// What one send_email call may ask for; the values come from configuration (Gateway:Mcp, Gateway:Limits:MaxRecipients).
/// Header fields no allowlist can open are <see cref="Configuration.McpConfig.IsForbiddenHeader"/>.
/// </summary>
public sealed record EmailLimits(long MaxAttachmentSize, int MaxAttachments, int MaxRecipients, IReadOnlyCollection<string> AllowedHeaders);
