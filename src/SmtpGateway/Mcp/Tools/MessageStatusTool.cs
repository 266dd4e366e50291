using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using ModelContextProtocol.Protocol;
using SmtpGateway.Admin;
using SmtpGateway.Audit;
using SmtpGateway.Delivery;
using SmtpGateway.Spool;

namespace SmtpGateway.Mcp.Tools;

/// <summary>
/// get_message_status: where one of the caller's messages stands (still queued, deferred, failed, or done) and its delivery
/// events. Only the caller's tenant is ever read: the spool entry must carry its tenant id, and the events come from its
/// own event file, so another tenant's queue id gets exactly the answer an unknown one gets.
/// </summary>
internal sealed class MessageStatusTool(FileSpool spool, DeliveryEvents events, IAuditLog audit, ILogger logger) : GatewayTool(Definition, audit, logger)
{
    public const string Name = "get_message_status";

    /// <summary>Events returned for one message: a message has one or two per recipient (deferrals, then the outcome).</summary>
    const int MaxEvents = 200;

    static readonly Tool Definition = new()
    {
        Name = Name,
        Title = "Message delivery status",
        Description = "The delivery state and events (delivered, deferred, bounced, expired, complaints) of a message you sent, by the queue id send_email returned.",
        InputSchema = Schema("""
            {
              "type": "object",
              "properties": {
                "queue_id": { "type": "string", "description": "The queue id send_email returned.", "maxLength": 64 }
              },
              "required": ["queue_id"],
              "additionalProperties": false
            }
            """),
        Annotations = new ToolAnnotations { ReadOnlyHint = true, DestructiveHint = false, IdempotentHint = true, OpenWorldHint = false },
    };

    protected override ValueTask<(ToolResult, CallToolResult)> CallAsync(McpCaller caller, IDictionary<string, JsonElement>? arguments, CancellationToken cancellationToken)
    {
        var args = ArgumentsOf(arguments);
        if (args.Keys.FirstOrDefault(k => k != "queue_id") is { } unknown)
        {
            return Answer(ToolResult.Invalid, Error($"get_message_status: unknown argument '{McpText.Printable(unknown)}'; the only argument is queue_id."));
        }

        if (!args.TryGetValue("queue_id", out var value) || value.ValueKind != JsonValueKind.String || value.GetString() is not { Length: > 0 } id)
        {
            return Answer(ToolResult.Invalid, Error("get_message_status: queue_id is required, a string (the id send_email returned)."));
        }

        var tenant = caller.TenantId;
        var queued = QueueView.Item(spool, id) is { } item && item.Tenant == tenant ? item : null;
        var found = FileSpool.IsValidId(id) && events.Log is { } log
            ? EventEndpoints.Latest(log.PathFor(tenant), tenant, MaxEvents, match: e => e.Id == id)
            : [];
        if (queued is null && found.Count == 0)
        {
            // The same words for an id of another tenant, a malformed id and one that never existed.
            return Answer(ToolResult.Refused, Error($"get_message_status: no message of yours has the queue id '{McpText.Printable(id)}'."));
        }

        var result = new JsonObject
        {
            ["queue_id"] = id,
            // Not in the queue any more but with events: every recipient reached its outcome.
            ["state"] = queued?.State ?? "done",
        };
        if (queued is not null)
        {
            result["received_at"] = queued.ReceivedAt;
            result["attempts"] = queued.Attempts;
            result["next_attempt_at"] = queued.NextAttemptAt;
            result["recipients"] = new JsonArray([.. queued.Recipients.Select(r => (JsonNode)new JsonObject
            {
                ["address"] = r.Address,
                ["status"] = r.Status,
                ["last_reply"] = r.LastReply,
            })]);
        }

        // Oldest first reads as a story: deferred, deferred, delivered.
        result["events"] = new JsonArray([.. Enumerable.Reverse(found).Select(e => (JsonNode)new JsonObject
        {
            ["time"] = e.Time,
            ["event"] = e.Event,
            ["recipient"] = e.Recipient,
            ["reply"] = e.Reply,
            ["host"] = e.Host,
            ["attempt"] = e.Attempt,
            ["next_attempt_at"] = e.NextAttemptAt,
            ["source"] = e.Source,
            ["feedback_type"] = e.FeedbackType,
        })]);
        return Answer(ToolResult.Ok, Success(result));
    }

    static ValueTask<(ToolResult, CallToolResult)> Answer(ToolResult result, CallToolResult answer) => ValueTask.FromResult((result, answer));
}
