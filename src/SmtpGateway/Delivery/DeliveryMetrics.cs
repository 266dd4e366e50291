using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Delivery;

/// <summary>Delivery instruments, created once on the gateway meter. Tenant is a label because users alert per tenant.</summary>
internal static class DeliveryMetrics
{
    static readonly Counter<long> Outcomes = Telemetry.Meter.CreateCounter<long>(
        Telemetry.DeliveryOutcomes, "{recipient}", "Per-recipient delivery outcomes; outcome=delivered|deferred|bounced|expired.");

    static readonly Counter<long> Connections = Telemetry.Meter.CreateCounter<long>(
        Telemetry.DeliveryConnections, "{connection}", "Outbound SMTP sessions opened; tls=none|tls (plaintext sessions under an opportunistic policy are worth watching).");

    static readonly Counter<long> Dsns = Telemetry.Meter.CreateCounter<long>(
        Telemetry.DeliveryDsns, "{message}", "Delivery status notifications queued to senders (RFC 3464).");

    static readonly Counter<long> UpstreamAuthFailures = Telemetry.Meter.CreateCounter<long>(
        Telemetry.DeliveryUpstreamAuthFailures, "{refusal}", Telemetry.DeliveryUpstreamAuthFailuresDescription);

    static readonly Histogram<double> QueueLatency = Telemetry.Meter.CreateHistogram(
        Telemetry.DeliveryQueueLatency, "s", "Time from a message's arrival to the attempt that delivered it, per delivered recipient and tenant (retries included).",
        advice: Telemetry.QueueLatency);

    /// <summary>The credential name and version stay out of the labels: the tenant is what an alert is about.</summary>
    public static void UpstreamAuthFailure(string tenant) => UpstreamAuthFailures.Add(1, new KeyValuePair<string, object?>("tenant", tenant));

    public static void ConnectionOpened(string tenant, bool tls) =>
        Connections.Add(1, new KeyValuePair<string, object?>("tenant", tenant), new KeyValuePair<string, object?>("tls", tls ? "tls" : "none"));

    public static void DsnQueued(string tenant) => Dsns.Add(1, new KeyValuePair<string, object?>("tenant", tenant));

    public static void Delivered(string tenant, TimeSpan sinceArrival)
    {
        Outcome(tenant, "delivered");
        QueueLatency.Record(Math.Max(0, sinceArrival.TotalSeconds), new KeyValuePair<string, object?>("tenant", tenant));
    }

    public static void Outcome(string tenant, string outcome) =>
        Outcomes.Add(1, new KeyValuePair<string, object?>("outcome", outcome), new KeyValuePair<string, object?>("tenant", tenant));
}
