using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace SmtpGateway.Envelope;

/// <summary>One version of a tenant's return-path key. Its id is one character of the tag, so a bounce names the key it needs.</summary>
public sealed record VerpKey(char Id, string Secret, DateTimeOffset Created, DateTimeOffset? RetiresAt)
{
    [JsonIgnore]
    public byte[] SecretBytes => Convert.FromBase64String(Secret);

    // Never print the key material, whatever formats this record.
    public override string ToString() => $"VerpKey {{ Id = {Id}, Created = {Created:O}, RetiresAt = {RetiresAt:O} }}";
}

public sealed record VerpKeyFile(List<VerpKey> Keys);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(VerpKeyFile))]
internal sealed partial class VerpJsonContext : JsonSerializerContext;

/// <summary>
/// Per-tenant return-path keys under DataDirectory/verp/&lt;tenant&gt;.json (mode 0600). A key is made on first use;
/// `smtpgw verp rotate-key` adds a new one and keeps the old one valid for a grace period, because bounces and
/// complaints arrive days after the message (RFC 5321 section 4.5.4.1 retries for 4-5 days; feedback loops later still).
/// The file is re-read when its timestamp changes, so a rotation by the CLI reaches a running gateway.
/// </summary>
public sealed class VerpKeyStore
{
    const string KeyIds = "abcdefghijklmnopqrstuvwxyz0123456789";
    readonly string _directory;
    readonly TimeProvider _time;
    readonly Lock _lock = new();
    readonly Dictionary<string, ((DateTime, long) Stamp, IReadOnlyList<VerpKey> Keys, long CheckedAt)> _cache = new(StringComparer.Ordinal);

    public VerpKeyStore(string dataDirectory, TimeProvider time)
    {
        _directory = Path.Combine(dataDirectory, "verp");
        _time = time;
    }

    /// <summary>How often a cached key file is checked for a change on disk (on the injected clock).</summary>
    public TimeSpan RefreshInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>How long a key rotation waits for another process's lock on the key file before it gives up.</summary>
    public TimeSpan LockTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Real pause between attempts to take the cross-process lock.</summary>
    static readonly TimeSpan LockRetryPause = TimeSpan.FromMilliseconds(20);

    string PathFor(string tenant) => Path.Combine(_directory, tenant + ".json");

    /// <summary>The key new tags are made with (created when the tenant has none).</summary>
    public VerpKey Current(string tenant)
    {
        var keys = Keys(tenant);
        var now = _time.GetUtcNow();
        return keys.Where(k => k.RetiresAt is null || k.RetiresAt > now).MaxBy(k => k.Created) ?? keys[^1];
    }

    /// <summary>The key with <paramref name="id"/> if it still verifies tags (not past its retirement).</summary>
    public VerpKey? Find(string tenant, char id)
    {
        var now = _time.GetUtcNow();
        return Keys(tenant).FirstOrDefault(k => k.Id == id && (k.RetiresAt is null || k.RetiresAt > now));
    }

    /// <summary>Adds a new current key; the previous ones verify for <paramref name="grace"/> more.</summary>
    public VerpKey Rotate(string tenant, TimeSpan grace)
    {
        lock (_lock)
        {
            using var fileLock = LockFile(tenant);
            var now = _time.GetUtcNow();
            var keys = Load(tenant)?.Keys ?? [];
            var retiring = now + grace;
            var kept = keys.Where(k => k.RetiresAt is null || k.RetiresAt > now)
                .Select(k => k.RetiresAt is null || k.RetiresAt > retiring ? k with { RetiresAt = retiring } : k).ToList();
            var free = KeyIds.Where(c => kept.All(k => k.Id != c)).ToList();
            if (free.Count == 0)
            {
                // A key id is one character of the tag: at most 36 keys can be valid at once.
                throw new IOException($"tenant '{tenant}' has {kept.Count} return-path keys still in their grace period; rotate again after the oldest retires");
            }

            var id = free[0];
            var key = NewKey(id, now);
            kept.Add(key);
            Save(tenant, new VerpKeyFile(kept), overwrite: true);
            _cache.Remove(tenant);
            return key;
        }
    }

    IReadOnlyList<VerpKey> Keys(string tenant)
    {
        lock (_lock)
        {
            var path = PathFor(tenant);
            var tick = _time.GetTimestamp();
            if (_cache.TryGetValue(tenant, out var cached) && _time.GetElapsedTime(cached.CheckedAt, tick) < RefreshInterval)
            {
                return cached.Keys;
            }

            // Time and length: a rotation within one timestamp tick (coarse file systems) still changes the length.
            var stamp = Stamp(path);
            if (cached.Keys is not null && stamp == cached.Stamp)
            {
                _cache[tenant] = cached with { CheckedAt = tick };
                return cached.Keys;
            }

            var file = Load(tenant);
            if (file is null || file.Keys.Count == 0)
            {
                // First use: create the key, under the same cross-process lock as a rotation, so that a `verp rotate-key`
                // at this instant cannot replace the key this process is about to make tags with.
                using var fileLock = LockFile(tenant);
                file = Load(tenant);
                if (file is null || file.Keys.Count == 0)
                {
                    Save(tenant, new VerpKeyFile([NewKey('a', _time.GetUtcNow())]), overwrite: false);
                    file = Load(tenant) ?? throw new IOException($"cannot read the return-path key file of tenant '{tenant}'");
                }

                stamp = Stamp(path);
            }

            _cache[tenant] = (stamp, file.Keys, tick);
            return file.Keys;
        }
    }

    /// <summary>
    /// An exclusive lock shared with every other process using this data directory (the gateway and the CLI): .NET takes
    /// flock(2) for FileShare.None on Unix. Held only for a read-modify-write of the key file.
    /// </summary>
    FileStream LockFile(string tenant)
    {
        Directory.CreateDirectory(_directory);
        var path = Path.Combine(_directory, tenant + ".lock");
        // The holder is another process (the CLI, a second gateway) that works in real time and .NET offers no flock(2)
        // with a timeout, so the pause between attempts is a real Thread.Sleep: a TimeProvider timer would never fire
        // under a test's frozen clock. The deadline comes from the TimeProvider like every other time limit here, and
        // the attempts are bounded as well (LockTimeout / LockRetryPause), so a frozen fake clock cannot make a stuck
        // lock wait forever.
        var start = _time.GetTimestamp();
        var attemptsLeft = (int)Math.Max(1, LockTimeout / LockRetryPause);
        while (true)
        {
            try
            {
                return new FileStream(path, new FileStreamOptions
                {
                    Mode = FileMode.OpenOrCreate,
                    Access = FileAccess.ReadWrite,
                    Share = FileShare.None,
                    UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
                });
            }
            catch (IOException) when (--attemptsLeft > 0 && _time.GetElapsedTime(start) < LockTimeout)
            {
                Thread.Sleep(LockRetryPause);
            }
        }
    }

    static (DateTime, long) Stamp(string path)
    {
        var info = new FileInfo(path);
        return info.Exists ? (info.LastWriteTimeUtc, info.Length) : (DateTime.MinValue, -1);
    }

    VerpKeyFile? Load(string tenant)
    {
        var path = PathFor(tenant);
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(path), VerpJsonContext.Default.VerpKeyFile);
        }
        catch (JsonException ex)
        {
            // The message names the file, never its content.
            throw new IOException($"return-path key file '{path}' is damaged", ex);
        }
    }

    void Save(string tenant, VerpKeyFile file, bool overwrite)
    {
        Directory.CreateDirectory(_directory);
        var path = PathFor(tenant);
        var tmp = path + "." + Guid.NewGuid().ToString("N") + ".tmp";
        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        };
        using (var stream = new FileStream(tmp, options))
        {
            JsonSerializer.Serialize(stream, file, VerpJsonContext.Default.VerpKeyFile);
            stream.Flush(flushToDisk: true);
        }

        try
        {
            File.Move(tmp, path, overwrite);
        }
        catch (IOException) when (!overwrite && File.Exists(path))
        {
            File.Delete(tmp);
        }
    }

    static VerpKey NewKey(char id, DateTimeOffset now) => new(id, Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)), now, null);
}
