using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Spool;

/// <summary>Spool instruments, created once on the gateway meter.</summary>
internal static class SpoolMetrics
{
    static readonly Counter<long> Fsyncs = Telemetry.Meter.CreateCounter<long>(
        Telemetry.SpoolFsyncs, "{fsync}", "fsync calls made by the spool; kind=file|directory. Fewer directory fsyncs than messages shows group commit at work.");

    static readonly Histogram<double> CommitDuration = Telemetry.Meter.CreateHistogram<double>(
        Telemetry.SpoolCommitDuration, "s", "Time from the end of DATA to the message being on stable storage.");

    static readonly UpDownCounter<long> QueueDepth = Telemetry.Meter.CreateUpDownCounter<long>(
        Telemetry.QueueDepth, "{message}", "Messages in the queue (delivered or failed ones leave it).");

    static readonly KeyValuePair<string, object?> FileKind = new("kind", "file");
    static readonly KeyValuePair<string, object?> DirectoryKind = new("kind", "directory");

    public static void FileFsync() => Fsyncs.Add(1, FileKind);

    public static void DirectoryFsync() => Fsyncs.Add(1, DirectoryKind);

    public static void Committed(TimeSpan elapsed) => CommitDuration.Record(elapsed.TotalSeconds);

    public static void Enqueued(int count = 1) => QueueDepth.Add(count);

    public static void Dequeued() => QueueDepth.Add(-1);
}
