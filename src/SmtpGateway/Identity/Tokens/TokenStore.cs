using System.Collections.Frozen;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace SmtpGateway.Identity.Tokens;

/// <summary>One per-tenant token key version. The secret never leaves the data directory (mode 0600).</summary>
public sealed record TokenKey(string Id, string Secret, DateTimeOffset Created, DateTimeOffset? RetiresAt)
{
    [JsonIgnore]
    public byte[] SecretBytes => Convert.FromBase64String(Secret);

    // Never print the key material, whatever formats this record.
    public override string ToString() => $"TokenKey {{ Id = {Id}, Created = {Created:O}, RetiresAt = {RetiresAt:O} }}";
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
/// Files under DataDirectory/identity: keys/&lt;tenant&gt;.json (per-tenant token keys) and tokens.jsonl (append-only
/// mint/revoke log). The CLI writes them; the running gateway re-reads them every refresh interval, which is how a
/// revocation reaches it within a second without a network control plane.
/// </summary>
public sealed class TokenStore
{
    readonly string _keysDirectory;
    readonly string _registryPath;
    readonly TimeProvider _time;
    readonly Lock _lock = new();
    Dictionary<string, (DateTime Stamp, IReadOnlyList<TokenKey> Keys)> _keys = new(StringComparer.Ordinal);
    Dictionary<string, TokenRecord> _tokens = new(StringComparer.Ordinal);
    FrozenDictionary<string, DateTimeOffset> _revoked = FrozenDictionary<string, DateTimeOffset>.Empty;
    long _registryOffset;

    // TimeProvider timestamp of the last refresh, valid once _refreshed is set: the refresh rate limit runs on the
    // injected clock, so tests move past it by advancing a fake clock instead of sleeping.
    long _lastRefresh;
    bool _refreshed;

    public TokenStore(string dataDirectory, TimeProvider time)
    {
        _time = time;
        var root = Path.Combine(dataDirectory, "identity");
        _keysDirectory = Path.Combine(root, "keys");
        _registryPath = Path.Combine(root, "tokens.jsonl");
    }

    public string RegistryPath => _registryPath;

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

    public DateTimeOffset? RevokedAt(string tokenId) => _revoked.TryGetValue(tokenId, out var at) ? at : null;

    public void AppendRegistry(RegistryEntry entry) =>
        Storage.AppendOnlyFile.AppendLine(_registryPath, JsonSerializer.SerializeToUtf8Bytes(entry, TokenJsonContext.Default.RegistryEntry));

    /// <summary>Writes a tenant's key file atomically (temp + rename) with owner-only permissions.</summary>
    public void WriteKeys(string tenant, IReadOnlyList<TokenKey> keys)
    {
        Directory.CreateDirectory(_keysDirectory);
        File.SetUnixFileMode(_keysDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var path = KeyPath(tenant);
        var tmp = path + ".tmp";
        using (var file = new FileStream(tmp, new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        }))
        {
            JsonSerializer.Serialize(file, new TenantKeyFile([.. keys]), TokenJsonContext.Default.TenantKeyFile);
            file.Flush(flushToDisk: true);
        }

        File.Move(tmp, path, overwrite: true);
        lock (_lock)
        {
            _keys[tenant] = (File.GetLastWriteTimeUtc(path), keys);
        }
    }

    public static TokenKey NewKey(DateTimeOffset now) =>
        new($"k{now.ToUnixTimeSeconds():x}{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(2))}", Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)), now, null);

    string KeyPath(string tenant) => Path.Combine(_keysDirectory, tenant + ".json");

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
                var file = JsonSerializer.Deserialize(File.ReadAllBytes(path), TokenJsonContext.Default.TenantKeyFile);
                next[tenant] = (stamp, file?.Keys ?? []);
            }
            catch (Exception ex) when (ex is IOException or JsonException)
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

    void RefreshRegistry()
    {
        if (!File.Exists(_registryPath))
        {
            return;
        }

        using var file = new FileStream(_registryPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        if (file.Length < _registryOffset)
        {
            _registryOffset = 0;
            _tokens = new(StringComparer.Ordinal);
            _revoked = FrozenDictionary<string, DateTimeOffset>.Empty;
        }

        if (file.Length == _registryOffset)
        {
            return;
        }

        file.Seek(_registryOffset, SeekOrigin.Begin);
        var bytes = new byte[file.Length - _registryOffset];
        file.ReadExactly(bytes);

        // Only whole lines: a line still being written is picked up next time.
        var end = Array.LastIndexOf(bytes, (byte)'\n');
        if (end < 0)
        {
            return;
        }

        var revoked = new Dictionary<string, DateTimeOffset>(_revoked, StringComparer.Ordinal);
        foreach (var line in Encoding.UTF8.GetString(bytes, 0, end).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            RegistryEntry? entry;
            try
            {
                entry = JsonSerializer.Deserialize(line, TokenJsonContext.Default.RegistryEntry);
            }
            catch (JsonException)
            {
                continue;
            }

            if (entry?.Op == "mint" && entry.Token is not null)
            {
                _tokens[entry.Token.Id] = entry.Token;
            }
            else if (entry?.Op == "revoke" && entry.Id is not null)
            {
                revoked.TryAdd(entry.Id, entry.At);
            }
        }

        _revoked = revoked.ToFrozenDictionary(StringComparer.Ordinal);
        _registryOffset += end + 1;
    }
}
