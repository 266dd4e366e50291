using System.Net;
using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Listener;

/// <summary>Listener events (ids 1200-1399). Never logs credentials or message content.</summary>
static partial class ListenerLog
{
    [LoggerMessage(EventId = EventIds.Listener + 0, Level = LogLevel.Information, Message = "Listening on {EndPoint} ({Listener}, {Kind})")]
    public static partial void Listening(ILogger logger, string listener, string kind, IPEndPoint endPoint);

    [LoggerMessage(EventId = EventIds.Listener + 1, Level = LogLevel.Warning, Message = "Connection from {Client} on {Listener} refused: {Reason}")]
    public static partial void ConnectionRefused(ILogger logger, IPAddress client, string listener, string reason);

    [LoggerMessage(EventId = EventIds.Listener + 2, Level = LogLevel.Debug, Message = "Session {SessionId} aborted: {Reason}")]
    public static partial void SessionAborted(ILogger logger, string sessionId, string reason);

    [LoggerMessage(EventId = EventIds.Listener + 3, Level = LogLevel.Information, Message = "Session {SessionId} queued {QueueId} for {Recipients} recipient(s), {Bytes} bytes")]
    public static partial void Queued(ILogger logger, string sessionId, string queueId, int recipients, long bytes);

    [LoggerMessage(EventId = EventIds.Listener + 4, Level = LogLevel.Error, Message = "Session {SessionId}: spool commit failed; answered 451")]
    public static partial void SpoolFailed(ILogger logger, string sessionId, Exception exception);

    [LoggerMessage(EventId = EventIds.Listener + 5, Level = LogLevel.Warning, Message = "Session {SessionId}: relay denied for {Client}")]
    public static partial void RelayDenied(ILogger logger, string sessionId, IPAddress client);

    [LoggerMessage(EventId = EventIds.Listener + 6, Level = LogLevel.Warning, Message = "Session {SessionId}: bare CR or LF in DATA from {Client}; message refused")]
    public static partial void BareLineEnding(ILogger logger, string sessionId, IPAddress client);

    [LoggerMessage(EventId = EventIds.Listener + 7, Level = LogLevel.Warning, Message = "Session {SessionId}: HTTP request from {Client}; closed")]
    public static partial void HttpProbe(ILogger logger, string sessionId, IPAddress client);

    [LoggerMessage(EventId = EventIds.Listener + 8, Level = LogLevel.Warning, Message = "Session {SessionId}: too many errors from {Client}; closed")]
    public static partial void TooManyErrors(ILogger logger, string sessionId, IPAddress client);

    [LoggerMessage(EventId = EventIds.Listener + 9, Level = LogLevel.Information, Message = "Session {SessionId} authenticated with {Mechanism} as tenant {Tenant}")]
    public static partial void Authenticated(ILogger logger, string sessionId, string mechanism, string tenant);

    [LoggerMessage(EventId = EventIds.Listener + 10, Level = LogLevel.Warning, Message = "Session {SessionId}: AUTH {Mechanism} failed from {Client}")]
    public static partial void AuthFailed(ILogger logger, string sessionId, string mechanism, IPAddress client);

    [LoggerMessage(EventId = EventIds.Listener + 11, Level = LogLevel.Information, Message = "Stopping listeners; draining {Sessions} session(s) for up to {Timeout}")]
    public static partial void Draining(ILogger logger, int sessions, TimeSpan timeout);

    [LoggerMessage(EventId = EventIds.Listener + 12, Level = LogLevel.Warning, Message = "{Sessions} session(s) still open after the drain timeout; closing them with 421")]
    public static partial void DrainTimeout(ILogger logger, int sessions);

    [LoggerMessage(EventId = EventIds.Listener + 14, Level = LogLevel.Error, Message = "Session {SessionId}: DKIM signing for tenant {Tenant} failed ({Reason}); answered 451, nothing queued")]
    public static partial void SigningFailed(ILogger logger, string sessionId, string tenant, string reason);

    [LoggerMessage(EventId = EventIds.Listener + 13, Level = LogLevel.Error, Message = "Session {SessionId} failed unexpectedly")]
    public static partial void SessionFailed(ILogger logger, string sessionId, Exception exception);

    [LoggerMessage(EventId = EventIds.Listener + 15, Level = LogLevel.Information, Message = "Session {SessionId}: removed header field(s) {Fields} (client-supplied tenant or delivery-path claims)")]
    public static partial void HeadersRemoved(ILogger logger, string sessionId, string fields);

    [LoggerMessage(EventId = EventIds.Listener + 16, Level = LogLevel.Error, Message = "Session {SessionId}: suppression list or return-path keys unreadable; answered 451")]
    public static partial void EnvelopeStateUnreadable(ILogger logger, string sessionId, Exception exception);
}
