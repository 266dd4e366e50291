using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Delivery;

/// <summary>Delivery log messages; event ids 2100-2299 (<see cref="EventIds.Delivery"/>). Replies are logged, credentials never.</summary>
internal static partial class DeliveryLog
{
    [LoggerMessage(EventId = EventIds.Delivery + 0, Level = LogLevel.Information, Message = "Delivery started: {Workers} workers, mode {Mode}")]
    public static partial void Started(ILogger logger, int workers, string mode);

    [LoggerMessage(EventId = EventIds.Delivery + 1, Level = LogLevel.Information, Message = "{Id} to {Recipient}: delivered ({Reply})")]
    public static partial void Delivered(ILogger logger, string id, string recipient, string reply);

    [LoggerMessage(EventId = EventIds.Delivery + 2, Level = LogLevel.Information, Message = "{Id} to {Recipient}: deferred ({Reply}); attempt {Attempt}, next at {NextAttemptAt:O}")]
    public static partial void Deferred(ILogger logger, string id, string recipient, string reply, int attempt, DateTimeOffset nextAttemptAt);

    [LoggerMessage(EventId = EventIds.Delivery + 3, Level = LogLevel.Warning, Message = "{Id} to {Recipient}: bounced ({Reply})")]
    public static partial void Bounced(ILogger logger, string id, string recipient, string reply);

    [LoggerMessage(EventId = EventIds.Delivery + 4, Level = LogLevel.Warning, Message = "{Id} to {Recipient}: expired after {Attempts} attempts, last reply {Reply}")]
    public static partial void Expired(ILogger logger, string id, string recipient, int attempts, string reply);

    [LoggerMessage(EventId = EventIds.Delivery + 5, Level = LogLevel.Information, Message = "{Id}: attempt abandoned at shutdown; it will be made again after restart")]
    public static partial void Abandoned(ILogger logger, string id);

    [LoggerMessage(EventId = EventIds.Delivery + 6, Level = LogLevel.Error, Message = "{Id}: delivery attempt failed unexpectedly; retrying at {RetryAt:O}")]
    public static partial void AttemptFailed(ILogger logger, string id, DateTimeOffset retryAt, Exception exception);

    [LoggerMessage(EventId = EventIds.Delivery + 7, Level = LogLevel.Information, Message = "Delivery stopped")]
    public static partial void Stopped(ILogger logger);

    [LoggerMessage(EventId = EventIds.Delivery + 20, Level = LogLevel.Debug, Message = "Connected to {Host}:{Port} [{Address}] for tenant {Tenant} (TLS {Tls})")]
    public static partial void Connected(ILogger logger, string host, int port, string tenant, string address, string tls);

    [LoggerMessage(EventId = EventIds.Delivery + 21, Level = LogLevel.Warning, Message = "Cannot open a session with {Host} [{Address}]:{Port}: {Reason}")]
    public static partial void ConnectFailed(ILogger logger, string host, string address, int port, string reason);

    [LoggerMessage(EventId = EventIds.Delivery + 22, Level = LogLevel.Debug, Message = "Closing connection to {Host}:{Port}: {Reason}")]
    public static partial void ConnectionClosed(ILogger logger, string host, int port, string reason);

    [LoggerMessage(EventId = EventIds.Delivery + 23, Level = LogLevel.Warning, Message = "{Id}: session with {Peer} was lost during the transaction: {Reason}")]
    public static partial void TransactionBroken(ILogger logger, string id, string peer, string reason);

    [LoggerMessage(EventId = EventIds.Delivery + 181, Level = LogLevel.Information, Message = "{Id}: pooled session with {Peer} was gone when reused ({Reason}); trying once more on a new one")]
    public static partial void StaleSessionReplaced(ILogger logger, string id, string peer, string reason);

    [LoggerMessage(EventId = EventIds.Delivery + 24, Level = LogLevel.Warning, Message = "{Id}: header block could not be reproduced byte for byte; sending MimeKit's serialisation instead")]
    public static partial void RawFallback(ILogger logger, string id);

    [LoggerMessage(EventId = EventIds.Delivery + 25, Level = LogLevel.Information, Message = "TLS handshake with {Host} [{Address}] failed ({Reason}); opportunistic policy: retrying in plaintext")]
    public static partial void TlsFallback(ILogger logger, string host, string address, string reason);

    [LoggerMessage(EventId = EventIds.Delivery + 26, Level = LogLevel.Information, Message = "{Id}: no route to {Domain}: {Code} {Reason}")]
    public static partial void RouteFailed(ILogger logger, string id, string domain, int code, string reason);

    [LoggerMessage(EventId = EventIds.Delivery + 27, Level = LogLevel.Debug, Message = "Authenticated to {Peer} for tenant {Tenant} with credential {Credential} ({Mechanism})")]
    public static partial void UpstreamAuthenticated(ILogger logger, string peer, string tenant, string credential, string mechanism);

    [LoggerMessage(EventId = EventIds.Delivery + 28, Level = LogLevel.Warning, Message = "{Id}: {Peer} refused tenant {Tenant}'s credential {Credential}: {Reply}")]
    public static partial void UpstreamAuthRefused(ILogger logger, string id, string peer, string tenant, string credential, string reply);

    [LoggerMessage(EventId = EventIds.Delivery + 29, Level = LogLevel.Information, Message = "{Id}: retrying AUTH for tenant {Tenant} with credential {Credential}, still in its rotation grace window, on a fresh connection")]
    public static partial void UpstreamAuthFallback(ILogger logger, string id, string tenant, string credential);

    [LoggerMessage(EventId = EventIds.Delivery + 30, Level = LogLevel.Warning, Message = "{Id}: no upstream AUTH for tenant {Tenant}: {Reply}")]
    public static partial void UpstreamAuthFailed(ILogger logger, string id, string tenant, string reply);

    [LoggerMessage(EventId = EventIds.Delivery + 40, Level = LogLevel.Debug, Message = "{Id} dropped to {Path}")]
    public static partial void Dropped(ILogger logger, string id, string path);

    [LoggerMessage(EventId = EventIds.Delivery + 41, Level = LogLevel.Error, Message = "{Id}: writing to the drop directory failed")]
    public static partial void DropFailed(ILogger logger, string id, Exception exception);

    [LoggerMessage(EventId = EventIds.Delivery + 60, Level = LogLevel.Information, Message = "{Id}: delivery status notification {DsnId} queued to the sender for {Count} recipient(s)")]
    public static partial void DsnQueued(ILogger logger, string id, string dsnId, int count);

    [LoggerMessage(EventId = EventIds.Delivery + 61, Level = LogLevel.Error, Message = "{Id}: could not queue the delivery status notification; the failure is recorded without one")]
    public static partial void DsnFailed(ILogger logger, string id, Exception exception);

    [LoggerMessage(EventId = EventIds.Delivery + 62, Level = LogLevel.Debug, Message = "{Id}: no delivery status notification (null sender, RFC 5321 section 4.5.5)")]
    public static partial void DsnSuppressed(ILogger logger, string id);

    [LoggerMessage(EventId = EventIds.Delivery + 70, Level = LogLevel.Warning, Message = "Writing the delivery event log failed")]
    public static partial void EventLogFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = EventIds.Delivery + 80, Level = LogLevel.Information, Message = "Queue control: {Verb} {Target}: {Result}")]
    public static partial void QueueControl(ILogger logger, string verb, string target, string result);

    [LoggerMessage(EventId = EventIds.Delivery + 81, Level = LogLevel.Warning, Message = "Queue control request {Name} could not be handled")]
    public static partial void QueueControlFailed(ILogger logger, string name, Exception exception);

    [LoggerMessage(EventId = EventIds.Delivery + 71, Level = LogLevel.Error, Message = "Message {QueueId}: suppression, reputation or return-path bookkeeping failed; the attempt is recorded anyway")]
    public static partial void BookkeepingFailed(ILogger logger, string queueId, Exception exception);

    [LoggerMessage(EventId = EventIds.Delivery + 72, Level = LogLevel.Error, Message = "Message {QueueId}: the tenant's return path could not be made; deferred")]
    public static partial void ReturnPathFailed(ILogger logger, string queueId, Exception exception);

    // Egress identity backoff (issue 12): Delivery+163..169 (Delivery+160..162 and +170..176 are the inbound log's).
    [LoggerMessage(EventId = EventIds.Delivery + 163, Level = LogLevel.Warning,
        Message = "Backoff for tenant {Tenant} to {Host}:{Port} (source {Source}): {Failures} failure(s) in a row; its mail there is not tried until {Until:O}; other tenants are not affected")]
    public static partial void BackoffStarted(ILogger logger, string tenant, string host, int port, string source, int failures, DateTimeOffset until);

    [LoggerMessage(EventId = EventIds.Delivery + 164, Level = LogLevel.Warning,
        Message = "Backoff table full ({MaxEntries} egress identities): the identities whose last failure is oldest are forgotten ({Evicted} so far); raise Delivery:Backoff:MaxEntries if this repeats")]
    public static partial void BackoffTableFull(ILogger logger, int maxEntries, long evicted);
}
