using System.Text.Json.Serialization;

namespace SmtpGateway.Spool;

/// <summary>Where one recipient of a spooled message stands.</summary>
public enum RecipientStatus
{
    /// <summary>Not yet attempted, or deferred (4xx / network error) and waiting for the next attempt.</summary>
    Pending,

    /// <summary>Accepted by the next hop (2xx after the final dot, RFC 5321 section 4.2.1). Done.</summary>
    Delivered,

    /// <summary>Permanently refused (5xx), or still deferred when the message outlived RetryConfig.MaxAge. Done; kept for bounces.</summary>
    Failed,
}

/// <summary>Per-recipient delivery state.</summary>
/// <param name="Address">Envelope recipient as accepted in RCPT TO.</param>
/// <param name="Status">Current status.</param>
/// <param name="LastReply">Last reply seen for this recipient, e.g. "450 4.2.0 Mailbox busy". A <see cref="RecipientStatus.Failed"/>
/// recipient whose last reply is 4xx failed because the message expired (RFC 3464 status 4.4.7).</param>
/// <param name="UpdatedAt">When <paramref name="Status"/> or <paramref name="LastReply"/> last changed.</param>
public sealed record RecipientState(
    string Address,
    RecipientStatus Status,
    string? LastReply = null,
    DateTimeOffset? UpdatedAt = null);

/// <summary>
/// Delivery state of one queued message, persisted next to it (state/&lt;id&gt;.json) so that retries survive a restart.
/// A message without a state file has never been attempted: its state is <see cref="Initial"/>.
/// </summary>
/// <param name="Id">Queue id.</param>
/// <param name="Attempts">Delivery attempts made so far.</param>
/// <param name="NextAttemptAt">Not before this time is the next attempt made (durable schedule).</param>
/// <param name="LastAttemptAt">When the last attempt ended; null before the first.</param>
/// <param name="Recipients">One entry per envelope recipient, in RCPT order.</param>
public sealed record DeliveryState(
    string Id,
    int Attempts,
    DateTimeOffset NextAttemptAt,
    DateTimeOffset? LastAttemptAt,
    IReadOnlyList<RecipientState> Recipients)
{
    /// <summary>
    /// Time the message spent held while its tenant was paused (issue #7). The retry period (Retry:MaxAge) counts from
    /// arrival plus this, so a message held for days is not expired by its first attempt after the pause is lifted.
    /// </summary>
    public TimeSpan HeldFor { get; init; }

    /// <summary>True when no recipient is pending: the message can leave the queue.</summary>
    [JsonIgnore]
    public bool IsComplete => Recipients.All(r => r.Status != RecipientStatus.Pending);

    /// <summary>True when at least one recipient failed (the message goes to failed/ rather than being deleted).</summary>
    [JsonIgnore]
    public bool AnyFailed => Recipients.Any(r => r.Status == RecipientStatus.Failed);

    /// <summary>State of a message that has not been attempted yet: every recipient pending, due at once.</summary>
    public static DeliveryState Initial(SpoolEnvelope envelope)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        return new DeliveryState(
            envelope.Id,
            Attempts: 0,
            NextAttemptAt: envelope.ReceivedAt,
            LastAttemptAt: null,
            envelope.Recipients.Select(r => new RecipientState(r, RecipientStatus.Pending)).ToArray());
    }

    /// <summary>True when this state belongs to <paramref name="envelope"/> (same id, same recipients in the same order).</summary>
    internal bool Matches(SpoolEnvelope envelope) =>
        Id == envelope.Id
        && Recipients.Count == envelope.Recipients.Count
        && Recipients.Select(r => r.Address).SequenceEqual(envelope.Recipients, StringComparer.Ordinal);
}
