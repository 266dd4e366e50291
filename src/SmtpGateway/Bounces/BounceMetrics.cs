using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Bounces;

/// <summary>Per-tenant report and suppression counters: what an operator alerts on besides the bounce-rate pause.</summary>
public static class BounceMetrics
{
    static readonly Counter<long> Reports = Telemetry.Meter.CreateCounter<long>(
        Telemetry.ReportsReceived, "{report}", "Reports received at return paths; kind=bounced|soft-bounced|complained|delivery-report|unrecognized-report.");

    static readonly Counter<long> Refusals = Telemetry.Meter.CreateCounter<long>(
        Telemetry.SuppressionRefusals, "{recipient}", "RCPTs refused because the recipient is on the tenant's suppression list.");

    static readonly Counter<long> Added = Telemetry.Meter.CreateCounter<long>(
        Telemetry.SuppressionAdded, "{recipient}", "Recipients added to a tenant's suppression list; reason=hard-bounce|complaint.");

    public static void Report(string tenant, string kind) =>
        Reports.Add(1, new KeyValuePair<string, object?>("tenant", tenant), new KeyValuePair<string, object?>("kind", kind));

    public static void Refused(string tenant) => Refusals.Add(1, new KeyValuePair<string, object?>("tenant", tenant));

    public static void Suppressed(string tenant, string reason) =>
        Added.Add(1, new KeyValuePair<string, object?>("tenant", tenant), new KeyValuePair<string, object?>("reason", reason));
}
