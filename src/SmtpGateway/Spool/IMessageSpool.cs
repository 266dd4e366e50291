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

/// <summary>Durable message store. The Listener answers 250 only after <see cref="CommitAsync(SpoolEnvelope, MessageContent, CancellationToken)"/> completes.</summary>
public interface IMessageSpool
{
    /// <summary>A new unique, sortable, file-name-safe queue id.</summary>
    string NewId();

    /// <summary>
    /// Stores message and envelope on stable storage (file and directory fsynced) before returning.
    /// Throws <see cref="SpoolWriteException"/> on any I/O failure; nothing partial is ever delivered.
    /// </summary>
    Task CommitAsync(SpoolEnvelope envelope, ReadOnlySequence<byte> message, CancellationToken cancellationToken) =>
        CommitAsync(envelope, new MessageContent([message]), cancellationToken);

    /// <summary>As above, for a message in parts: octets in memory, then optionally a tail that streams from a scratch file.</summary>
    Task CommitAsync(SpoolEnvelope envelope, MessageContent content, CancellationToken cancellationToken);

    /// <summary>
    /// A scratch file for a message that is still arriving: owner-only, deleted when closed, and beside the spool so that
    /// the copy into the queue stays on one file system. Whatever a crash leaves of it is removed at the next start.
    /// </summary>
    FileStream CreateScratchFile() => ScratchFile.Create(Path.GetTempPath());
}

/// <summary>
/// A message to commit: <paramref name="Parts"/> in order (trace and signature fields, header section, in-memory body), then
/// <paramref name="Tail"/>, a readable stream of <paramref name="TailLength"/> octets from its current position (the body's
/// spilled rest), when there is one. <paramref name="TailEightBit"/> says whether the tail has octets over 127, so nobody has to
/// read it twice to find out.
/// </summary>
public sealed record MessageContent(IReadOnlyList<ReadOnlySequence<byte>> Parts, Stream? Tail = null, long TailLength = 0, bool TailEightBit = false)
{
    public long Length
    {
        get
        {
            var length = TailLength;
            foreach (var part in Parts)
            {
                length += part.Length;
            }

            return length;
        }
    }

    public bool EightBit
    {
        get
        {
            if (TailEightBit)
            {
                return true;
            }

            foreach (var part in Parts)
            {
                foreach (var segment in part)
                {
                    if (segment.Span.IndexOfAnyInRange((byte)0x80, (byte)0xFF) >= 0)
                    {
                        return true;
                    }
                }
            }

            return false;
        }
    }

    /// <summary>Writes every octet to <paramref name="destination"/>; the tail is copied in bounded chunks.</summary>
    public async Task WriteToAsync(Stream destination, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(destination);
        foreach (var part in Parts)
        {
            foreach (var segment in part)
            {
                await destination.WriteAsync(segment, cancellationToken).ConfigureAwait(false);
            }
        }

        if (Tail is null)
        {
            return;
        }

        var buffer = ArrayPool<byte>.Shared.Rent(81920);
        try
        {
            var left = TailLength;
            while (left > 0)
            {
                var n = await Tail.ReadAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, left)), cancellationToken).ConfigureAwait(false);
                if (n == 0)
                {
                    throw new IOException($"Scratch file ended {left} octets early.");
                }

                await destination.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                left -= n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>The whole message as one array (tests and small in-memory consumers only).</summary>
    public byte[] ToArray()
    {
        using var memory = new MemoryStream();
        WriteToAsync(memory, CancellationToken.None).GetAwaiter().GetResult();
        return memory.ToArray();
    }
}

/// <summary>Owner-only scratch files that vanish when closed.</summary>
public static class ScratchFile
{
    public static FileStream Create(string directory) => new(
        Path.Combine(directory, $"scratch-{Guid.NewGuid():N}.part"),
        new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.ReadWrite,
            Share = FileShare.None,
            BufferSize = 64 * 1024,
            Options = FileOptions.DeleteOnClose,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        });
}

/// <summary>Transient failure to store a message; the Listener answers 451 4.3.0.</summary>
public sealed class SpoolWriteException(string message, Exception? inner = null) : Exception(message, inner);
