using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Spool;

/// <summary>Spool instruments, created once on the gateway meter.</summary>
internal static class SpoolMetrics
{
    static readonly Counter<long> Fsyncs = Telemetry.Meter.CreateCounter<long>(
        Telemetry.SpoolFsyncs, "{fsync}", "fsync calls made by the spool; kind=file|directory|filesystem (syncfs, Spool:Sync FileSystem). Fewer directory or filesystem syncs than messages shows group commit at work.");

    static readonly Histogram<double> CommitDuration = Telemetry.Meter.CreateHistogram(
        Telemetry.SpoolCommitDuration, "s", "Time to write and fsync one message into queue/ (group commit wait included).", advice: Telemetry.FastLatency);

    /// <summary>Process-wide, as the spool is: one per gateway.</summary>
    internal static readonly QueueDepth Depth = new();

    static readonly ObservableGauge<long> QueueDepthGauge = Telemetry.Meter.CreateObservableGauge(
        Telemetry.QueueDepth, Depth.Observe, "{message}", "Messages in queue/ by tenant and state (queued|deferred); delivered and failed ones leave it.");

    static readonly KeyValuePair<string, object?> FileKind = new("kind", "file");
    static readonly KeyValuePair<string, object?> DirectoryKind = new("kind", "directory");
    static readonly KeyValuePair<string, object?> FileSystemKind = new("kind", "filesystem");

    public static void FileFsync() => Fsyncs.Add(1, FileKind);

    public static void DirectoryFsync() => Fsyncs.Add(1, DirectoryKind);

    public static void FileSystemSync() => Fsyncs.Add(1, FileSystemKind);

    public static void Committed(TimeSpan elapsed) => CommitDuration.Record(elapsed.TotalSeconds);

    public static void Enqueued(string id, string? tenant, QueueState state = QueueState.Queued) => Depth.Set(id, tenant, state);

    public static void Dequeued(string id) => Depth.Remove(id);
}
