using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Admin;

/// <summary>
/// Readiness events (ids 2530-2539), written when a check changes state rather than on every probe, so a load balancer
/// polling a broken gateway does not fill the log. The details /readyz keeps from anonymous callers (paths, tenant ids,
/// PKCS#11 return values) are here, for the operator; never a PIN.
/// </summary>
internal static partial class HealthLog
{
    [LoggerMessage(EventId = EventIds.Admin + 30, Level = LogLevel.Warning, Message = "Not ready: spool directory {Directory} is not writable ({Reason})")]
    public static partial void SpoolNotWritable(ILogger logger, string directory, string reason);

    [LoggerMessage(EventId = EventIds.Admin + 31, Level = LogLevel.Warning, Message = "Not ready: tenant {Tenant}'s HSM token is not usable ({Reason})")]
    public static partial void TokenNotUsable(ILogger logger, string tenant, string reason);

    [LoggerMessage(EventId = EventIds.Admin + 32, Level = LogLevel.Warning, Message = "Not ready: the DNS resolver does not answer ({Reason})")]
    public static partial void DnsNotAnswering(ILogger logger, string reason);

    [LoggerMessage(EventId = EventIds.Admin + 33, Level = LogLevel.Information, Message = "Ready again: {Check}")]
    public static partial void Recovered(ILogger logger, string check);
}
