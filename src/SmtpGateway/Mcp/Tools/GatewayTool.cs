using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using ModelContextProtocol.Protocol;
using ModelContextProtocol.Server;
using SmtpGateway.Audit;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Mcp.Tools;

/// <summary>How a tool call ended: the label on metrics and the audit result (a closed set).</summary>
internal enum ToolResult
{
    Ok,
    Refused,
    Invalid,
    Error,
}

/// <summary>
/// One of the gateway's tools, with its schema written out rather than reflected: the arguments are read by hand so that
/// every mistake is named in a tool error (a missing "to", a header outside the allowlist), never a binding exception the
/// SDK would reduce to "An error occurred". The caller comes from the request's verified user, never from an argument;
/// each call is counted and audited (channel mcp); a failure of the gateway itself is a fixed text, its cause only logged.
/// </summary>
internal abstract partial class GatewayTool(Tool tool, IAuditLog audit, ILogger logger) : McpServerTool
{
    public override Tool ProtocolTool { get; } = tool;

    public override IReadOnlyList<object> Metadata { get; } = [];

    public override async ValueTask<CallToolResult> InvokeAsync(RequestContext<CallToolRequestParams> request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.User is not McpCallerPrincipal { Caller: var caller })
        {
            // Only McpAuthentication makes this principal; anything else reached a tool without a verified token. Fail closed.
            return Error("This tool needs a tenant session token.");
        }

        (ToolResult Result, CallToolResult Answer) outcome;
        try
        {
            outcome = await CallAsync(caller, request.Params?.Arguments, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // Exception text can name paths and PIN sources: the agent gets a fixed sentence, the operator the cause.
            ToolFailed(logger, ProtocolTool.Name, caller.TenantId, caller.Context.SessionId, ex);
            outcome = (ToolResult.Error, Error("The gateway could not complete this call; try again later. The operator's log has the cause."));
        }

        var result = outcome.Result switch
        {
            ToolResult.Ok => "ok",
            ToolResult.Refused => "refused",
            ToolResult.Invalid => "invalid",
            _ => "error",
        };
        McpMetrics.Call(caller.TenantId, ProtocolTool.Name, result);
        audit.Write(new AuditEvent
        {
            Action = AuditActions.McpTool,
            Result = result,
            Tenant = caller.TenantId,
            Subject = ProtocolTool.Name,
            Reason = outcome.Result == ToolResult.Ok ? null : ReasonOf(outcome.Answer),
            SessionId = caller.Context.SessionId,
            ClientIp = caller.Context.ClientAddress.ToString(),
            Listener = caller.Context.Listener,
            TokenId = caller.TokenId,
            Channel = "mcp",
        });
        return outcome.Answer;
    }

    protected abstract ValueTask<(ToolResult, CallToolResult)> CallAsync(McpCaller caller, IDictionary<string, JsonElement>? arguments, CancellationToken cancellationToken);

    protected static CallToolResult Error(string text) => new() { IsError = true, Content = [new TextContentBlock { Text = text }] };

    /// <summary>A success: the object as structured content and, for clients that read text only, as JSON text.</summary>
    protected static CallToolResult Success(JsonObject value)
    {
        DropNulls(value);
        var element = JsonSerializer.SerializeToElement(value, McpJson.Options);
        return new() { Content = [new TextContentBlock { Text = element.GetRawText() }], StructuredContent = element };
    }

    /// <summary>Fields with nothing to say are left out (an event without a host, a message never attempted): shorter for a model to read.</summary>
    static void DropNulls(JsonNode? node)
    {
        if (node is JsonObject o)
        {
            foreach (var name in o.Where(p => p.Value is null).Select(p => p.Key).ToList())
            {
                o.Remove(name);
            }

            foreach (var (_, child) in o)
            {
                DropNulls(child);
            }
        }
        else if (node is JsonArray a)
        {
            foreach (var child in a)
            {
                DropNulls(child);
            }
        }
    }

    /// <summary>The first line of an error's text, bounded: the audit log keeps why a call failed, not an essay.</summary>
    static string? ReasonOf(CallToolResult answer) =>
        answer.Content.OfType<TextContentBlock>().FirstOrDefault()?.Text is { } text ? (text.Length > 200 ? text[..200] : text) : null;

    /// <summary>Arguments as given, or an empty set (a call without "arguments" is a call without any).</summary>
    protected static IReadOnlyDictionary<string, JsonElement> ArgumentsOf(IDictionary<string, JsonElement>? arguments) =>
        arguments is null ? new Dictionary<string, JsonElement>() : arguments.AsReadOnly();

    protected static JsonElement Schema(string json)
    {
        using var document = JsonDocument.Parse(json);
        return document.RootElement.Clone();
    }

    [LoggerMessage(EventId = EventIds.Mcp + 1, Level = LogLevel.Error, Message = "MCP tool {Tool} failed for tenant {TenantId} (session {SessionId})")]
    static partial void ToolFailed(ILogger logger, string tool, string tenantId, string sessionId, Exception exception);
}

/// <summary>JSON for tool results: snake_case field names, as the tools' arguments are.</summary>
internal static class McpJson
{
    // An agent reads these, never a browser: "'" and "+" stay themselves instead of \u0027 and \u002B.
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web) { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}
