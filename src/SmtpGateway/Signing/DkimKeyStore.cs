using System.Text.Json;
using System.Text.Json.Serialization;

namespace SmtpGateway.Signing;

/// <summary>Lifecycle of a DKIM selector (README "DKIM key rotation").</summary>
public enum SelectorState
{
    /// <summary>Published in DNS, not yet signing: gives resolvers time to see the record.</summary>
    Pending,

    /// <summary>Signing (one per algorithm and domain).</summary>
    Active,

    /// <summary>No longer signing, still published so mail signed with it in the last days still verifies.</summary>
    Retiring,

    /// <summary>Withdrawn from DNS; its key may be deleted from the HSM.</summary>
    Retired,
}

public enum DkimAlgorithm
{
    Rsa2048,
    Ed25519,
}

/// <summary>One DKIM key of a tenant: metadata only. The private key lives in the tenant's HSM token under <see cref="KeyLabel"/>.</summary>
public sealed record DkimSelector(
    string Domain,
    string Selector,
    DkimAlgorithm Algorithm,
    SelectorState State,
    string KeyLabel,
    string PublicKey,
    DateTimeOffset Created,
    DateTimeOffset? StateChanged);

public sealed record TenantDkimFile(List<DkimSelector> Selectors);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, UseStringEnumConverter = true, WriteIndented = true)]
[JsonSerializable(typeof(TenantDkimFile))]
internal sealed partial class DkimJsonContext : JsonSerializerContext;

/// <summary>
/// DKIM selector metadata per tenant under DataDirectory/dkim/&lt;tenant&gt;.json, written by the CLI
/// (`smtpgw dkim keygen|rotate`) and re-read by the gateway when the file changes, so a rotation step needs no restart.
/// </summary>
public sealed class DkimKeyStore(string dataDirectory)
{
    readonly string _directory = Path.Combine(dataDirectory, "dkim");
    readonly Lock _lock = new();
    Dictionary<string, (DateTime Stamp, IReadOnlyList<DkimSelector> Selectors)> _cache = new(StringComparer.Ordinal);

    /// <summary>
    /// The tenant's selectors; empty when it has no selector file. Throws <see cref="SigningException"/> (message names
    /// the tenant and the kind of trouble, never the file's content) when the file is there but cannot be read or parsed,
    /// so a caller that must sign fails closed instead of treating a broken file as "no keys".
    /// </summary>
    public IReadOnlyList<DkimSelector> Selectors(string tenant)
    {
        var path = PathOf(tenant);
        try
        {
            // One lstat(2) per lookup for the existence, kind and time together (File.Exists and then a time or Path.Exists
            // cost two: issue 15).
            var info = new FileInfo(path);
            DateTime stamp;
            if (info.Exists)
            {
                stamp = info.LastWriteTimeUtc;
            }
            else if ((int)info.Attributes != -1)
            {
                // A directory (or other non-file) where the selector file belongs: broken state, not "no keys".
                throw new IOException("not a regular file");
            }
            else
            {
                stamp = DateTime.MinValue;
            }

            lock (_lock)
            {
                if (_cache.TryGetValue(tenant, out var cached) && cached.Stamp == stamp)
                {
                    return cached.Selectors;
                }
            }

            IReadOnlyList<DkimSelector> selectors = stamp == DateTime.MinValue
                ? []
                : JsonSerializer.Deserialize(File.ReadAllBytes(path), DkimJsonContext.Default.TenantDkimFile)?.Selectors ?? [];
            if (selectors.Any(s => s is null || s.Domain is null || s.Selector is null || s.KeyLabel is null))
            {
                throw new JsonException("a selector lacks its domain, selector name or key label");
            }

            lock (_lock)
            {
                _cache = new(_cache, StringComparer.Ordinal) { [tenant] = (stamp, selectors) };
            }

            return selectors;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or JsonException or NotSupportedException)
        {
            throw new SigningException($"DKIM selector file of tenant '{tenant}' is unreadable or corrupt ({ex.GetType().Name})", ex);
        }
    }

    /// <summary>Signing keys for a domain: the active selector of each algorithm.</summary>
    public IReadOnlyList<DkimSelector> ActiveFor(string tenant, string normalizedDomain) =>
        Selectors(tenant).Where(s => s.State == SelectorState.Active && s.Domain == normalizedDomain).ToList();

    /// <summary>True when the tenant has DKIM set up for the domain at all (then a message must never go out unsigned).</summary>
    public bool Configured(string tenant, string normalizedDomain) =>
        Selectors(tenant).Any(s => s.Domain == normalizedDomain && s.State is SelectorState.Active);

    public void Save(string tenant, IReadOnlyList<DkimSelector> selectors)
    {
        Directory.CreateDirectory(_directory);
        var path = PathOf(tenant);
        var tmp = path + ".tmp";
        using (var file = new FileStream(tmp, new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite }))
        {
            JsonSerializer.Serialize(file, new TenantDkimFile([.. selectors]), DkimJsonContext.Default.TenantDkimFile);
            file.Flush(flushToDisk: true);
        }

        File.Move(tmp, path, overwrite: true);
    }

    string PathOf(string tenant) => Path.Combine(_directory, tenant + ".json");
}
