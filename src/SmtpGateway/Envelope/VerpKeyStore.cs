using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Diagnostics;
using SmtpGateway.Hsm;
using SmtpGateway.Storage;

namespace SmtpGateway.Envelope;

/// <summary>
/// One version of a tenant's return-path key: metadata only. Its id is one character of the tag, so a bounce names the
/// key it needs; the key itself is a non-extractable HMAC key in the tenant's HSM token under <see cref="KeyLabel"/>.
/// </summary>
public sealed record VerpKey(char Id, DateTimeOffset Created, DateTimeOffset? RetiresAt, string? Label = null)
{
    /// <summary>The plaintext key of the legacy format: read only to migrate it into the token, never written again.</summary>
    [JsonPropertyName("secret")]
    public LegacySecretMarker? LegacySecret { get; init; }

    /// <summary>The key's label in the tenant's token. Ids are reused after retirement, so the label adds the creation time.</summary>
    [JsonIgnore]
    public string KeyLabel => Label ?? VerpKeyStore.LabelFor(Id, Created);

    // Never print key material, whatever formats this record (a legacy one still carries it until migrated).
    public override string ToString() => $"VerpKey {{ Id = {Id}, Label = {KeyLabel}, Created = {Created:O}, RetiresAt = {RetiresAt:O} }}";
}

public sealed record VerpKeyFile(List<VerpKey> Keys);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(VerpKeyFile))]
internal sealed partial class VerpJsonContext : JsonSerializerContext;

/// <summary>
/// Per-tenant return-path key metadata under DataDirectory/verp/&lt;tenant&gt;.json (mode 0600); the keys live in the
/// tenant's HSM token (<see cref="ITenantKeys"/>, label <c>smtpgw-verp-&lt;id&gt;&lt;createdUnixSeconds&gt;</c>). A key is made
/// on first use; `smtpgw verp rotate-key` adds a new one and keeps the old one valid for a grace period, because bounces
/// and complaints arrive days after the message (RFC 5321 section 4.5.4.1 retries for 4-5 days; feedback loops later
/// still); keys past their grace period are destroyed in the token. The file is re-read when its timestamp changes, so a
/// rotation by the CLI reaches a running gateway. A legacy file (plaintext keys) is migrated into the token when first
/// read, and its old bytes shredded.
/// </summary>
public sealed partial class VerpKeyStore
{
    const string KeyIds = "abcdefghijklmnopqrstuvwxyz0123456789";
    readonly string _directory;
    readonly TimeProvider _time;
    readonly ITenantKeys _tenantKeys;
    readonly ILogger _logger;
    // Per tenant: a slow read-modify-write of one tenant (waiting for the CLI's file lock, or for its HSM token to create,
    // import or destroy a key) must not hold up return paths of the others. Tenant ids come from the tenant snapshot.
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lock> _locks = new(StringComparer.Ordinal);
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, ((DateTime, long) Stamp, IReadOnlyList<VerpKey> Keys, long CheckedAt)> _cache = new(StringComparer.Ordinal);

    Lock LockFor(string tenant) => _locks.GetOrAdd(tenant, static _ => new Lock());

    public VerpKeyStore(string dataDirectory, TimeProvider time, ITenantKeys tenantKeys, ILogger? logger = null)
    {
        _directory = Path.Combine(dataDirectory, "verp");
        _time = time;
        _tenantKeys = tenantKeys;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>The injected clock (ReturnPath keeps minute keys of the current minute only).</summary>
    internal TimeProvider Time => _time;

    /// <summary>How often a cached key file is checked for a change on disk (on the injected clock).</summary>
    public TimeSpan RefreshInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>How long a key rotation waits for another process's lock on the key file before it gives up.</summary>
    public TimeSpan LockTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The label of a return-path key in the tenant's HSM token.</summary>
    public static string LabelFor(char id, DateTimeOffset created) => $"smtpgw-verp-{id}{created.ToUnixTimeSeconds()}";

    string PathFor(string tenant) => Path.Combine(_directory, tenant + ".json");

    /// <summary>HMAC-SHA256 of <paramref name="data"/> under <paramref name="key"/>, computed inside the tenant's token.</summary>
    public byte[] Mac(string tenant, VerpKey key, ReadOnlySpan<byte> data) => _tenantKeys.Mac(tenant, key.KeyLabel, data);

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

    /// <summary>Adds a new current key; the previous ones verify for <paramref name="grace"/> more; retired ones are destroyed.</summary>
    public VerpKey Rotate(string tenant, TimeSpan grace)
    {
        lock (LockFor(tenant))
        {
            using var fileLock = LockFile(tenant);
            var now = _time.GetUtcNow();
            var keys = MigrateLocked(tenant)?.Keys ?? [];
            var retiring = now + grace;
            // Retired keys go first, so that a reused id can never meet its predecessor's label still in the token.
            var kept = DestroyRetired(tenant, keys, now)
                .Select(k => k.RetiresAt is null || k.RetiresAt > retiring ? k with { RetiresAt = retiring } : k).ToList();
            var free = KeyIds.Where(c => kept.All(k => k.Id != c)).ToList();
            if (free.Count == 0)
            {
                // A key id is one character of the tag: at most 36 keys can be valid at once.
                throw new IOException($"tenant '{tenant}' has {kept.Count} return-path keys still in their grace period; rotate again after the oldest retires");
            }

            var key = CreateKey(tenant, free[0], now);
            kept.Add(key);
            Save(tenant, new VerpKeyFile(kept), overwrite: true);
            _cache.TryRemove(tenant, out _);
            return key;
        }
    }

    /// <summary>Migrates every legacy key file into the tenants' tokens (gateway start, CLI); failures are logged and retried on use.</summary>
    public void MigrateLegacyKeys()
    {
        if (!Directory.Exists(_directory))
        {
            return;
        }

        foreach (var path in Directory.EnumerateFiles(_directory, "*.json"))
        {
            var tenant = Path.GetFileNameWithoutExtension(path);
            try
            {
                if (Load(tenant)?.Keys.Any(k => k.LegacySecret is not null) == true || LegacyTempFiles(tenant).Any())
                {
                    lock (LockFor(tenant))
                    {
                        using var fileLock = LockFile(tenant);
                        MigrateLocked(tenant);
                        _cache.TryRemove(tenant, out _);
                    }
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                MigrationFailed(_logger, tenant, ex.Message);
            }
        }
    }

    IReadOnlyList<VerpKey> Keys(string tenant)
    {
        lock (LockFor(tenant))
        {
            var path = PathFor(tenant);
            var tick = _time.GetTimestamp();
            if (_cache.TryGetValue(tenant, out var cached) && _time.GetElapsedTime(cached.CheckedAt, tick) < RefreshInterval)
            {
                return cached.Keys;
            }

            // Time and length: a rotation within one timestamp tick (coarse file systems) still changes the length.
            // A key that has retired meanwhile sends the read down the slow path below, which destroys it in the token.
            var stamp = Stamp(path);
            if (cached.Keys is not null && stamp == cached.Stamp && !cached.Keys.Any(k => k.RetiresAt <= _time.GetUtcNow()))
            {
                _cache[tenant] = cached with { CheckedAt = tick };
                return cached.Keys;
            }

            var file = Load(tenant);
            if (file is null || file.Keys.Count == 0 || file.Keys.Any(k => k.LegacySecret is not null) || file.Keys.Any(k => k.RetiresAt <= _time.GetUtcNow()))
            {
                // First use, a legacy file or a retired key: changed under the same cross-process lock as a rotation, so
                // that a `verp rotate-key` at this instant cannot replace the key this process is about to make tags with.
                using var fileLock = LockFile(tenant);
                file = MigrateLocked(tenant);
                var now = _time.GetUtcNow();
                if (file is null || file.Keys.Count == 0)
                {
                    Save(tenant, new VerpKeyFile([CreateKey(tenant, 'a', now)]), overwrite: false);
                    file = Load(tenant) ?? throw new IOException($"cannot read the return-path key file of tenant '{tenant}'");
                }
                else if (file.Keys.Any(k => k.RetiresAt <= now))
                {
                    file = DestroyRetiredQuietly(tenant, file, now);
                }

                stamp = Stamp(path);
            }

            IReadOnlyList<VerpKey> keys = [.. file.Keys.Select(k => k with { Label = k.KeyLabel })];
            _cache[tenant] = (stamp, keys, tick);
            return keys;
        }
    }

    /// <summary>
    /// Retired keys found on a read are destroyed in the token and dropped from the file; an HSM that cannot do it now
    /// must not stop return paths being made with the current key, so the failure is logged and left for the next read.
    /// </summary>
    VerpKeyFile DestroyRetiredQuietly(string tenant, VerpKeyFile file, DateTimeOffset now)
    {
        try
        {
            var kept = DestroyRetired(tenant, file.Keys, now);
            if (kept.Count == 0)
            {
                kept.Add(CreateKey(tenant, KeyIds.First(c => file.Keys.All(k => k.Id != c)), now));
            }

            var next = new VerpKeyFile(kept);
            Save(tenant, next, overwrite: true);
            return next;
        }
        catch (HsmException ex)
        {
            DestroyFailed(_logger, tenant, ex.Message);
            return file;
        }
    }

    /// <summary>
    /// Destroys in the token every key past its retirement and returns the others. Each key is destroyed before the file
    /// drops it, so a failure part-way leaves it listed and retried, never orphaned in the token.
    /// </summary>
    List<VerpKey> DestroyRetired(string tenant, IEnumerable<VerpKey> keys, DateTimeOffset now)
    {
        var kept = new List<VerpKey>();
        foreach (var key in keys)
        {
            if (key.RetiresAt <= now)
            {
                _tenantKeys.DeleteKey(tenant, key.KeyLabel);
                KeyDestroyed(_logger, key.Id, tenant);
            }
            else
            {
                kept.Add(key);
            }
        }

        return kept;
    }

    /// <summary>A new key generated in the tenant's token; the token first, so the file never names a key it lacks.</summary>
    VerpKey CreateKey(string tenant, char id, DateTimeOffset now)
    {
        var label = LabelFor(id, now);
        _tenantKeys.CreateMacKey(tenant, label);
        return new VerpKey(id, now, null, label);
    }

    /// <summary>
    /// The tenant's key file, with a legacy one migrated first: every plaintext key imported into the token under its
    /// label, the file rewritten without them and the old bytes shredded, leftover temp files shredded too. Caller holds
    /// the tenant's file lock.
    /// </summary>
    VerpKeyFile? MigrateLocked(string tenant)
    {
        var file = Load(tenant);
        var legacy = file?.Keys.Where(k => k.LegacySecret is not null).ToList() ?? [];
        LegacyMacKey.ImportAll(_tenantKeys, tenant, PathFor(tenant), file?.Keys.Select(k => k.LegacySecret is null ? null : k.KeyLabel).ToList() ?? []);

        if (legacy.Count > 0)
        {
            file = new VerpKeyFile([.. file!.Keys.Select(k => k with { Label = k.KeyLabel, LegacySecret = null })]);
            Save(tenant, file, overwrite: true, shredReplaced: true);
        }

        foreach (var tmp in LegacyTempFiles(tenant))
        {
            KeyMetadataFile.ShredAndDelete(tmp);
        }

        if (legacy.Count > 0)
        {
            Migrated(_logger, legacy.Count, tenant);
        }

        return file;
    }

    /// <summary>Temp files a crashed writer left ("&lt;tenant&gt;.json.&lt;guid&gt;.tmp"); from before the migration they hold plaintext.</summary>
    IEnumerable<string> LegacyTempFiles(string tenant) =>
        Directory.Exists(_directory) ? Directory.EnumerateFiles(_directory, tenant + ".json*.tmp") : [];

    FileStream LockFile(string tenant) => KeyMetadataFile.Lock(Path.Combine(_directory, tenant + ".lock"), _time, LockTimeout);

    static (DateTime, long) Stamp(string path)
    {
        var info = new FileInfo(path);
        return info.Exists ? (info.LastWriteTimeUtc, info.Length) : (DateTime.MinValue, -1);
    }

    VerpKeyFile? Load(string tenant)
    {
        var path = PathFor(tenant);
        try
        {
            var file = KeyMetadataFile.Read(path, VerpJsonContext.Default.VerpKeyFile);
            return file is not null && (file.Keys is null || file.Keys.Any(k => k is null))
                ? throw new IOException($"return-path key file '{path}' is damaged (no key list)")
                : file;
        }
        catch (JsonException ex)
        {
            // The message names the file, never its content.
            throw new IOException($"return-path key file '{path}' is damaged", ex);
        }
    }

    void Save(string tenant, VerpKeyFile file, bool overwrite, bool shredReplaced = false)
    {
        Directory.CreateDirectory(_directory);
        var clean = new VerpKeyFile([.. file.Keys.Select(k => k with { Label = k.KeyLabel, LegacySecret = null })]);
        KeyMetadataFile.Write(PathFor(tenant), JsonSerializer.SerializeToUtf8Bytes(clean, VerpJsonContext.Default.VerpKeyFile), overwrite, shredReplaced);
    }

    [LoggerMessage(EventId = EventIds.Envelope + 20, Level = LogLevel.Information, Message = "migrated {Count} return-path keys of tenant {Tenant} into its HSM token; plaintext file shredded")]
    private static partial void Migrated(ILogger logger, int count, string tenant);

    [LoggerMessage(EventId = EventIds.Envelope + 21, Level = LogLevel.Error, Message = "Migrating the legacy return-path keys of tenant {Tenant} into its HSM token failed ({Error}); will retry on use")]
    private static partial void MigrationFailed(ILogger logger, string tenant, string error);

    [LoggerMessage(EventId = EventIds.Envelope + 22, Level = LogLevel.Information, Message = "Destroyed retired return-path key {KeyId} of tenant {Tenant} in its HSM token")]
    private static partial void KeyDestroyed(ILogger logger, char keyId, string tenant);

    [LoggerMessage(EventId = EventIds.Envelope + 23, Level = LogLevel.Warning, Message = "Destroying the retired return-path keys of tenant {Tenant} failed ({Error}); will retry")]
    private static partial void DestroyFailed(ILogger logger, string tenant, string error);
}
