using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Admin;

/// <summary>
/// What the admin API changed in the queue, suppression lists and vault (event ids 2550-2579), by whom (key id, never
/// the key). Names, ids and addresses only: a vault secret never reaches a log line.
/// </summary>
static partial class ResourceLog
{
    [LoggerMessage(EventId = EventIds.Admin + 50, Level = LogLevel.Information, Message = "Admin API: {Action} of queue id {QueueId} (tenant {Tenant}) by {Principal}: {Result}")]
    public static partial void Queue(ILogger logger, string action, string queueId, string tenant, string principal, string result);

    [LoggerMessage(EventId = EventIds.Admin + 51, Level = LogLevel.Information, Message = "Admin API: suppression {Action} of {Address} for tenant {Tenant} by {Principal}")]
    public static partial void Suppression(ILogger logger, string action, string address, string tenant, string principal);

    [LoggerMessage(EventId = EventIds.Admin + 52, Level = LogLevel.Information, Message = "Admin API: vault {Action} of {Credential} for tenant {Tenant} by {Principal}")]
    public static partial void Vault(ILogger logger, string action, string credential, string tenant, string principal);

    [LoggerMessage(EventId = EventIds.Admin + 53, Level = LogLevel.Warning, Message = "Admin API: vault {Action} for tenant {Tenant} failed: {Reason}")]
    public static partial void VaultFailed(ILogger logger, string action, string tenant, string reason);

    [LoggerMessage(EventId = EventIds.Admin + 54, Level = LogLevel.Warning, Message = "Admin API: {Area} {Action} for tenant {Tenant} failed: {Reason}")]
    public static partial void Failed(ILogger logger, string area, string action, string tenant, string reason);
}
