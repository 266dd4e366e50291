using System.Diagnostics.Metrics;

namespace SmtpGateway.Diagnostics;

/// <summary>Every telemetry name in one place: dashboards and alerts depend on them.</summary>
public static class Telemetry
{
    public const string MeterName = "SmtpGateway";

    public const string SessionsActive = "smtpgw.sessions.active";
    public const string SessionsRefused = "smtpgw.sessions.refused";
    public const string MessagesAccepted = "smtpgw.messages.accepted";
    public const string MessagesRejected = "smtpgw.messages.rejected";
    public const string SpoolCommitDuration = "smtpgw.spool.commit.duration";
    public const string SpoolFsyncs = "smtpgw.spool.fsyncs";
    public const string DeliveryOutcomes = "smtpgw.delivery.outcomes";
    public const string QueueDepth = "smtpgw.queue.depth";
    public const string DeliveryConnections = "smtpgw.delivery.connections";
    public const string DeliveryDsns = "smtpgw.delivery.dsns";
    public const string DeliveryUpstreamAuthFailures = "smtpgw.delivery.upstream_auth_failures";
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
    public const string HsmErrors = "smtpgw.hsm.errors";
    public const string HsmLogins = "smtpgw.hsm.logins";
    public const string HsmSessionsOpen = "smtpgw.hsm.sessions.open";
    public const string SubmissionMemory = "smtpgw.submission.memory";
    public const string SubmissionSpilled = "smtpgw.submission.spilled";
    public const string SubmissionNotTaken = "smtpgw.submission.not_taken";
    public const string VaultDecryptions = "smtpgw.vault.decryptions";
    public const string LimitsRefused = "smtpgw.limits.refused";
    public const string SessionsJunkClosed = "smtpgw.sessions.junk_closed";

    /// <summary>The gateway's single meter; instruments are created from it by each stage.</summary>
    public static readonly Meter Meter = new(MeterName);
}
