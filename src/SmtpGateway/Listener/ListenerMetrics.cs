using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Listener;

/// <summary>Why an AUTH failed: the closed set of the "reason" label of smtpgw.auth.failures.</summary>
public enum AuthFailure
{
    /// <summary>The credentials were checked and refused (535 5.7.8).</summary>
    InvalidCredentials,

    /// <summary>The credentials could not be checked now (the tenant's HSM token does not answer; 454 4.7.0).</summary>
    Unavailable,

    /// <summary>Good credentials, but the tenant has Limits:MaxSessions open (454 4.7.0).</summary>
    SessionLimit,

    /// <summary>Refused without a check: the client address failed too often (421 4.7.0).</summary>
    Blocked,

    /// <summary>Not base64, or a PLAIN response without its parts (501).</summary>
    Malformed,

    /// <summary>A SASL mechanism the gateway does not offer (504).</summary>
    UnknownMechanism,

    /// <summary>AUTH in clear text where it needs TLS (538).</summary>
    EncryptionRequired,
}

/// <summary>
/// The listener's instruments. Labels are the listener name (from config) and closed sets, never client input: a client
/// chooses its EHLO name, addresses and SASL user name, none of which may become a label value.
/// </summary>
public sealed class ListenerMetrics
{
    readonly UpDownCounter<long> _active = Telemetry.Meter.CreateUpDownCounter<long>(Telemetry.SessionsActive, "{session}", "Open SMTP sessions, by listener");
    readonly Counter<long> _opened = Telemetry.Meter.CreateCounter<long>(Telemetry.SessionsOpened, "{session}", "SMTP sessions accepted (given a banner), by listener");
    readonly Counter<long> _refused = Telemetry.Meter.CreateCounter<long>(Telemetry.SessionsRefused, "{connection}", "Connections refused at the banner, by listener");
    readonly Counter<long> _junkClosed = Telemetry.Meter.CreateCounter<long>(Telemetry.SessionsJunkClosed, "{session}", "Sessions closed for too many NOOP/RSET/VRFY/HELP/EHLO commands, by listener");
    readonly Counter<long> _authFailures = Telemetry.Meter.CreateCounter<long>(
        Telemetry.AuthFailures, "{attempt}", "AUTH attempts that did not authenticate, by listener and reason (invalid_credentials|unavailable|session_limit|blocked|malformed|unknown_mechanism|encryption_required)");

    public void SessionOpened(string listener)
    {
        _active.Add(1, new KeyValuePair<string, object?>("listener", listener));
        _opened.Add(1, new KeyValuePair<string, object?>("listener", listener));
    }

    public void SessionClosed(string listener) => _active.Add(-1, new KeyValuePair<string, object?>("listener", listener));

    public void Refused(string listener) => _refused.Add(1, new KeyValuePair<string, object?>("listener", listener));

    public void JunkClosed(string listener) => _junkClosed.Add(1, new KeyValuePair<string, object?>("listener", listener));

    public void AuthFailed(string listener, AuthFailure reason) =>
        _authFailures.Add(1, new KeyValuePair<string, object?>("listener", listener), new KeyValuePair<string, object?>("reason", Label(reason)));

    public static string Label(AuthFailure reason) => reason switch
    {
        AuthFailure.InvalidCredentials => "invalid_credentials",
        AuthFailure.Unavailable => "unavailable",
        AuthFailure.SessionLimit => "session_limit",
        AuthFailure.Blocked => "blocked",
        AuthFailure.Malformed => "malformed",
        AuthFailure.UnknownMechanism => "unknown_mechanism",
        _ => "encryption_required",
    };
}
