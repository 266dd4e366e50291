using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Delivery.Inbound;

/// <summary>
/// Inbound route log messages; event ids 2250-2299 (the upper part of <see cref="EventIds.Delivery"/>).
/// Webhook endpoints are logged as scheme://host:port only (paths and queries often carry tokens); secrets never.
/// Per-recipient outcomes are logged by the delivery worker, not here.
/// </summary>
internal static partial class InboundLog
{
    const int Base = EventIds.Delivery + 150;

    [LoggerMessage(EventId = Base + 0, Level = LogLevel.Debug, Message = "{Id} (tenant {Tenant}): inbound message dropped to {Path}")]
    public static partial void Dropped(ILogger logger, string id, string tenant, string path);

    [LoggerMessage(EventId = Base + 1, Level = LogLevel.Error, Message = "{Id} (tenant {Tenant}): writing to the inbound drop directory {Directory} failed")]
    public static partial void DropFailed(ILogger logger, string id, string tenant, string directory, Exception exception);

    [LoggerMessage(EventId = Base + 10, Level = LogLevel.Debug, Message = "{Id} (tenant {Tenant}): inbound message forwarded to {Peer}")]
    public static partial void Forwarded(ILogger logger, string id, string tenant, string peer);

    [LoggerMessage(EventId = Base + 11, Level = LogLevel.Warning, Message = "{Id} (tenant {Tenant}): cannot reach the inbound forward host {Host}:{Port}: {Reason}")]
    public static partial void ForwardUnreachable(ILogger logger, string id, string tenant, string host, int port, string reason);

    [LoggerMessage(EventId = Base + 12, Level = LogLevel.Warning, Message = "{Id} (tenant {Tenant}): header block could not be reproduced byte for byte; forwarded MimeKit's serialisation instead")]
    public static partial void ForwardNotExact(ILogger logger, string id, string tenant);

    [LoggerMessage(EventId = Base + 20, Level = LogLevel.Debug, Message = "{Id} (tenant {Tenant}): inbound webhook {Endpoint} answered {Status}")]
    public static partial void WebhookDelivered(ILogger logger, string id, string tenant, string endpoint, int status);

    [LoggerMessage(EventId = Base + 21, Level = LogLevel.Information, Message = "{Id} (tenant {Tenant}): inbound webhook {Endpoint} answered {Status}; will retry")]
    public static partial void WebhookDeferred(ILogger logger, string id, string tenant, string endpoint, int status);

    [LoggerMessage(EventId = Base + 22, Level = LogLevel.Warning, Message = "{Id} (tenant {Tenant}): inbound webhook {Endpoint} refused the request with {Status}; will retry, but the endpoint needs fixing")]
    public static partial void WebhookRefused(ILogger logger, string id, string tenant, string endpoint, int status);

    [LoggerMessage(EventId = Base + 26, Level = LogLevel.Warning, Message = "{Id} (tenant {Tenant}): inbound webhook {Endpoint} answered {Status}, a redirect, which is not followed; will retry, but Webhook:Url needs updating")]
    public static partial void WebhookRedirected(ILogger logger, string id, string tenant, string endpoint, int status);

    [LoggerMessage(EventId = Base + 23, Level = LogLevel.Warning, Message = "{Id} (tenant {Tenant}): inbound webhook {Endpoint} failed: {Reason}; will retry")]
    public static partial void WebhookFailed(ILogger logger, string id, string tenant, string endpoint, string reason);

    [LoggerMessage(EventId = Base + 24, Level = LogLevel.Error, Message = "Tenant {Tenant}: inbound webhook secret unavailable from {Source}; inbound mail is deferred")]
    public static partial void WebhookSecretUnavailable(ILogger logger, string tenant, string source);

    [LoggerMessage(EventId = Base + 25, Level = LogLevel.Error, Message = "Tenant {Tenant}: inbound webhook URL is missing or not an absolute http(s) URL; inbound mail is deferred")]
    public static partial void WebhookUrlInvalid(ILogger logger, string tenant);
}
