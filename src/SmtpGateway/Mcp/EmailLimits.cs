using System.Collections.Frozen;

namespace SmtpGateway.Mcp;

/// <summary>What one send_email call may ask for; the values come from configuration (Gateway:Mcp).</summary>
public sealed record EmailLimits(long MaxAttachmentSize, int MaxAttachments, int MaxRecipients, IReadOnlyCollection<string> AllowedHeaders)
{
    /// <summary>
    /// Header names never settable through <c>headers</c>, whatever the allowlist says: the tool sets them itself from
    /// checked arguments, they carry the MIME structure, or they are trace and authentication results that only an MTA
    /// may add. A config validator refuses an allowlist that names one of them.
    /// </summary>
    public static readonly IReadOnlySet<string> Forbidden = new[]
    {
        "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "Return-Path", "Received",
        "Received-SPF", "DKIM-Signature", "DomainKey-Signature", "ARC-Seal", "ARC-Message-Signature",
        "ARC-Authentication-Results", "Authentication-Results", "MIME-Version", "Content-Type",
        "Content-Transfer-Encoding", "Content-Disposition", "Content-ID", "Content-Description", "Resent-From",
        "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Bcc", "Resent-Date", "Resent-Message-ID", "Delivered-To",
        "X-Original-To",
    }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    // Whole families: a new ARC-*, Resent-* or Content-* field is as dangerous as the listed ones, and X-Tenant*,
    // X-SmtpGateway*, X-SmtpGw* are the gateway's own trust headers (HeaderHygiene strips them from client mail).
    static readonly string[] ForbiddenPrefixes = ["ARC-", "Resent-", "Content-", "X-Tenant", "X-SmtpGateway", "X-SmtpGw"];

    public static bool IsForbidden(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return Forbidden.Contains(name) || ForbiddenPrefixes.Any(p => name.StartsWith(p, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>Threading, list and feedback headers an agent legitimately sets; none of them changes who sees the mail.</summary>
    public static readonly IReadOnlyList<string> DefaultAllowedHeaders =
    [
        "In-Reply-To", "References", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Id", "Auto-Submitted", "Precedence",
        "Keywords", "Comments", "Feedback-ID", "X-Entity-Ref-ID",
    ];
}
