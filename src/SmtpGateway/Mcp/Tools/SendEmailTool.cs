using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using ModelContextProtocol.Protocol;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Submission;

namespace SmtpGateway.Mcp.Tools;

/// <summary>
/// send_email: the message is built with MimeKit from the arguments and enters <see cref="SubmissionPipeline.SubmitAsync"/>
/// like an SMTP transaction: sender policy (the tenant's domains and the token's sender scope, cross-tenant attempts
/// audited), rate limits, suppression, pause, header hygiene, DKIM in the HSM, and the durable commit (file and directory
/// fsync) before the queue id is returned. The pipeline's refusal is the tool error, with the SMTP reply an SMTP client
/// would have had.
/// </summary>
internal sealed class SendEmailTool(SubmissionPipeline pipeline, GatewayConfig gateway, TimeProvider time, IAuditLog audit, ILogger logger)
    : GatewayTool(Definition, audit, logger)
{
    public const string Name = "send_email";

    static readonly Tool Definition = new()
    {
        Name = Name,
        Title = "Send an email",
        Description = "Queue an email for delivery from one of your own domains. Returns the queue id once the message is "
            + "signed and stored durably; delivery happens after. Addresses are JSON arrays; bcc never appears in the headers.",
        InputSchema = SendEmailSchema.Input,
        Annotations = new ToolAnnotations { ReadOnlyHint = false, DestructiveHint = false, IdempotentHint = false, OpenWorldHint = true },
    };

    readonly EmailLimits _limits = new(gateway.Mcp.MaxAttachmentSize, gateway.Mcp.MaxAttachments, gateway.Limits.MaxRecipients, gateway.Mcp.EffectiveAllowedHeaders);

    protected override async ValueTask<(ToolResult, CallToolResult)> CallAsync(McpCaller caller, IDictionary<string, JsonElement>? arguments, CancellationToken cancellationToken)
    {
        if (EmailRequestParser.Parse(ArgumentsOf(arguments), _limits, out var errors) is not { } request)
        {
            return (ToolResult.Invalid, Error($"send_email: the arguments are not valid, nothing was sent:\n- {string.Join("\n- ", errors)}"));
        }

        var message = MessageComposer.Compose(request, time.GetUtcNow());
        var result = await pipeline.SubmitAsync(caller.Context, message.MailFrom, message.Recipients, new ReadOnlySequence<byte>(message.Message), message.SmtpUtf8)
            .ConfigureAwait(false);
        if (result.QueueId is not { } id)
        {
            // The reply text is the catalogue's own (never client input): what an SMTP client would read, code included.
            var kind = result.Reply.IsTransient ? "temporarily refused (try again later)" : "refused";
            return (ToolResult.Refused, Error($"send_email: {kind}, nothing was sent: {result.Reply}"));
        }

        return (ToolResult.Ok, Success(new JsonObject
        {
            ["queue_id"] = id,
            ["message_id"] = message.MessageId,
            ["recipients"] = message.Recipients.Count,
            ["status"] = "queued",
        }));
    }
}
