using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Tests.Fakes;

/// <summary>Sums one gateway counter's measurements whose tag <c>key</c> equals <c>value</c> (tests run in parallel, so
/// a test filters on a label value of its own).</summary>
public sealed class MeterCounter : IDisposable
{
    readonly MeterListener _listener = new();
    long _total;

    public MeterCounter(string instrumentName, string key, string value)
    {
        _listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == Telemetry.MeterName && instrument.Name == instrumentName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((_, measurement, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == key && Equals(tag.Value, value))
                {
                    Interlocked.Add(ref _total, measurement);
                }
            }
        });
        _listener.Start();
    }

    public long Total => Interlocked.Read(ref _total);

    public void Dispose() => _listener.Dispose();
}
