using System.Collections.Frozen;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Diagnostics;
using SmtpGateway.Hsm;
using SmtpGateway.Storage;

namespace SmtpGateway.Identity.Tokens;

/// <summary>
/// One per-tenant token key version: metadata only. The key itself is a non-extractable HMAC key in the tenant's HSM
/// token under <see cref="Label"/>, so neither this file nor this process holds key material.
/// </summary>
public sealed record TokenKey(string Id, DateTimeOffset Created, DateTimeOffset? RetiresAt, string? Label = null)
{
    /// <summary>The plaintext key of the legacy format: read only to migrate it into the token, never written again.</summary>
    [JsonPropertyName("secret")]
    public LegacySecretMarker? LegacySecret { get; init; }

    /// <summary>The key's label in the tenant's token (files written before the label was stored use the derived one).</summary>
    [JsonIgnore]
    public string KeyLabel => Label ?? TokenStore.LabelFor(Id);

    // Never print key material, whatever formats this record (a legacy one still carries it until migrated).
    public override string ToString() => $"TokenKey {{ Id = {Id}, Label = {KeyLabel}, Created = {Created:O}, RetiresAt = {RetiresAt:O} }}";
}

public sealed record TenantKeyFile(List<TokenKey> Keys);

/// <summary>What the registry knows of a token: never the token itself (it cannot be rebuilt from this).</summary>
public sealed record TokenRecord(
    string Id,
    string Tenant,
    string? Description,
    IReadOnlyList<string> Senders,
    DateTimeOffset Issued,
    DateTimeOffset Expires,
    string KeyId);

/// <summary>A line of tokens.jsonl: "mint" with the record, or "revoke" with the id.</summary>
public sealed record RegistryEntry(string Op, TokenRecord? Token, string? Id, DateTimeOffset At);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(TenantKeyFile))]
[JsonSerializable(typeof(RegistryEntry))]
[JsonSerializable(typeof(TokenPayload))]
[JsonSerializable(typeof(List<TokenListItem>))]
internal sealed partial class TokenJsonContext : JsonSerializerContext;

/// <summary>
/// Files under DataDirectory/identity: keys/&lt;tenant&gt;.json (per-tenant token key metadata) and tokens.jsonl (append-only
/// mint/revoke log). The CLI writes them; the running gateway re-reads them every refresh interval, which is how a
/// revocation reaches it within a second without a network control plane. The keys themselves live in each tenant's
/// HSM token (<see cref="ITenantKeys"/>, label <c>smtpgw-token-&lt;keyId&gt;</c>); a key file of the legacy format, with
/// the plaintext key in it, is migrated into the token the first time it is seen and the old bytes are shredded.
/// </summary>
public sealed partial class TokenStore
{
    readonly string _keysDirectory;
    readonly string _registryPath;
    readonly string _registryMarkerPath;
    readonly TimeProvider _time;
    readonly ITenantKeys _tenantKeys;
    readonly ILogger _logger;
    readonly Lock _lock = new();
    Dictionary<string, (DateTime Stamp, IReadOnlyList<TokenKey> Keys)> _keys = new(StringComparer.Ordinal);
    readonly Dictionary<string, TokenRecord> _tokens = new(StringComparer.Ordinal);
    FrozenDictionary<string, DateTimeOffset> _revoked = FrozenDictionary<string, DateTimeOffset>.Empty;
    long _registryOffset;

    // Revoke lines read from the registry file as it is now (counted again when it is read again from the start),
    // against the watermark in the marker: a file holding fewer than were ever written is an older copy.
    long _fileRevocations;

    // Fail closed (issue 12): once the registry exists it must stay readable, or a revocation written to it could be
    // missed. Set while it is missing, unreadable or damaged; cleared by the next good read.
    volatile string? _registryFault;
    bool _registrySeen;
    string? _faultLogged;
    long _faultLoggedAt;

    // TimeProvider timestamp of the last refresh, valid once _refreshed is set: the refresh rate limit runs on the
    // injected clock, so tests move past it by advancing a fake clock instead of sleeping.
    long _lastRefresh;
    bool _refreshed;

    public TokenStore(string dataDirectory, TimeProvider time, ITenantKeys tenantKeys, ILogger? logger = null)
    {
        _time = time;
        _tenantKeys = tenantKeys;
        _logger = logger ?? NullLogger.Instance;
        var root = Path.Combine(dataDirectory, "identity");
        _keysDirectory = Path.Combine(root, "keys");
        _registryPath = Path.Combine(root, "tokens.jsonl");
        _registryMarkerPath = Path.Combine(root, "tokens.expected");
    }

    public string RegistryPath => _registryPath;

    /// <summary>
    /// Written beside the registry when it is first created (or first read, for installations older than this file): from
    /// then on a missing registry is a loss, not a fresh install. A fresh install has neither and needs no registry.
    /// </summary>
    public string RegistryMarkerPath => _registryMarkerPath;

    /// <summary>
    /// Why revocations cannot be trusted now (the registry that should exist is missing, unreadable or damaged), or null.
    /// While set, AUTH and the per-MAIL recheck answer a temporary failure for every tenant (the registry is one file for
    /// all of them); revocations already read are kept whatever happens to the file.
    /// </summary>
    public string? RegistryFault => _registryFault;

    /// <summary>How long a key change waits for another process's lock on the tenant's key file.</summary>
    public TimeSpan LockTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The label of a token key in the tenant's HSM token.</summary>
    public static string LabelFor(string keyId) => "smtpgw-token-" + keyId;

    /// <summary>HMAC-SHA256 of <paramref name="data"/> under <paramref name="key"/>, computed inside the tenant's token.</summary>
    public byte[] Mac(string tenant, TokenKey key, ReadOnlySpan<byte> data) => _tenantKeys.Mac(tenant, key.KeyLabel, data);

    /// <summary>Re-reads what changed on disk: new registry lines, key files with a new timestamp.</summary>
    public void Refresh()
    {
        lock (_lock)
        {
            RefreshRegistry();
            RefreshKeys();
            Interlocked.Exchange(ref _lastRefresh, _time.GetTimestamp());
            Volatile.Write(ref _refreshed, true);
        }
    }

    /// <summary>Refreshes unless the last refresh is younger than <paramref name="minimumAge"/>; true if it refreshed.</summary>
    public bool RefreshIfStale(TimeSpan minimumAge)
    {
        if (Volatile.Read(ref _refreshed) && _time.GetElapsedTime(Interlocked.Read(ref _lastRefresh)) < minimumAge)
        {
            return false;
        }

        Refresh();
        return true;
    }

    public IReadOnlyList<TokenKey> KeysOf(string tenant)
    {
        lock (_lock)
        {
            return _keys.TryGetValue(tenant, out var k) ? k.Keys : [];
        }
    }

    public bool IsRevoked(string tokenId) => _revoked.ContainsKey(tokenId);

    public IReadOnlyList<TokenRecord> Tokens()
    {
        lock (_lock)
        {
            return [.. _tokens.Values];
        }
    }

    /// <summary>The registry's record of a minted token, if any.</summary>
    public TokenRecord? Record(string tokenId)
    {
        lock (_lock)
        {
            return _tokens.GetValueOrDefault(tokenId);
        }
    }

    public DateTimeOffset? RevokedAt(string tokenId) => _revoked.TryGetValue(tokenId, out var at) ? at : null;

    public void AppendRegistry(RegistryEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        if (_registryFault is { } fault)
        {
            // Appending would recreate a lost registry (O_CREAT) or write past damage, and a new file would make every
            // revocation it lost count for nothing again: fail-open. The operator repairs it, or starts over on purpose.
            throw new TokenException($"The token registry {_registryPath} {fault}; nothing is written to it until it is repaired. " +
                $"Restore it from a backup (with every revocation), or, if it is lost for good, run `smtpgw token rotate-key --tenant <id> --grace 0` " +
                $"for every tenant (every token made before is then refused, revoked or not) and delete {_registryMarkerPath} to start a new registry.");
        }

        // The marker comes first: a registry line never exists without it, so its later loss is always noticed.
        WriteRegistryMarker();
        // Counted before the line is written: this process's own refresh (the running gateway appends through the admin API)
        // may read the new line before the watermark below is raised, and must not make it count that line twice.
        var revocationsBefore = Interlocked.Read(ref _fileRevocations);
        Storage.AppendOnlyFile.AppendLine(_registryPath, JsonSerializer.SerializeToUtf8Bytes(entry, TokenJsonContext.Default.RegistryEntry));
        if (entry.Op == "revoke")
        {
            // After the line: a reader may see the line without the raised watermark, never the reverse. Two writers racing
            // can only leave it lower than the lines, which loses detection of one restore, never raises a false fault.
            WriteRevocationWatermark(revocationsBefore + 1);
        }
    }

    const string WatermarkPrefix = "revocations=";

    /// <summary>Revoke lines the registry held when last written, from the marker; 0 for a marker without one (older versions).</summary>
    long ReadRevocationWatermark()
    {
        try
        {
            foreach (var line in File.ReadLines(_registryMarkerPath))
            {
                if (line.StartsWith(WatermarkPrefix, StringComparison.Ordinal) && long.TryParse(line.AsSpan(WatermarkPrefix.Length), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var count))
                {
                    return count;
                }
            }
        }
        catch (FileNotFoundException)
        {
        }

        return 0;
    }

    void WriteRevocationWatermark(long count)
    {
        count = Math.Max(count, ReadRevocationWatermark());
        var temp = _registryMarkerPath + ".tmp";
        using (var marker = new FileStream(temp, new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        }))
        {
            marker.Write(MarkerText);
            marker.Write(System.Text.Encoding.ASCII.GetBytes($"{WatermarkPrefix}{count.ToString(System.Globalization.CultureInfo.InvariantCulture)}\n"));
            marker.Flush(flushToDisk: true);
        }

        File.Move(temp, _registryMarkerPath, overwrite: true);
    }

    static ReadOnlySpan<byte> MarkerText => "tokens.jsonl (token mints and revocations) exists; while it is missing or damaged, AUTH answers 454 4.7.0\n"u8;

    void WriteRegistryMarker()
    {
        if (File.Exists(_registryMarkerPath))
        {
            return;
        }

        Directory.CreateDirectory(Path.GetDirectoryName(_registryMarkerPath)!);
        try
        {
            // Owner-only like every file under identity/ (it says nothing secret, but the directory's rule is simple).
            using var marker = new FileStream(_registryMarkerPath, new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            });
            marker.Write(MarkerText);
            marker.Flush(flushToDisk: true);
        }
        catch (IOException) when (File.Exists(_registryMarkerPath))
        {
            // Another process (the CLI, or the gateway) made it meanwhile.
        }
    }

    /// <summary>
    /// Read-modify-write of a tenant's key list under the cross-process lock (the gateway and the CLI both change key
    /// files): <paramref name="change"/> sees the file as it is now, migrated if it was legacy, and may create or destroy
    /// keys in the token; what it returns is written (metadata only).
    /// </summary>
    public IReadOnlyList<TokenKey> Update(string tenant, Func<IReadOnlyList<TokenKey>, IReadOnlyList<TokenKey>> change)
    {
        using var fileLock = KeyMetadataFile.Lock(LockPath(tenant), _time, LockTimeout);
        var keys = change(MigrateLocked(tenant) ?? []);
        WriteKeys(tenant, keys, shred: false);
        return keys;
    }

    /// <summary>
    /// A new key generated inside the tenant's token (the caller records it with <see cref="Update"/>). The token comes
    /// first: a crash before the file is written leaves an unused key in the token, never a file naming a missing key.
    /// </summary>
    public TokenKey CreateKey(string tenant, DateTimeOffset now)
    {
        var id = $"k{now.ToUnixTimeSeconds():x}{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(2))}";
        _tenantKeys.CreateMacKey(tenant, LabelFor(id));
        return new TokenKey(id, now, null, LabelFor(id));
    }

    /// <summary>
    /// Destroys in the token every key of <paramref name="keys"/> past its retirement and returns the others. Each key is
    /// destroyed before the file drops it, so a failure part-way leaves it listed (and retried), never orphaned; a
    /// retired key is refused before any MAC, so one already destroyed but still listed is harmless.
    /// </summary>
    public IReadOnlyList<TokenKey> DestroyRetired(string tenant, IReadOnlyList<TokenKey> keys)
    {
        var now = _time.GetUtcNow();
        foreach (var key in keys.Where(k => k.RetiresAt <= now))
        {
            _tenantKeys.DeleteKey(tenant, key.KeyLabel);
            KeyDestroyed(_logger, key.Id, tenant);
        }

        return [.. keys.Where(k => !(k.RetiresAt <= now))];
    }

    /// <summary>Destroys the retired keys of every tenant that has one (the gateway's refresh loop calls this).</summary>
    public void DestroyRetiredKeys()
    {
        var now = _time.GetUtcNow();
        List<string> tenants;
        lock (_lock)
        {
            tenants = [.. _keys.Where(t => t.Value.Keys.Any(k => k.RetiresAt <= now)).Select(t => t.Key)];
        }

        foreach (var tenant in tenants)
        {
            Update(tenant, keys => DestroyRetired(tenant, keys));
        }

        if (tenants.Count > 0)
        {
            Refresh();
        }
    }

    /// <summary>
    /// Migrates every legacy key file (plaintext keys) into the tenants' tokens: at gateway start and before every CLI
    /// verb, so that the plaintext is gone as soon as the new version first runs. A tenant whose token cannot be reached
    /// is logged and left for the next attempt; the others go ahead.
    /// </summary>
    public void MigrateLegacyKeys()
    {
        if (!Directory.Exists(_keysDirectory))
        {
            return;
        }

        foreach (var path in Directory.EnumerateFiles(_keysDirectory, "*.json"))
        {
            var tenant = Path.GetFileNameWithoutExtension(path);
            try
            {
                if (Read(path)?.Keys.Any(k => k.LegacySecret is not null) == true || LegacyTempFiles(tenant).Any())
                {
                    using var fileLock = KeyMetadataFile.Lock(LockPath(tenant), _time, LockTimeout);
                    MigrateLocked(tenant);
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // One tenant's damaged file or unreachable token must not keep the gateway from starting for the others.
                MigrationFailed(_logger, tenant, Describe(ex));
            }
        }
    }

    /// <summary>Writes a tenant's key file atomically (temp + rename) with owner-only permissions; metadata only.</summary>
    void WriteKeys(string tenant, IReadOnlyList<TokenKey> keys, bool shred)
    {
        Directory.CreateDirectory(_keysDirectory);
        File.SetUnixFileMode(_keysDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var path = KeyPath(tenant);
        var clean = keys.Select(k => k with { Label = k.KeyLabel, LegacySecret = null }).ToList();
        KeyMetadataFile.Write(path, JsonSerializer.SerializeToUtf8Bytes(new TenantKeyFile(clean), TokenJsonContext.Default.TenantKeyFile), shredReplaced: shred);
        lock (_lock)
        {
            _keys[tenant] = (File.GetLastWriteTimeUtc(path), clean);
        }
    }

    /// <summary>
    /// The tenant's keys as on disk, with a legacy file migrated first: every plaintext key imported into the token under
    /// its label, the file rewritten without them and the old bytes shredded, and leftover temp files of the old writer
    /// (which held the same plaintext) shredded too. Caller holds the tenant's file lock.
    /// </summary>
    List<TokenKey>? MigrateLocked(string tenant)
    {
        var file = Read(KeyPath(tenant));
        var legacy = file?.Keys.Where(k => k.LegacySecret is not null).ToList() ?? [];
        LegacyMacKey.ImportAll(_tenantKeys, tenant, KeyPath(tenant), file?.Keys.Select(k => k.LegacySecret is null ? null : k.KeyLabel).ToList() ?? []);

        var keys = file?.Keys.Select(k => k with { Label = k.KeyLabel, LegacySecret = null }).ToList();
        if (legacy.Count > 0)
        {
            WriteKeys(tenant, keys!, shred: true);
        }

        foreach (var tmp in LegacyTempFiles(tenant))
        {
            KeyMetadataFile.ShredAndDelete(tmp);
        }

        if (legacy.Count > 0)
        {
            Migrated(_logger, legacy.Count, tenant);
        }

        return keys;
    }

    /// <summary>Temp files a crashed writer left: the old writer's fixed "&lt;tenant&gt;.json.tmp" and this one's unique names.</summary>
    IEnumerable<string> LegacyTempFiles(string tenant) =>
        Directory.Exists(_keysDirectory) ? Directory.EnumerateFiles(_keysDirectory, tenant + ".json*.tmp") : [];

    static TenantKeyFile? TryRead(string path)
    {
        try
        {
            return Read(path);
        }
        catch (Exception ex) when (ex is IOException or JsonException or InvalidDataException)
        {
            return null;
        }
    }

    static TenantKeyFile? Read(string path) => KeyMetadataFile.Read(path, TokenJsonContext.Default.TenantKeyFile) is { } file
        ? file.Keys is null || file.Keys.Any(k => k is null) ? throw new InvalidDataException($"token key file '{path}' is damaged (no key list)") : file
        : null;

    string KeyPath(string tenant) => Path.Combine(_keysDirectory, tenant + ".json");

    string LockPath(string tenant) => Path.Combine(_keysDirectory, tenant + ".lock");

    void RefreshKeys()
    {
        if (!Directory.Exists(_keysDirectory))
        {
            return;
        }

        var next = new Dictionary<string, (DateTime, IReadOnlyList<TokenKey>)>(StringComparer.Ordinal);
        foreach (var path in Directory.EnumerateFiles(_keysDirectory, "*.json"))
        {
            var tenant = Path.GetFileNameWithoutExtension(path);
            var stamp = File.GetLastWriteTimeUtc(path);
            if (_keys.TryGetValue(tenant, out var known) && known.Stamp == stamp)
            {
                next[tenant] = known;
                continue;
            }

            try
            {
                var file = Read(path);
                if (file?.Keys.Any(k => k.LegacySecret is not null) == true)
                {
                    // A legacy file copied in (or restored from a backup) while the gateway runs: migrate it now.
                    using (KeyMetadataFile.Lock(LockPath(tenant), _time, LockTimeout))
                    {
                        file = new TenantKeyFile(MigrateLocked(tenant) ?? []);
                    }

                    stamp = File.GetLastWriteTimeUtc(path);
                }

                next[tenant] = (stamp, [.. (file?.Keys ?? []).Select(k => k with { Label = k.KeyLabel, LegacySecret = null })]);
            }
            catch (HsmException ex)
            {
                // The token cannot take the legacy keys yet: log it and try again next refresh (no stamp kept). Until then
                // the tenant's tokens get a temporary AUTH failure, never a verification with the plaintext key.
                MigrationFailed(_logger, tenant, Describe(ex));
                if (known.Keys is not null)
                {
                    next[tenant] = (DateTime.MinValue, known.Keys);
                }
                else if (TryRead(path) is { } legacy)
                {
                    // First sight of the file (a start with the token down): publish what the file says about its keys,
                    // without their material, so a valid token's MAC goes to the token and fails there as temporary
                    // (454), rather than as "unknown key" (535, and a strike against the client's address).
                    next[tenant] = (DateTime.MinValue, [.. legacy.Keys.Select(k => k with { Label = k.KeyLabel, LegacySecret = null })]);
                }
            }
            catch (Exception ex) when (ex is IOException or JsonException or InvalidDataException)
            {
                // Keep the last good keys rather than lock a tenant out over a half-written file.
                if (known.Keys is not null)
                {
                    next[tenant] = known;
                }
            }
        }

        _keys = next;
    }

    [LoggerMessage(EventId = EventIds.Identity + 11, Level = LogLevel.Information, Message = "migrated {Count} token keys of tenant {Tenant} into its HSM token; plaintext file shredded")]
    private static partial void Migrated(ILogger logger, int count, string tenant);

    [LoggerMessage(EventId = EventIds.Identity + 12, Level = LogLevel.Error, Message = "Migrating the legacy token keys of tenant {Tenant} into its HSM token failed ({Error}); will retry")]
    private static partial void MigrationFailed(ILogger logger, string tenant, string error);

    /// <summary>What a failed migration may say: an HSM message names tenant, token and label only; other exceptions could
    /// quote the file (a JSON parse error near a key), so only their type is logged.</summary>
    static string Describe(Exception ex) => ex is HsmException ? ex.Message : ex.GetType().Name;

    [LoggerMessage(EventId = EventIds.Identity + 13, Level = LogLevel.Information, Message = "Destroyed retired token key {KeyId} of tenant {Tenant} in its HSM token")]
    private static partial void KeyDestroyed(ILogger logger, string keyId, string tenant);

    /// <summary>A registry that should be there and cannot be read, or holds a line that is not an entry.</summary>
    sealed class RegistryDamagedException(string message) : Exception(message);

    void RefreshRegistry()
    {
        try
        {
            ReadRegistry();
            if (_registryFault is not null)
            {
                _registryFault = null;
                _faultLogged = null;
                RegistryRecovered(_logger, _registryPath);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or RegistryDamagedException)
        {
            // Only what went wrong is logged, never a line of the file. Once per change of cause, then every 5 minutes.
            var reason = ex is RegistryDamagedException ? ex.Message : $"cannot be read ({ex.GetType().Name})";
            _registryFault = reason;
            if (reason != _faultLogged || _time.GetElapsedTime(_faultLoggedAt) >= TimeSpan.FromMinutes(5))
            {
                _faultLogged = reason;
                _faultLoggedAt = _time.GetTimestamp();
                RegistryUnreadable(_logger, _registryPath, reason);
            }
        }
    }

    void ReadRegistry()
    {
        if (!File.Exists(_registryPath))
        {
            // Missing is fine only on a fresh install: never seen by this process, and no marker of an earlier creation.
            if (_registrySeen || File.Exists(_registryMarkerPath) || Directory.Exists(_registryPath))
            {
                throw new RegistryDamagedException("is missing (or not a regular file)");
            }

            return;
        }

        using var file = new FileStream(_registryPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        if (!_registrySeen)
        {
            _registrySeen = true;
            TryWriteMarker();
        }

        if (file.Length < _registryOffset)
        {
            // Replaced by a shorter file (restored from a backup, rewritten by hand): read it again from the start. What
            // was already read stays: a revocation is never forgotten because the file lost it.
            _registryOffset = 0;
            _fileRevocations = 0;
        }

        if (file.Length == _registryOffset)
        {
            CheckWatermark();
            return;
        }

        file.Seek(_registryOffset, SeekOrigin.Begin);
        var bytes = new byte[file.Length - _registryOffset];
        file.ReadExactly(bytes);

        // Only whole lines: a line still being written is picked up next time. A whole line that is not an entry is
        // damage: the lines before it count, the offset stays at it, and the store is faulted until it reads.
        var revoked = new Dictionary<string, DateTimeOffset>(_revoked, StringComparer.Ordinal);
        var start = 0;
        try
        {
            for (var end = Array.IndexOf(bytes, (byte)'\n'); end >= 0; start = end + 1, end = Array.IndexOf(bytes, (byte)'\n', start))
            {
                if (end > start && !Apply(bytes.AsSpan(start, end - start), revoked))
                {
                    throw new RegistryDamagedException($"has a line that is not a registry entry at byte {_registryOffset + start}");
                }
            }
        }
        finally
        {
            _revoked = revoked.ToFrozenDictionary(StringComparer.Ordinal);
            _registryOffset += start;
        }

        CheckWatermark();
    }

    /// <summary>
    /// An older copy put back (a backup from before a revocation), in this process or before a restart: the revocations it
    /// lacks would be forgotten by every later process, so it is damage until the missing lines are back (or the operator
    /// starts over, see <see cref="AppendRegistry"/>). A repaired file that kept every revoke line passes.
    /// </summary>
    void CheckWatermark()
    {
        var written = ReadRevocationWatermark();
        if (_fileRevocations < written)
        {
            throw new RegistryDamagedException($"holds {_fileRevocations} revocations, fewer than the {written} written to it (an older copy put back?)");
        }
    }

    /// <summary>Applies one line; false when it is not a well-formed mint or revoke entry.</summary>
    bool Apply(ReadOnlySpan<byte> line, Dictionary<string, DateTimeOffset> revoked)
    {
        if (line.Trim((byte)'\r').IsEmpty)
        {
            return true;
        }

        RegistryEntry? entry;
        try
        {
            entry = JsonSerializer.Deserialize(line, TokenJsonContext.Default.RegistryEntry);
        }
        catch (JsonException)
        {
            return false;
        }

        if (entry?.Op == "mint" && entry.Token?.Id is not null)
        {
            _tokens[entry.Token.Id] = entry.Token;
            return true;
        }

        if (entry?.Op == "revoke" && entry.Id is not null)
        {
            revoked.TryAdd(entry.Id, entry.At);
            _fileRevocations++;
            return true;
        }

        return false;
    }

    /// <summary>Installations older than the marker get it at the first read; a read-only data directory only loses the
    /// detection across restarts (this process still remembers that it saw the registry).</summary>
    void TryWriteMarker()
    {
        try
        {
            WriteRegistryMarker();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Best effort, as said above; the next first read of a later process tries again.
        }
    }

    [LoggerMessage(EventId = EventIds.Identity + 20, Level = LogLevel.Error, Message = "Token registry {Path} {Reason}: AUTH answers 454 4.7.0 for every tenant until it reads again (revocations already read are kept)")]
    private static partial void RegistryUnreadable(ILogger logger, string path, string reason);

    [LoggerMessage(EventId = EventIds.Identity + 21, Level = LogLevel.Information, Message = "Token registry {Path} reads again; AUTH resumes")]
    private static partial void RegistryRecovered(ILogger logger, string path);
}
