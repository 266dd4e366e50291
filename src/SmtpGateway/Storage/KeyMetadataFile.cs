using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace SmtpGateway.Storage;

/// <summary>
/// The file operations shared by the per-tenant key metadata files (identity/keys, verp): atomic replacement with
/// owner-only permissions, a cross-process lock for read-modify-write, and shredding of a replaced file whose bytes held
/// plaintext key material (the legacy format, before the keys moved into the tenants' HSM tokens).
/// </summary>
internal static class KeyMetadataFile
{
    const UnixFileMode OwnerReadWrite = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>
    /// Writes <paramref name="content"/> to <paramref name="path"/> through a temp file (mode 0600, fsynced, renamed).
    /// With <paramref name="overwrite"/> false an existing file wins and the temp file is removed. With
    /// <paramref name="shredReplaced"/> the file being replaced is kept open across the rename and its bytes are then
    /// overwritten with zeros and fsynced: the rename alone would leave the old plaintext in the freed blocks.
    /// </summary>
    public static void Write(string path, ReadOnlySpan<byte> content, bool overwrite = true, bool shredReplaced = false)
    {
        var tmp = path + "." + Guid.NewGuid().ToString("N") + ".tmp";
        using (var stream = new FileStream(tmp, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = OwnerReadWrite }))
        {
            stream.Write(content);
            stream.Flush(flushToDisk: true);
        }

        // Opened before the rename, so the old inode stays reachable for the overwrite after the name points elsewhere.
        using var replaced = shredReplaced && File.Exists(path) ? new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete) : null;
        try
        {
            File.Move(tmp, path, overwrite);
        }
        catch (IOException) when (!overwrite && File.Exists(path))
        {
            File.Delete(tmp);
            return;
        }

        if (replaced is not null)
        {
            Zero(replaced);
        }
    }

    /// <summary>
    /// The file's content, or null when there is none. A legacy file's bytes hold plaintext keys, so the read buffer is
    /// zeroed rather than left for the GC to keep around.
    /// </summary>
    public static T? Read<T>(string path, JsonTypeInfo<T> type)
        where T : class
    {
        if (!File.Exists(path))
        {
            return null;
        }

        var bytes = File.ReadAllBytes(path);
        try
        {
            return JsonSerializer.Deserialize(bytes, type);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(bytes);
        }
    }

    /// <summary>Overwrites a file with zeros, fsyncs it, then deletes it (leftover temp files of the legacy format).</summary>
    public static void ShredAndDelete(string path)
    {
        using (var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete))
        {
            Zero(file);
        }

        File.Delete(path);
    }

    /// <summary>
    /// An exclusive lock shared with every other process using this data directory (the gateway and the CLI): .NET takes
    /// flock(2) for FileShare.None on Unix. Held only for a read-modify-write of a key file.
    /// </summary>
    public static FileStream Lock(string path, TimeProvider time, TimeSpan timeout)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        return CrossProcessLock.Acquire(path, timeout, time);
    }

    static void Zero(FileStream file)
    {
        var zeros = new byte[Math.Min(file.Length, 64 * 1024)];
        var left = file.Length;
        file.Position = 0;
        while (left > 0)
        {
            var n = (int)Math.Min(left, zeros.Length);
            file.Write(zeros, 0, n);
            left -= n;
        }

        file.Flush(flushToDisk: true);
    }
}
