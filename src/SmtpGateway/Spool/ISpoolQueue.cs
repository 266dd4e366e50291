using System.Threading.Channels;

namespace SmtpGateway.Spool;

/// <summary>Which part of the spool a listing reads.</summary>
public enum SpoolArea
{
    /// <summary>queue/: messages with at least one recipient still pending.</summary>
    Queue,

    /// <summary>failed/: finished messages with at least one failed recipient, kept for inspection and bounces.</summary>
    Failed,
}

/// <summary>
/// The queue side of the spool: what Delivery and the queue tools use. Ids flow through <see cref="Ready"/>;
/// the state file is the durable truth, so a stale or duplicate id in <see cref="Ready"/> is harmless
/// (the consumer re-checks <see cref="DeliveryState.NextAttemptAt"/> and skips ids it is already working on).
/// </summary>
public interface ISpoolQueue
{
    /// <summary>Ids of messages due for a delivery attempt. Fed by commits, by recovery and by elapsed retry times.</summary>
    ChannelReader<string> Ready { get; }

    /// <summary>Loads a queued message with its delivery state; null when it is no longer in the queue (finished, removed, or found corrupt and moved aside).</summary>
    /// <param name="id">The queue id.</param>
    /// <param name="cancellationToken">Cancels the load.</param>
    /// <param name="forDelivery">
    /// True when the content is about to be sent: a small message is then read whole at once (see
    /// <see cref="SpooledMessage.InMemoryLimit"/>). Loads for the state alone (release, retry) leave the content on disk.
    /// </param>
    Task<SpooledMessage?> LoadAsync(string id, CancellationToken cancellationToken, bool forDelivery = false);

    /// <summary>
    /// Persists <paramref name="state"/> atomically. When no recipient is pending the message leaves the queue:
    /// deleted when every recipient was delivered, otherwise moved with its state to failed/.
    /// When some are pending the message is scheduled for <see cref="DeliveryState.NextAttemptAt"/>.
    /// </summary>
    Task SaveAsync(DeliveryState state, CancellationToken cancellationToken);

    /// <summary>Puts <paramref name="id"/> on <see cref="Ready"/> at <paramref name="due"/> (at once if already due). In memory only; see <see cref="SaveAsync"/> for the durable schedule.</summary>
    void Schedule(string id, DateTimeOffset due);

    /// <summary>Read-only snapshot of an area, oldest id first. Corrupt files are skipped.</summary>
    IReadOnlyList<SpoolEntry> List(SpoolArea area);

    /// <summary>
    /// The tenant of a queued message, from memory (no disk read), so that Delivery can serve ready ids per tenant in turn;
    /// null when not known (the message left the queue, or the tenant is the default one). A hint for scheduling only.
    /// </summary>
    string? TenantOf(string id);
}

/// <summary>One message in a listing.</summary>
public sealed record SpoolEntry(string Id, SpoolArea Area, SpoolEnvelope Envelope, DeliveryState State, long Size);

/// <summary>
/// A queued message as Delivery sees it. A large one stays on disk and <see cref="OpenContent"/> streams it; one of at
/// most <see cref="InMemoryLimit"/> bytes was read whole when loaded and is served from memory.
/// </summary>
public sealed class SpooledMessage
{
    /// <summary>
    /// Spool files up to this size are read into memory when loaded for delivery (or kept from the commit for the first
    /// load, FileSpool._committed). Below the large-object heap's 85,000 bytes, so the copy is a small-object allocation
    /// that dies young (a kept one lives until its first delivery), and it covers most mail: the bench's 4 KiB messages
    /// and typical transactional mail of tens of KiB.
    /// </summary>
    internal const long InMemoryLimit = 64 * 1024;

    readonly string _path;
    readonly long _contentOffset;
    readonly byte[]? _file;

    internal SpooledMessage(string path, long contentOffset, long length, SpoolEnvelope envelope, bool eightBitData, DeliveryState state, byte[]? file = null)
    {
        _path = path;
        _file = file;
        _contentOffset = contentOffset;
        Length = length;
        Envelope = envelope;
        EightBitData = eightBitData;
        State = state;
    }

    public SpoolEnvelope Envelope { get; }

    public DeliveryState State { get; }

    /// <summary>Size of the message content in bytes.</summary>
    public long Length { get; }

    /// <summary>True when the content has an octet above 127 (relaying it needs BODY=8BITMIME, RFC 6152).</summary>
    public bool EightBitData { get; }

    /// <summary>The whole content when it was read at load (see <see cref="InMemoryLimit"/>); empty otherwise.</summary>
    internal ReadOnlyMemory<byte> Content => _file is null ? default : _file.AsMemory((int)_contentOffset, (int)Length);

    /// <summary>True when <see cref="Content"/> holds the message.</summary>
    internal bool InMemory => _file is not null;

    /// <summary>Opens the message content, exactly as received, positioned at its first byte; it ends at the end of the stream.</summary>
    public Stream OpenContent()
    {
        if (_file is not null)
        {
            return new MemoryStream(_file, (int)_contentOffset, (int)Length, writable: false);
        }

        var stream = new FileStream(_path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 81920,
            FileOptions.Asynchronous | FileOptions.SequentialScan);
        try
        {
            stream.Position = _contentOffset;
            return stream;
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }
}
