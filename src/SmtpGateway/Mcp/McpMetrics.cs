using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Mcp;

/// <summary>Tool calls by tenant, tool and result, and /mcp requests refused before any tool ran. Closed label sets only.</summary>
internal static class McpMetrics
{
    static readonly Counter<long> Calls = Telemetry.Meter.CreateCounter<long>(
        Telemetry.McpToolCalls, "{call}", "MCP tool calls by tenant, tool and result (ok, refused: the pipeline said no; invalid: bad arguments; error: the gateway failed)");

    static readonly Counter<long> Refused = Telemetry.Meter.CreateCounter<long>(
        Telemetry.McpRequestsRefused, "{request}", "/mcp requests answered before any tool ran, by reason (unauthorized, throttled, sessions, tenant_busy, busy, unavailable, too_large, too_complex)");

    public static void Call(string tenant, string tool, string result) =>
        Calls.Add(1, new KeyValuePair<string, object?>("tenant", tenant), new KeyValuePair<string, object?>("tool", tool), new KeyValuePair<string, object?>("result", result));

    public static void RequestRefused(string reason) => Refused.Add(1, new KeyValuePair<string, object?>("reason", reason));
}
