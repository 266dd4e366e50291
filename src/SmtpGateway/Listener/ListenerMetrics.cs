using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Listener;

public sealed class ListenerMetrics
{
    readonly UpDownCounter<long> _active = Telemetry.Meter.CreateUpDownCounter<long>(Telemetry.SessionsActive, description: "Open SMTP sessions");
    readonly Counter<long> _refused = Telemetry.Meter.CreateCounter<long>(Telemetry.SessionsRefused, description: "Connections refused at the banner");
    readonly Counter<long> _accepted = Telemetry.Meter.CreateCounter<long>(Telemetry.MessagesAccepted, description: "Messages acknowledged with 250");
    readonly Counter<long> _rejected = Telemetry.Meter.CreateCounter<long>(Telemetry.MessagesRejected, description: "Messages refused at end of DATA");

    public void SessionOpened(string listener) => _active.Add(1, new KeyValuePair<string, object?>("listener", listener));

    public void SessionClosed(string listener) => _active.Add(-1, new KeyValuePair<string, object?>("listener", listener));

    public void Refused(string listener) => _refused.Add(1, new KeyValuePair<string, object?>("listener", listener));

    public void Accepted(string listener) => _accepted.Add(1, new KeyValuePair<string, object?>("listener", listener));

    readonly Counter<long> _junkClosed = Telemetry.Meter.CreateCounter<long>(Telemetry.SessionsJunkClosed, description: "Sessions closed for too many NOOP/RSET/VRFY/HELP/EHLO commands");

    /// <summary>Labelled by listener name only (from config): a closed set, never client input.</summary>
    public void JunkClosed(string listener) => _junkClosed.Add(1, new KeyValuePair<string, object?>("listener", listener));

    public void Rejected(string listener, int code) => _rejected.Add(1, new KeyValuePair<string, object?>("listener", listener), new KeyValuePair<string, object?>("code", code));
}
