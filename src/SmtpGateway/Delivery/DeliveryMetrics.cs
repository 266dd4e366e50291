using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Delivery;

/// <summary>Delivery instruments, created once on the gateway meter. Tenant is a label because users alert per tenant.</summary>
internal static class DeliveryMetrics
{
    static readonly Counter<long> Outcomes = Telemetry.Meter.CreateCounter<long>(
        Telemetry.DeliveryOutcomes, "{recipient}", "Per-recipient delivery outcomes; outcome=delivered|deferred|bounced|expired.");

    public static void Outcome(string tenant, string outcome) =>
        Outcomes.Add(1, new KeyValuePair<string, object?>("outcome", outcome), new KeyValuePair<string, object?>("tenant", tenant));
}
