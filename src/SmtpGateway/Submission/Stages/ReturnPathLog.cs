using System.Net;
using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Submission.Stages;

/// <summary>Return-path check events of the Policy stage (ids Envelope+30..34: they guard the Envelope stage's keys).</summary>
static partial class ReturnPathLog
{
    [LoggerMessage(EventId = EventIds.Envelope + 30, Level = LogLevel.Warning, Message = "Session {SessionId}: too many return-path addresses with a bad tag from {Client} (bounce domain of tenant {Tenant}); its RCPTs to return paths get 450 4.7.1 without a check for a while")]
    public static partial void ChecksThrottled(ILogger logger, string sessionId, IPAddress client, string tenant);
}
