using System.Diagnostics.Metrics;

namespace SmtpGateway.Diagnostics;

/// <summary>Every telemetry name in one place: dashboards and alerts depend on them.</summary>
public static class Telemetry
{
    public const string MeterName = "SmtpGateway";

    /// <summary>The "tenant" label of mail without a tenant (inbound for none, DSNs of it): the name delivery and the queue tools use.</summary>
    public const string NoTenant = "default";

    public const string SessionsActive = "smtpgw.sessions.active";
    public const string SessionsOpened = "smtpgw.sessions.opened";
    public const string AuthFailures = "smtpgw.auth.failures";
    public const string SessionsRefused = "smtpgw.sessions.refused";
    public const string MessagesAccepted = "smtpgw.messages.accepted";
    public const string MessagesRejected = "smtpgw.messages.rejected";
    public const string MessagesAcceptLatency = "smtpgw.messages.accept_latency";
    public const string SpoolCommitDuration = "smtpgw.spool.commit.duration";
    public const string SpoolFsyncs = "smtpgw.spool.fsyncs";
    public const string DeliveryOutcomes = "smtpgw.delivery.outcomes";
    public const string DeliveryQueueLatency = "smtpgw.delivery.queue_latency";
    public const string QueueDepth = "smtpgw.queue.depth";
    public const string DeliveryConnections = "smtpgw.delivery.connections";
    public const string DeliveryDsns = "smtpgw.delivery.dsns";
    public const string DeliveryUpstreamAuthFailures = "smtpgw.delivery.upstream_auth_failures";

    /// <summary>
    /// Delivery and the vault each create <see cref="DeliveryUpstreamAuthFailures"/>: with one unit and description the
    /// exporter merges them into one series per tenant; with two it would export the name twice, which Prometheus refuses.
    /// </summary>
    public const string DeliveryUpstreamAuthFailuresDescription =
        "A tenant's upstream credential was refused (a smarthost's RFC 4954 535, or a token endpoint refusing the stored refresh token); the mail is deferred.";
    public const string DeliveryDestinationRefused = "smtpgw.delivery.destination_refused";
    public const string ReportsReceived = "smtpgw.bounces.reports";
    public const string SuppressionRefusals = "smtpgw.suppression.refusals";
    public const string SuppressionAdded = "smtpgw.suppression.added";
    public const string TenantOutcomes = "smtpgw.tenant.outcomes";
    public const string TenantPaused = "smtpgw.tenant.paused";
    public const string AuditEvents = "smtpgw.audit.events";
    public const string AuditDropped = "smtpgw.audit.dropped";
    public const string CrossTenantRefusals = "smtpgw.audit.cross_tenant_refusals";
    public const string DkimSignatures = "smtpgw.dkim.signatures";
    public const string DkimFailures = "smtpgw.dkim.failures";
    public const string SigningWait = "smtpgw.signing.wait";
    public const string SigningRefused = "smtpgw.signing.refused";
    public const string HsmSignDuration = "smtpgw.hsm.sign.duration";
    public const string HsmSignCpu = "smtpgw.hsm.sign.cpu";
    public const string HsmErrors = "smtpgw.hsm.errors";
    public const string HsmLogins = "smtpgw.hsm.logins";
    public const string HsmSessionsOpen = "smtpgw.hsm.sessions.open";
    public const string SubmissionMemory = "smtpgw.submission.memory";
    public const string SubmissionSpilled = "smtpgw.submission.spilled";
    public const string SubmissionNotTaken = "smtpgw.submission.not_taken";
    public const string VaultDecryptions = "smtpgw.vault.decryptions";
    public const string LimitsRefused = "smtpgw.limits.refused";
    public const string SessionsJunkClosed = "smtpgw.sessions.junk_closed";
    public const string McpToolCalls = "smtpgw.mcp.tool_calls";
    public const string McpRequestsRefused = "smtpgw.mcp.requests_refused";

    /// <summary>
    /// Buckets (seconds) for what takes milliseconds when healthy (end of DATA to 250, spool commit, an HSM signature):
    /// fine below 100 ms where a fsync or a C_Sign lives, coarse up to the 30 s a client would wait at most.
    /// </summary>
    public static readonly InstrumentAdvice<double> FastLatency = new()
    {
        HistogramBucketBoundaries = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    };

    /// <summary>
    /// Buckets (seconds) for queue to delivery: a second when the next hop answers at once, minutes to hours through
    /// retries (Retry:MaxAge is days; the last bucket is two days, beyond it +Inf).
    /// </summary>
    public static readonly InstrumentAdvice<double> QueueLatency = new()
    {
        HistogramBucketBoundaries = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800],
    };

    /// <summary>The gateway's single meter; instruments are created from it by each stage.</summary>
    public static readonly Meter Meter = new(MeterName);
}
