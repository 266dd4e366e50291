using SmtpGateway.Audit;

namespace SmtpGateway.Submission.Stages;

/// <summary>Writes audit events with what the context knows (session, client, listener, token, channel).</summary>
internal sealed class Auditor(IAuditLog audit)
{
    public void Write(SubmissionContext context, string action, string result, string? reason, string? tenant, string? subject, bool crossTenant) =>
        audit.Write(new AuditEvent
        {
            Action = action,
            Result = result,
            Reason = reason,
            Tenant = tenant,
            Subject = subject,
            SessionId = context.SessionId,
            ClientIp = context.ClientAddress.ToString(),
            Listener = context.Listener,
            TokenId = context.Tenant?.TokenId,
            CrossTenant = crossTenant,
            Channel = ChannelName(context.Channel),
        });

    public static string ChannelName(SubmissionChannel channel) => channel switch
    {
        SubmissionChannel.Smtp => "smtp",
        SubmissionChannel.Mcp => "mcp",
        SubmissionChannel.Api => "api",
        _ => "other",
    };
}
