using System.Diagnostics.Metrics;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Hsm;

/// <summary>
/// HSM instruments on the gateway meter. Tenant is a label on errors and logins because an operator alerts
/// per tenant (one tenant's token failing must not hide in an aggregate). No label ever carries a PIN.
/// </summary>
internal static class HsmMetrics
{
    // Names pending a move into Telemetry.cs (which the Hsm stage does not own); keep them in step with it.
    internal const string SignDurationName = Telemetry.HsmSignDuration;
    internal const string SignCpuName = Telemetry.HsmSignCpu;
    internal const string ErrorsName = Telemetry.HsmErrors;
    internal const string LoginsName = Telemetry.HsmLogins;
    internal const string SessionsOpenName = Telemetry.HsmSessionsOpen;

    static readonly Histogram<double> SignDuration = Telemetry.Meter.CreateHistogram(
        SignDurationName, "s", "Time of one C_SignInit+C_Sign in the token, pool wait included; algorithm=rsa2048|ed25519.", advice: Telemetry.FastLatency);

    // Issue 15: with SoftHSM2 the arithmetic runs on the gateway's own cores, and a signed message's CPU is this plus the
    // gateway's work; a network or PCIe HSM computes elsewhere and adds about nothing here while the duration grows.
    static readonly Counter<double> SignCpu = Telemetry.Meter.CreateCounter<double>(
        SignCpuName, "s", "CPU time of the signing thread inside C_SignInit+C_Sign (a software token's arithmetic; about none for a network or PCIe HSM); algorithm=rsa2048|ed25519.");

    static readonly Counter<long> Errors = Telemetry.Meter.CreateCounter<long>(
        ErrorsName, "{error}", "HSM failures by tenant and kind (HsmErrorKind).");

    static readonly Counter<long> Logins = Telemetry.Meter.CreateCounter<long>(
        LoginsName, "{login}", "C_Login attempts by tenant; result=ok|refused|error.");

    static readonly UpDownCounter<long> SessionsOpen = Telemetry.Meter.CreateUpDownCounter<long>(
        SessionsOpenName, "{session}", "PKCS#11 sessions currently open (pooled and login-holding).");

    public static void Signed(DkimKeyAlgorithm algorithm, TimeSpan elapsed) =>
        SignDuration.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("algorithm", AlgorithmTag(algorithm)));

    public static void SignCpuUsed(DkimKeyAlgorithm algorithm, double seconds) =>
        SignCpu.Add(seconds, new KeyValuePair<string, object?>("algorithm", AlgorithmTag(algorithm)));

    public static void Error(string tenant, HsmErrorKind kind) =>
        Errors.Add(1, new KeyValuePair<string, object?>("tenant", tenant), new KeyValuePair<string, object?>("kind", kind.ToString()));

    public static void Login(string tenant, string result) =>
        Logins.Add(1, new KeyValuePair<string, object?>("tenant", tenant), new KeyValuePair<string, object?>("result", result));

    public static void SessionOpened() => SessionsOpen.Add(1);

    public static void SessionClosed() => SessionsOpen.Add(-1);

    static string AlgorithmTag(DkimKeyAlgorithm algorithm) => algorithm == DkimKeyAlgorithm.Ed25519 ? "ed25519" : "rsa2048";
}
