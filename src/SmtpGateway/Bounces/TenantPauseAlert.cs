using System.Globalization;
using Microsoft.Extensions.Logging;
using SmtpGateway.Audit;
using SmtpGateway.Delivery;

namespace SmtpGateway.Bounces;

/// <summary>
/// The alert when <see cref="ReputationTracker"/> pauses a tenant: a log warning for the operator, an audit event, and a
/// line in the tenant's own event log that says why its mail is held and how to resume it.
/// </summary>
public sealed partial class TenantPauseAlert
{
    readonly ILogger _logger;
    readonly IAuditLog _audit;
    readonly DeliveryEvents _events;

    public TenantPauseAlert(ILogger logger, IAuditLog audit, DeliveryEvents events)
    {
        _logger = logger;
        _audit = audit;
        _events = events;
    }

    /// <summary>Raises the alert for <paramref name="pause"/> (ReputationTracker's pause callback).</summary>
    public void Raise(TenantPause pause)
    {
        ArgumentNullException.ThrowIfNull(pause);
        Log.TenantPaused(_logger, pause.Tenant, pause.Rate, pause.Threshold);
        _audit.Write(new AuditEvent
        {
            Action = "tenant-pause", Result = "paused", Tenant = pause.Tenant, Listener = "delivery",
            Reason = string.Create(CultureInfo.InvariantCulture, $"bounce rate {pause.Rate * 100:0.0}% over {pause.Threshold * 100:0.0}%"),
        });
        _events.Log?.Write(new DeliveryEvent
        {
            Time = pause.At, Event = "paused", Id = "", Tenant = pause.Tenant, From = "", Recipient = "",
            Reply = string.Create(CultureInfo.InvariantCulture,
                $"outbound queue held: bounce rate {pause.Rate * 100:0.0}% ({pause.Bounced} bounced, {pause.Complained} complained, {pause.Delivered} delivered) over {pause.Threshold * 100:0.0}%; resume with: smtpgw queue resume --tenant {pause.Tenant}"),
            Attempt = 0,
        });
    }

    static partial class Log
    {
        [LoggerMessage(EventId = Diagnostics.EventIds.Bounces + 10, Level = LogLevel.Warning,
            Message = "Tenant {TenantId} paused: bounce rate {Rate} is over its threshold {Threshold}; its outbound queue is held until `smtpgw queue resume --tenant {TenantId}`")]
        public static partial void TenantPaused(ILogger logger, string tenantId, double rate, double threshold);
    }
}
