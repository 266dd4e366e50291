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

    [LoggerMessage(EventId = EventIds.Delivery + 20, Level = LogLevel.Debug, Message = "Connected to {Host}:{Port} for tenant {Tenant} (TLS {Tls})")]
    public static partial void Connected(ILogger logger, string host, int port, string tenant, bool tls);

    [LoggerMessage(EventId = EventIds.Delivery + 21, Level = LogLevel.Warning, Message = "Cannot connect to {Host}:{Port}: {Reason}")]
    public static partial void ConnectFailed(ILogger logger, string host, int port, string reason);

    [LoggerMessage(EventId = EventIds.Delivery + 22, Level = LogLevel.Debug, Message = "Closing connection to {Host}:{Port}: {Reason}")]
    public static partial void ConnectionClosed(ILogger logger, string host, int port, string reason);

    [LoggerMessage(EventId = EventIds.Delivery + 23, Level = LogLevel.Warning, Message = "{Id}: connection to {Host}:{Port} failed during the transaction: {Reason}")]
    public static partial void TransactionBroken(ILogger logger, string id, string host, int port, string reason);

    [LoggerMessage(EventId = EventIds.Delivery + 24, Level = LogLevel.Warning, Message = "{Id}: header block could not be reproduced byte for byte; sending MimeKit's serialisation instead")]
    public static partial void RawFallback(ILogger logger, string id);

    [LoggerMessage(EventId = EventIds.Delivery + 40, Level = LogLevel.Debug, Message = "{Id} dropped to {Path}")]
    public static partial void Dropped(ILogger logger, string id, string path);

    [LoggerMessage(EventId = EventIds.Delivery + 41, Level = LogLevel.Error, Message = "{Id}: writing to the drop directory failed")]
    public static partial void DropFailed(ILogger logger, string id, Exception exception);
}
