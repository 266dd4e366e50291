using System.Buffers;

namespace SmtpGateway.Spool;

/// <summary>What the Listener hands to the Spool at end of DATA: the envelope as accepted.</summary>
/// <param name="Id">Queue id, from <see cref="IMessageSpool.NewId"/>; shown to the client in "250 2.0.0 Ok: queued as &lt;id&gt;".</param>
/// <param name="TenantId">Tenant the session acts for; null until tenant identity lands (delivered under "default").</param>
/// <param name="MailFrom">Envelope sender as given (empty string for the null sender &lt;&gt;).</param>
/// <param name="Recipients">Envelope recipients in RCPT order.</param>
/// <param name="Inbound">Accepted from an unauthenticated client for a tenant's own domain (not sent by the tenant).</param>
public sealed record SpoolEnvelope(
    string Id,
    string? TenantId,
    string MailFrom,
    IReadOnlyList<string> Recipients,
    DateTimeOffset ReceivedAt,
    string ClientAddress,
    string Listener,
    bool SmtpUtf8,
    bool EightBitMime,
    bool Inbound = false);

/// <summary>Durable message store. The Listener answers 250 only after <see cref="CommitAsync"/> completes.</summary>
public interface IMessageSpool
{
    /// <summary>A new unique, sortable, file-name-safe queue id.</summary>
    string NewId();

    /// <summary>
    /// Stores message and envelope on stable storage (file and directory fsynced) before returning.
    /// Throws <see cref="SpoolWriteException"/> on any I/O failure; nothing partial is ever delivered.
    /// </summary>
    Task CommitAsync(SpoolEnvelope envelope, ReadOnlySequence<byte> message, CancellationToken cancellationToken);
}

/// <summary>Transient failure to store a message; the Listener answers 451 4.3.0.</summary>
public sealed class SpoolWriteException(string message, Exception? inner = null) : Exception(message, inner);
