using SmtpGateway.Spool;

namespace SmtpGateway.Delivery;

/// <summary>Moves one spooled message one hop further. Chosen by DeliveryConfig.Mode.</summary>
public interface IDeliveryTransport
{
    /// <summary>
    /// Attempts <paramref name="message"/> for <paramref name="recipients"/> (the still-pending subset of its envelope).
    /// Returns exactly one result per recipient, in the same order. Remote refusals and network trouble are
    /// results, never exceptions; only cancellation of <paramref name="cancellationToken"/> throws.
    /// </summary>
    Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken);
}

/// <summary>
/// The SMTP transports (MX and smarthost) share one engine: return paths are set, and backoff is cleared, on it, whichever
/// transport carries it.
/// </summary>
internal interface IOutboundTransport
{
    OutboundDelivery Engine { get; }
}
