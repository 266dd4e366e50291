using SmtpGateway.Delivery;

namespace SmtpGateway.Bounces;

/// <summary>
/// Reports a recipient refused at RCPT because it is on the tenant's suppression list: the refusal counter, and a
/// "suppressed" line in the tenant's event log so the tenant can see why that address got no mail.
/// </summary>
/// <param name="events">The tenants' event logs.</param>
/// <param name="time">Clock.</param>
/// <param name="reply">The reply the session gave (the policy's suppression refusal), recorded as the event's reply.</param>
public sealed class SuppressedRecipientEvents(DeliveryEvents events, TimeProvider time, string reply)
{
    /// <summary>One refused recipient; the shape of the session's SuppressedRecipient callback (tenant, recipient, session id).</summary>
    public void Write(string tenant, string recipient, string session)
    {
        BounceMetrics.Refused(tenant);
        events.Log?.Write(new DeliveryEvent
        {
            Time = time.GetUtcNow(), Event = "suppressed", Id = session, Tenant = tenant, From = "", Recipient = recipient,
            Reply = reply, Attempt = 0,
        });
    }
}
