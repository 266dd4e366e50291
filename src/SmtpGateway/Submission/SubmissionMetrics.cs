using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;

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
