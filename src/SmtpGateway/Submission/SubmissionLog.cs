using System.Net;
using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Submission;

internal static partial class SubmissionLog
{
    [LoggerMessage(EventId = EventIds.Submission + 0, Level = LogLevel.Information, Message = "Session {SessionId} queued {QueueId} for {Recipients} recipient(s), {Bytes} bytes")]
    public static partial void Queued(ILogger logger, string sessionId, string queueId, int recipients, long bytes);

    [LoggerMessage(EventId = EventIds.Submission + 1, Level = LogLevel.Error, Message = "Session {SessionId}: spool commit failed; answered 451")]
    public static partial void SpoolFailed(ILogger logger, string sessionId, Exception exception);

    [LoggerMessage(EventId = EventIds.Submission + 2, Level = LogLevel.Warning, Message = "Session {SessionId}: relay denied for {Client}")]
    public static partial void RelayDenied(ILogger logger, string sessionId, IPAddress client);

    [LoggerMessage(EventId = EventIds.Submission + 3, Level = LogLevel.Information, Message = "Session {SessionId} authenticated with {Mechanism} as tenant {Tenant}")]
    public static partial void Authenticated(ILogger logger, string sessionId, string mechanism, string tenant);

    [LoggerMessage(EventId = EventIds.Submission + 4, Level = LogLevel.Warning, Message = "Session {SessionId}: AUTH {Mechanism} failed from {Client}")]
    public static partial void AuthFailed(ILogger logger, string sessionId, string mechanism, IPAddress client);

    [LoggerMessage(EventId = EventIds.Submission + 5, Level = LogLevel.Error, Message = "Session {SessionId}: DKIM signing for tenant {Tenant} failed ({Reason}); answered 451, nothing queued")]
    public static partial void SigningFailed(ILogger logger, string sessionId, string tenant, string reason);

    [LoggerMessage(EventId = EventIds.Submission + 6, Level = LogLevel.Information, Message = "Session {SessionId}: removed header field(s) {Fields} (client-supplied tenant or delivery-path claims)")]
    public static partial void HeadersRemoved(ILogger logger, string sessionId, string fields);

    [LoggerMessage(EventId = EventIds.Submission + 7, Level = LogLevel.Error, Message = "Session {SessionId}: suppression list or return-path keys unreadable; answered 451")]
    public static partial void EnvelopeStateUnreadable(ILogger logger, string sessionId, Exception exception);

    [LoggerMessage(EventId = EventIds.Submission + 8, Level = LogLevel.Warning, Message = "Session {SessionId}: message {QueueId} refused: {Problem} ({Bytes} bytes in memory budget of {Capacity})")]
    public static partial void MessageNotTaken(ILogger logger, string sessionId, string queueId, IncomingProblem problem, long bytes, long capacity);

    [LoggerMessage(EventId = EventIds.Submission + 9, Level = LogLevel.Error, Message = "Session {SessionId}: AUTH {Mechanism} could not be checked ({Reason}); answered 454")]
    public static partial void AuthUnavailable(ILogger logger, string sessionId, string mechanism, string reason);

    [LoggerMessage(EventId = EventIds.Submission + 10, Level = LogLevel.Warning, Message = "Session {SessionId}: message {QueueId} refused as a mail loop: {Count} Received fields, more than {Limit}")]
    public static partial void LoopRefused(ILogger logger, string sessionId, string queueId, int count, int limit);

    [LoggerMessage(EventId = EventIds.Submission + 20, Level = LogLevel.Warning, Message = "Session {SessionId}: spool file system full, message {QueueId} not queued; answered 452 4.3.1 (accepting again once space is freed)")]
    public static partial void SpoolFull(ILogger logger, string sessionId, string queueId);
}
