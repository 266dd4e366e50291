using System.Text.Json;
using SmtpGateway.Spool;
using SmtpGateway.Storage;

namespace SmtpGateway.Vault;

/// <summary>
/// The vault's files: DataDirectory/vault/&lt;tenant&gt;.json, mode 0600 in a 0700 directory, replaced atomically
/// (temp file, fsync, rename, fsync of the directory) under a cross-process lock, so the CLI can write while the gateway
/// runs. Reads are cached and re-checked against the file's time and length, as VerpKeyStore does.
/// </summary>
internal sealed class VaultStore
{
    const UnixFileMode DirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    const UnixFileMode FileMode600 = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    readonly TimeProvider _time;
    readonly Lock _cacheLock = new();
    readonly Dictionary<string, ((DateTime, long) Stamp, VaultDocument Document, long CheckedAt)> _cache = new(StringComparer.Ordinal);

    public VaultStore(string dataDirectory, TimeProvider time)
    {
        Directory = Path.Combine(dataDirectory, "vault");
        _time = time;
    }

    public string Directory { get; }

    /// <summary>How often a cached file is checked for a change on disk (on the injected clock).</summary>
    public TimeSpan RefreshInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>How long a write waits for another process's lock before it gives up.</summary>
    public TimeSpan LockTimeout { get; init; } = TimeSpan.FromSeconds(10);

    public string PathFor(string tenant) => Path.Combine(Directory, CheckTenant(tenant) + ".json");

    /// <summary>Tenants that have a vault file (for the sweep).</summary>
    public IEnumerable<string> Tenants() =>
        System.IO.Directory.Exists(Directory)
            ? System.IO.Directory.EnumerateFiles(Directory, "*.json").Select(Path.GetFileNameWithoutExtension).OfType<string>()
            : [];

    /// <summary>The tenant's document, from the cache when the file has not changed; Empty when there is no file.</summary>
    public VaultDocument Cached(string tenant)
    {
        var path = PathFor(tenant);
        lock (_cacheLock)
        {
            var tick = _time.GetTimestamp();
            if (_cache.TryGetValue(tenant, out var cached) && _time.GetElapsedTime(cached.CheckedAt, tick) < RefreshInterval)
            {
                return cached.Document;
            }

            // Time and length: a write within one timestamp tick (coarse file systems) still changes the length.
            var stamp = Stamp(path);
            var document = cached.Document is not null && stamp == cached.Stamp ? cached.Document : Load(tenant);
            _cache[tenant] = (stamp, document, tick);
            return document;
        }
    }

    /// <summary>The tenant's document as it is on disk now.</summary>
    public VaultDocument Load(string tenant)
    {
        var path = PathFor(tenant);
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (FileNotFoundException)
        {
            return VaultDocument.Empty;
        }
        catch (DirectoryNotFoundException)
        {
            return VaultDocument.Empty;
        }

        try
        {
            return Checked(JsonSerializer.Deserialize(bytes, VaultJsonContext.Default.VaultDocument), path);
        }
        catch (JsonException ex)
        {
            // The message names the file, never its content.
            throw new InvalidDataException($"vault file '{path}' is damaged", ex);
        }
    }

    /// <summary>
    /// The document if its shape is whole: a hand-edited or damaged file (null lists or entries, missing fields, versions
    /// below 1) is refused here as damaged, so no later step meets a null and fails with an exception no caller expects
    /// (the sweep would stop the host; a delivery would be retried without being recorded).
    /// </summary>
    static VaultDocument Checked(VaultDocument? document, string path)
    {
        if (document is null)
        {
            return VaultDocument.Empty;
        }

        var whole = document.Credentials is not null
            && (document.DataKey is null || (document.DataKey.Kek is { Length: > 0 } && document.DataKey.Ciphertext is { Length: > 0 }))
            && document.Credentials.All(c => c is { Name.Length: > 0, Versions: not null }
                && c.Versions.All(v => v is { Version: > 0, UserName: not null, Ciphertext.Length: > 0 } && (v.Access is null || v.Access.Ciphertext is { Length: > 0 })));
        return whole ? document : throw new InvalidDataException($"vault file '{path}' is damaged (a credential, version or key is incomplete)");
    }

    /// <summary>Runs a read-modify-write of the tenant's file under the cross-process lock; <paramref name="change"/>
    /// returns the new document, or the one it was given to write nothing.</summary>
    public T Update<T>(string tenant, Func<VaultDocument, (VaultDocument Document, T Result)> change)
    {
        EnsureDirectory();
        using var fileLock = CrossProcessLock.Acquire(Path.Combine(Directory, CheckTenant(tenant) + ".lock"), LockTimeout, _time);
        var before = Load(tenant);
        var (after, result) = change(before);
        if (!ReferenceEquals(before, after))
        {
            Save(tenant, after);
        }

        lock (_cacheLock)
        {
            _cache.Remove(tenant);
        }

        return result;
    }

    void Save(string tenant, VaultDocument document)
    {
        var path = PathFor(tenant);
        var tmp = path + "." + Guid.NewGuid().ToString("N") + ".tmp";
        try
        {
            using (var stream = new FileStream(tmp, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = FileMode600 }))
            {
                JsonSerializer.Serialize(stream, document, VaultJsonContext.Default.VaultDocument);
                stream.Flush(flushToDisk: true);
            }

            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            // Only after a failure is the temp file still there.
            File.Delete(tmp);
        }

        // The rename is durable only once the directory is synced: a crash must not bring back a destroyed version.
        DurableFile.SyncDirectory(Directory);
    }

    void EnsureDirectory()
    {
        System.IO.Directory.CreateDirectory(Directory, DirectoryMode);
        // An existing directory keeps its mode through CreateDirectory: tighten one made wider by hand or by an old version.
        if ((File.GetUnixFileMode(Directory) & ~DirectoryMode) != 0)
        {
            File.SetUnixFileMode(Directory, DirectoryMode);
        }
    }

    static (DateTime, long) Stamp(string path)
    {
        var info = new FileInfo(path);
        return info.Exists ? (info.LastWriteTimeUtc, info.Length) : (DateTime.MinValue, -1);
    }

    /// <summary>Tenant ids come from the configuration, but they name a file here: nothing that could leave the directory.</summary>
    static string CheckTenant(string tenant) =>
        tenant.Length is > 0 and <= 128 && tenant[0] != '.' && tenant.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')
            ? tenant
            : throw new ArgumentException($"'{tenant}' is not a tenant id the vault can store", nameof(tenant));
}
