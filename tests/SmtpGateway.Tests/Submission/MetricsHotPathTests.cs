using System.Diagnostics.Metrics;
using SmtpGateway.Delivery;
using SmtpGateway.Diagnostics;
using SmtpGateway.Spool;
using SmtpGateway.Submission;

namespace SmtpGateway.Tests.Submission;

/// <summary>
/// Issue 13 (measured in issue 15): recording a message's metrics allocates nothing once warm, with a listener taking
/// every measurement (as the exporter's does): tags are passed as structs, values are never boxed.
/// </summary>
public sealed class MetricsHotPathTests
{
    [Fact]
    public void Per_message_records_allocate_nothing_when_warm()
    {
        long seen = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == Telemetry.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, _, _, _) => Interlocked.Increment(ref seen));
        listener.SetMeasurementEventCallback<double>((_, _, _, _) => Interlocked.Increment(ref seen));
        listener.Start();
        var depth = new QueueDepth();
        const string id = "0000000000000000HOT1";
        var elapsed = TimeSpan.FromMilliseconds(3);

        void OneMessage()
        {
            SubmissionMetrics.MessageAccepted("submission", "tenant-hot", elapsed);
            depth.Set(id, "tenant-hot", QueueState.Queued);
            DeliveryMetrics.Delivered("tenant-hot", elapsed);
            depth.Remove(id);
        }

        for (var i = 0; i < 100; i++)
        {
            OneMessage();
        }

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 1000; i++)
        {
            OneMessage();
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        Assert.True(Interlocked.Read(ref seen) >= 4 * 1100);
    }
}
