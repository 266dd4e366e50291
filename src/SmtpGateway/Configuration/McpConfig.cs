using System.Collections.Frozen;

namespace SmtpGateway.Configuration;

/// <summary>
/// "Gateway:Mcp": the MCP tool server (issue #14) at /mcp on the admin endpoint, and the stdio bridge `smtpgw mcp` that
/// forwards to it. Served only while Gateway:Admin is enabled.
/// </summary>
public sealed class McpConfig
{
    public bool Enabled { get; set; } = true;

    /// <summary>
    /// Body cap for /mcp, replacing Gateway:Admin:MaxRequestBodySize there. Large enough that an over-sized attachment is
    /// refused by the tool with its own clear error (a 30 MiB file is 40 MiB of base64) instead of a bare 413; every
    /// body is read only after the bearer token verified, and <see cref="MaxConcurrentRequests"/> bounds how many at once.
    /// </summary>
    public long MaxRequestBodySize { get; set; } = 48L * 1024 * 1024;

    /// <summary>Decoded bytes of all attachments of one send_email call (SES allows 10 MB, Gmail 25 MB).</summary>
    public long MaxAttachmentSize { get; set; } = 10L * 1024 * 1024;

    public int MaxAttachments { get; set; } = 20;

    /// <summary>
    /// Authenticated /mcp requests served at once, gateway-wide. Each may hold its body (up to
    /// <see cref="MaxRequestBodySize"/>) and the SDK's parse of it, about twice the body: the default bounds that to
    /// well under 1 GiB however the tenants behave. Past it: 503 with Retry-After.
    /// </summary>
    public int MaxConcurrentRequests { get; set; } = 8;

    /// <summary>
    /// One tenant's share of <see cref="MaxConcurrentRequests"/>, so one tenant's slow uploads or long calls cannot take
    /// every slot. Past it: 429 with Retry-After. (The tenant's Limits:MaxSessions applies too.)
    /// </summary>
    public int MaxConcurrentRequestsPerTenant { get; set; } = 4;

    /// <summary>
    /// Slowest accepted upload of an /mcp body, after a 10 s grace. Kestrel's default is 240 bytes/s, at which a 48 MiB
    /// body would hold its slot for more than two days.
    /// </summary>
    public int MinRequestBodyDataRate { get; set; } = 16 * 1024;

    /// <summary>
    /// Header fields send_email may set through its `headers` argument (case-insensitive). Null: the default list. Fields
    /// the gateway builds itself (<see cref="IsForbiddenHeader"/>) are refused at start even when listed.
    /// </summary>
    public List<string>? AllowedHeaders { get; set; }

    public static readonly IReadOnlyList<string> DefaultAllowedHeaders =
    [
        "In-Reply-To", "References", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Id", "Auto-Submitted", "Precedence",
        "Keywords", "Comments", "Feedback-ID", "X-Entity-Ref-ID",
    ];

    /// <summary>The allowlist in force.</summary>
    public IReadOnlyList<string> EffectiveAllowedHeaders => AllowedHeaders ?? DefaultAllowedHeaders;

    /// <summary>
    /// Fields no allowlist can open: the tool sets them itself from checked arguments, they carry the MIME structure, or
    /// they are trace and authentication results only an MTA may add (RFC 5321 4.4, RFC 6376, RFC 8601, RFC 8617).
    /// </summary>
    static readonly FrozenSet<string> Forbidden = new[]
    {
        "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "Return-Path", "Received",
        "Received-SPF", "DKIM-Signature", "DomainKey-Signature", "Authentication-Results", "MIME-Version", "Delivered-To",
        "X-Original-To",
    }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    // Whole families: a new ARC-*, Resent-* or Content-* field is as dangerous as a listed one, and X-Tenant*,
    // X-SmtpGateway*, X-SmtpGw* are the gateway's own trust headers (header hygiene strips them from client mail).
    static readonly string[] ForbiddenPrefixes = ["ARC-", "Resent-", "Content-", "X-Tenant", "X-SmtpGateway", "X-SmtpGw"];

    public static bool IsForbiddenHeader(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return Forbidden.Contains(name) || ForbiddenPrefixes.Any(p => name.StartsWith(p, StringComparison.OrdinalIgnoreCase));
    }
}
