using System.Security.Claims;
using SmtpGateway.Submission;

namespace SmtpGateway.Mcp;

/// <summary>
/// Who an /mcp request acts for: the submission conversation the Identity stage opened from its bearer session token.
/// The tenant is the token's, verified; no tool argument can name another one.
/// </summary>
public sealed class McpCaller(SubmissionContext context)
{
    public SubmissionContext Context { get; } = context;

    public string TenantId => Context.Tenant?.TenantId ?? throw new InvalidOperationException("An MCP caller always has a verified tenant.");

    public string? TokenId => Context.Tenant?.TokenId;
}

/// <summary>
/// The request's user, as the SDK hands it to every tool (RequestContext.User): carrying the caller itself means a tool
/// never looks the tenant up from anything the client sent.
/// </summary>
internal sealed class McpCallerPrincipal(McpCaller caller)
    : ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.NameIdentifier, caller.TenantId)], McpCallerPrincipal.AuthenticationType))
{
    public const string AuthenticationType = "smtpgw-session-token";

    public McpCaller Caller { get; } = caller;
}
