using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using SmtpGateway.Spool;

namespace SmtpGateway.Admin;

/// <summary>One admin key as stored: never the key itself, only its SHA-256.</summary>
public sealed record AdminKeyRecord(
    string Id, string? Tenant, string? Description, DateTimeOffset Created, DateTimeOffset? Revoked, string Sha256)
{
    public string Scope => Tenant is null ? "operator" : "tenant";
}

/// <summary>A key as shown once, at creation.</summary>
public sealed record CreatedAdminKey(string Key, AdminKeyRecord Record)
{
    public override string ToString() => $"CreatedAdminKey {{ Record = {Record} }}";
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(List<AdminKeyRecord>))]
internal sealed partial class AdminKeyJsonContext : JsonSerializerContext;

/// <summary>
/// Admin bearer keys in DataDirectory/admin/keys.json (mode 0600). A key is <c>sgw_&lt;id&gt;_&lt;secret&gt;</c> with 256
/// random bits of secret, so one unsalted SHA-256 is enough to store it (a slow password hash protects guessable
/// secrets; this one is not guessable), and a copy of the file lets nobody call the API. The CLI writes the file, the
/// running gateway re-reads it when it changes, so a revocation takes effect on the next request.
/// </summary>
public sealed class AdminKeyStore(string dataDirectory, TimeProvider time)
{
    public const string Prefix = "sgw_";

    /// <summary>Longest bearer value looked at; anything longer is refused before hashing.</summary>
    public const int MaxKeyLength = 128;

    readonly string _path = Path.Combine(dataDirectory, "admin", "keys.json");
    readonly Lock _lock = new();
    (DateTime Written, long Length, IReadOnlyList<AdminKeyRecord> Keys)? _cache;

    public string FilePath => _path;

    public IReadOnlyList<AdminKeyRecord> List()
    {
        lock (_lock)
        {
            return Load();
        }
    }

    public CreatedAdminKey Create(string? tenant, string? description)
    {
        if (description is { Length: > 200 } || (description?.Any(char.IsControl) ?? false))
        {
            throw new FormatException("the description must be at most 200 characters, without control characters.");
        }

        var id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
        var secret = Base64Url(RandomNumberGenerator.GetBytes(32));
        var key = $"{Prefix}{id}_{secret}";
        var record = new AdminKeyRecord(id, tenant, description, time.GetUtcNow(), null, Hash(key));
        lock (_lock)
        {
            Save([.. Load(), record]);
        }

        return new CreatedAdminKey(key, record);
    }

    /// <returns>The revoked record, or null when no key has that id.</returns>
    public AdminKeyRecord? Revoke(string id)
    {
        lock (_lock)
        {
            var keys = Load().ToList();
            var i = keys.FindIndex(k => k.Id == id);
            if (i < 0)
            {
                return null;
            }

            if (keys[i].Revoked is null)
            {
                keys[i] = keys[i] with { Revoked = time.GetUtcNow() };
                Save(keys);
            }

            return keys[i];
        }
    }

    /// <summary>The principal of a valid, unrevoked key; null for anything else (absent, malformed, unknown, revoked).</summary>
    public AdminPrincipal? Verify(string? bearer)
    {
        if (bearer is null || bearer.Length > MaxKeyLength || !bearer.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return null;
        }

        var rest = bearer.AsSpan(Prefix.Length);
        var sep = rest.IndexOf('_');
        if (sep != 12)
        {
            return null;
        }

        var id = rest[..sep].ToString();
        IReadOnlyList<AdminKeyRecord> keys;
        lock (_lock)
        {
            keys = Load();
        }

        var record = keys.FirstOrDefault(k => k.Id == id);
        // Hash and compare even for an unknown id, so timing does not tell which ids exist.
        var expected = Convert.FromHexString(record?.Sha256 ?? new string('0', 64));
        var actual = SHA256.HashData(Encoding.ASCII.GetBytes(bearer));
        var match = CryptographicOperations.FixedTimeEquals(expected, actual);
        return match && record is { Revoked: null } ? new AdminPrincipal(record.Id, record.Tenant) : null;
    }

    static string Hash(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.ASCII.GetBytes(key)));

    static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    IReadOnlyList<AdminKeyRecord> Load()
    {
        var info = new FileInfo(_path);
        if (!info.Exists)
        {
            _cache = null;
            return [];
        }

        if (_cache is { } c && c.Written == info.LastWriteTimeUtc && c.Length == info.Length)
        {
            return c.Keys;
        }

        // Read before trusting: a keys file others may read or write could hold planted keys.
        if ((info.UnixFileMode & (UnixFileMode.GroupWrite | UnixFileMode.OtherWrite | UnixFileMode.OtherRead | UnixFileMode.GroupRead)) != 0)
        {
            throw new InvalidDataException($"{_path} is readable or writable by group or others; chmod 600 it.");
        }

        using var stream = File.OpenRead(_path);
        var keys = JsonSerializer.Deserialize(stream, AdminKeyJsonContext.Default.ListAdminKeyRecord)
            ?? throw new InvalidDataException($"{_path} is empty.");
        if (keys.FirstOrDefault(k => k.Id is not { Length: 12 } || k.Sha256 is not { Length: 64 } || !k.Id.All(char.IsAsciiHexDigitLower)
                                     || !k.Sha256.All(char.IsAsciiHexDigit)) is { } bad)
        {
            throw new InvalidDataException($"{_path} holds a malformed record (id '{bad.Id}'); restore the file or recreate the keys.");
        }
        _cache = (info.LastWriteTimeUtc, info.Length, keys);
        return keys;
    }

    void Save(List<AdminKeyRecord> keys)
    {
        var directory = Path.GetDirectoryName(_path)!;
        Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        // A fresh name each time: a leftover temp file (and its mode) is never reused, and two CLI runs never share one.
        var temp = $"{_path}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8))}.tmp";
        using (var file = new FileStream(temp, new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        }))
        {
            JsonSerializer.Serialize(file, keys, AdminKeyJsonContext.Default.ListAdminKeyRecord);
            file.Flush(flushToDisk: true);
        }

        File.Move(temp, _path, overwrite: true);
        DurableFile.SyncDirectory(directory);
        _cache = null;
    }
}
