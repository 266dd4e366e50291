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




    [LoggerMessage(EventId = EventIds.Listener + 6, Level = LogLevel.Warning, Message = "Session {SessionId}: bare CR or LF in DATA from {Client}; message refused")]
    public static partial void BareLineEnding(ILogger logger, string sessionId, IPAddress client);

    [LoggerMessage(EventId = EventIds.Listener + 7, Level = LogLevel.Warning, Message = "Session {SessionId}: HTTP request from {Client}; closed")]
    public static partial void HttpProbe(ILogger logger, string sessionId, IPAddress client);

    [LoggerMessage(EventId = EventIds.Listener + 8, Level = LogLevel.Warning, Message = "Session {SessionId}: too many errors from {Client}; closed")]
    public static partial void TooManyErrors(ILogger logger, string sessionId, IPAddress client);



    [LoggerMessage(EventId = EventIds.Listener + 11, Level = LogLevel.Information, Message = "Stopping listeners; draining {Sessions} session(s) for up to {Timeout}")]
    public static partial void Draining(ILogger logger, int sessions, TimeSpan timeout);

    [LoggerMessage(EventId = EventIds.Listener + 12, Level = LogLevel.Warning, Message = "{Sessions} session(s) still open after the drain timeout; closing them with 421")]
    public static partial void DrainTimeout(ILogger logger, int sessions);


    [LoggerMessage(EventId = EventIds.Listener + 13, Level = LogLevel.Error, Message = "Session {SessionId} failed unexpectedly")]
    public static partial void SessionFailed(ILogger logger, string sessionId, Exception exception);

    [LoggerMessage(EventId = EventIds.Listener + 25, Level = LogLevel.Warning, Message = "Session {SessionId}: more than {Limit} commands from {Client} without a message (NOOP/RSET/VRFY/HELP/EHLO, rate-limited MAIL/RCPT, temporary AUTH refusals); closed")]
    public static partial void TooManyJunkCommands(ILogger logger, string sessionId, int limit, IPAddress client);
}
