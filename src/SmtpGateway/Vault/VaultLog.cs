using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Vault;

/// <summary>The vault's log lines (event ids 1900-1999). They name tenant, credential and version; never a secret.</summary>
internal static partial class VaultLog
{
    [LoggerMessage(EventId = EventIds.Vault + 0, Level = LogLevel.Warning, Message = "Vault record {Subject} of tenant {Tenant} did not decrypt ({Purpose}, queue {QueueId}): {Problem}")]
    public static partial void Refused(ILogger logger, string tenant, string subject, string purpose, string? queueId, string problem);

    [LoggerMessage(EventId = EventIds.Vault + 1, Level = LogLevel.Error, Message = "Vault decryption of {Subject} for tenant {Tenant} failed ({Purpose}, queue {QueueId}): {Problem}")]
    public static partial void DecryptFailed(ILogger logger, string tenant, string subject, string purpose, string? queueId, string problem);

    [LoggerMessage(EventId = EventIds.Vault + 2, Level = LogLevel.Information, Message = "Refreshed the OAuth2 access token of {Subject} for tenant {Tenant}; it expires {Expires:O} (refresh token rotated: {Rotated})")]
    public static partial void Refreshed(ILogger logger, string tenant, string subject, DateTimeOffset expires, bool rotated);

    [LoggerMessage(EventId = EventIds.Vault + 3, Level = LogLevel.Warning, Message = "OAuth2 refresh of {Subject} for tenant {Tenant} failed (transient: {Transient}): {Problem}")]
    public static partial void RefreshFailed(ILogger logger, string tenant, string subject, bool transient, string problem);

    [LoggerMessage(EventId = EventIds.Vault + 4, Level = LogLevel.Information, Message = "Destroyed {Subject} of tenant {Tenant}: its rotation grace window ended")]
    public static partial void Destroyed(ILogger logger, string tenant, string subject);

    [LoggerMessage(EventId = EventIds.Vault + 5, Level = LogLevel.Error, Message = "Vault sweep of tenant {Tenant} failed; retired versions stay on disk until the next sweep")]
    public static partial void SweepFailed(ILogger logger, string tenant, Exception exception);

    [LoggerMessage(EventId = EventIds.Vault + 6, Level = LogLevel.Warning, Message = "Upstream refused {Subject} of tenant {Tenant} (queue {QueueId}): {Reply}")]
    public static partial void UpstreamRefused(ILogger logger, string tenant, string subject, string? queueId, string reply);

    [LoggerMessage(EventId = EventIds.Vault + 7, Level = LogLevel.Error, Message = "Could not drop the refused access token of {Subject} for tenant {Tenant}; it is replaced when it nears expiry")]
    public static partial void ForgetFailed(ILogger logger, string tenant, string subject, Exception exception);
}

/// <summary>Vault instruments on the gateway meter; the tenant is the only label (never a credential name or secret).</summary>
internal static class VaultMetrics
{
    /// <summary>
    /// The same instrument name as Delivery's: a smarthost's 535 is counted there, where it happens; a token endpoint
    /// refusing the refresh token is counted here, the only place that sees it. One refusal, one count.
    /// </summary>
    static readonly Counter<long> UpstreamAuthFailures = Telemetry.Meter.CreateCounter<long>(
        Telemetry.DeliveryUpstreamAuthFailures, "{refusal}", Telemetry.DeliveryUpstreamAuthFailuresDescription);

    static readonly Counter<long> Decryptions = Telemetry.Meter.CreateCounter<long>(
        Telemetry.VaultDecryptions, "{decryption}", "Vault record decryptions by tenant; result=ok|refused|error.");

    public static void TokenEndpointRefused(string tenant) => UpstreamAuthFailures.Add(1, new KeyValuePair<string, object?>("tenant", tenant));

    public static void Decrypted(string tenant, string result) =>
        Decryptions.Add(1, new KeyValuePair<string, object?>("tenant", tenant), new KeyValuePair<string, object?>("result", result));
}
