using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;
using SmtpGateway.Smtp;

namespace SmtpGateway.Submission;

/// <summary>What operators watch of streaming DATA: memory held by messages in flight, spills to disk, refusals by reason.</summary>
internal static class SubmissionMetrics
{
    static readonly UpDownCounter<long> Memory = Telemetry.Meter.CreateUpDownCounter<long>(
        Telemetry.SubmissionMemory, "By", "Octets of message data held in memory by all sessions (Limits:MaxInFlightMemory caps it)");

    static readonly Counter<long> Spilled = Telemetry.Meter.CreateCounter<long>(
        Telemetry.SubmissionSpilled, description: "Messages whose body streamed to a scratch file (over Limits:MessageMemoryThreshold, or memory budget spent)");

    static readonly Counter<long> NotTaken = Telemetry.Meter.CreateCounter<long>(
        Telemetry.SubmissionNotTaken, description: "Messages refused at end of DATA without being queued for a reason of the gateway's own (memory, scratch file, spool file system full), by reason (a closed set)");

    static readonly Counter<long> Accepted = Telemetry.Meter.CreateCounter<long>(
        Telemetry.MessagesAccepted, "{message}", "Messages acknowledged with 250 at end of DATA, by listener and tenant");

    static readonly Counter<long> Rejected = Telemetry.Meter.CreateCounter<long>(
        Telemetry.MessagesRejected, "{message}", "Messages refused at DATA or end of DATA, by listener, tenant (default: mail without one) and reason (a closed set)");

    static readonly Histogram<double> AcceptLatency = Telemetry.Meter.CreateHistogram(
        Telemetry.MessagesAcceptLatency, "s", "Time from the end of DATA (the final dot) to the 250: policy, hygiene, DKIM, durable commit; by tenant",
        advice: Telemetry.FastLatency);

    /// <summary>Tenant label of the open transaction: the recipients' tenant for inbound mail, the session's otherwise.</summary>
    internal static string TenantLabel(SubmissionContext context) => context.TransactionTenant ?? context.Tenant?.TenantId ?? Telemetry.NoTenant;

    /// <summary>One queued message; <paramref name="elapsed"/> runs from the final dot to the 250.</summary>
    public static void MessageAccepted(string listener, string tenant, TimeSpan elapsed)
    {
        // Listener names come from the configuration and tenant ids from the tenant map: closed sets, never client input.
        Accepted.Add(1, new KeyValuePair<string, object?>("listener", listener), new KeyValuePair<string, object?>("tenant", tenant));
        AcceptLatency.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("tenant", tenant));
    }

    public static void MessageRefused(string listener, string tenant, SmtpReply reply) =>
        Rejected.Add(1, new KeyValuePair<string, object?>("listener", listener), new KeyValuePair<string, object?>("tenant", tenant),
            new KeyValuePair<string, object?>("reason", RefusalReasons.Of(reply)));

    public static void MemoryTaken(long octets) => Memory.Add(octets);

    public static void MemoryReturned(long octets) => Memory.Add(-octets);

    public static void MessageSpilled() => Spilled.Add(1);

    public static void MessageNotTaken(IncomingProblem problem) => NotTaken.Add(1, new KeyValuePair<string, object?>("reason", problem switch
    {
        IncomingProblem.HeaderTooLarge => "header_too_large",
        IncomingProblem.NoMemory => "no_memory",
        IncomingProblem.StorageFailed => "storage_failed",
        IncomingProblem.LeadingContinuation => "leading_continuation",
        IncomingProblem.StorageFull => "storage_full",
        _ => "other",
    }));
}
