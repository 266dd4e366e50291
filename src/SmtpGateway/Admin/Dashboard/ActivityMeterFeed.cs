using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Admin.Dashboard;

/// <summary>
/// Feeds <see cref="TenantActivity"/> from the gateway's own meter (messages accepted, delivery outcomes), so the stages
/// need no second hook for the dashboard: the measurements they already make for Prometheus are enough. The callback
/// runs on the recording thread; it reads two tags and takes one short lock.
/// </summary>
public sealed class ActivityMeterFeed : IDisposable
{
    readonly TenantActivity _activity;
    readonly MeterListener _listener = new();

    public ActivityMeterFeed(TenantActivity activity)
    {
        _activity = activity;
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == Telemetry.MeterName && instrument.Name is Telemetry.MessagesAccepted or Telemetry.DeliveryOutcomes)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>(OnMeasurement);
    }

    /// <summary>Starts listening (instruments created before and after this call alike).</summary>
    public void Start() => _listener.Start();

    public void Dispose() => _listener.Dispose();

    void OnMeasurement(Instrument instrument, long value, ReadOnlySpan<KeyValuePair<string, object?>> tags, object? state)
    {
        string? tenant = null;
        string? outcome = null;
        foreach (var tag in tags)
        {
            if (tag.Key == "tenant")
            {
                tenant = tag.Value as string;
            }
            else if (tag.Key == "outcome")
            {
                outcome = tag.Value as string;
            }
        }

        ActivityCounter? counter = instrument.Name == Telemetry.MessagesAccepted
            ? ActivityCounter.Accepted
            : outcome switch
            {
                "delivered" => ActivityCounter.Delivered,
                "deferred" => ActivityCounter.Deferred,
                // Expired is a bounce the queue lifetime decided: the sender hears of it the same way.
                "bounced" or "expired" => ActivityCounter.Bounced,
                _ => null,
            };
        if (counter is { } c)
        {
            _activity.Add(tenant, c, value);
        }
    }
}
