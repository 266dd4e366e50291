namespace SmtpGateway.Spool;

/// <summary>Operator access for the queue tools (`smtpgw queue show|delete`): read-only lookups and removal.</summary>
public sealed partial class FileSpool
{
    /// <summary>The message <paramref name="id"/> from queue/ or failed/ with its state, read-only (nothing is moved aside); null when absent or unreadable.</summary>
    internal (SpoolEntry Entry, SpooledMessage Message)? Peek(string id)
    {
        if (!IsValidId(id))
        {
            return null;
        }

        foreach (var (area, directory, stateDirectory) in new[] { (SpoolArea.Queue, _queue, _state), (SpoolArea.Failed, _failed, _failed) })
        {
            var path = Path.Combine(directory, id);
            try
            {
                using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1);
                var header = SpoolFileFormat.ReadHeader(stream, out var offset, out var length);
                var state = ReadStateQuietly(Path.Combine(stateDirectory, id + StateSuffix), header.Envelope);
                return (new SpoolEntry(id, area, header.Envelope, state, length),
                    new SpooledMessage(path, offset, length, header.Envelope, header.EightBitData, state));
            }
            catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
            {
            }
            catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException)
            {
                return null;
            }
        }

        return null;
    }

    /// <summary>
    /// Removes <paramref name="id"/> with its state from queue/ or failed/; returns the area it was in, or null when it was in neither.
    /// The message first, then its state: a crash in between leaves an orphan state, which recovery removes.
    /// </summary>
    internal SpoolArea? Delete(string id)
    {
        if (!IsValidId(id))
        {
            return null;
        }

        var queued = Path.Combine(_queue, id);
        if (File.Exists(queued))
        {
            File.Delete(queued);
            TryDelete(Path.Combine(_state, id + StateSuffix));
            _tenantById.TryRemove(id, out _);
            Forget(id);
            SpoolMetrics.Dequeued(id);
            return SpoolArea.Queue;
        }

        var failed = Path.Combine(_failed, id);
        if (File.Exists(failed))
        {
            File.Delete(failed);
            TryDelete(Path.Combine(_failed, id + StateSuffix));
            return SpoolArea.Failed;
        }

        return null;
    }
}
