using System.Collections.Concurrent;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;

namespace SmtpGateway.Signing;

/// <summary>
/// Resolves a tenant's token label and PIN from the tenant snapshot: the PIN from the tenant's environment variable or
/// PIN file (never from the message, never logged). The resolved token is cached per tenant together with the token
/// settings it came from, so the PIN file is read once, and again only after a reload changes the tenant's token or
/// PIN source.
/// </summary>
public sealed class TenantHsmTokens
{
    readonly string _dataDirectory;
    readonly Func<string, TenantHsmModel?> _tenant;
    readonly ConcurrentDictionary<string, (TenantHsmModel? Settings, HsmTenantToken Token)> _cache = new(StringComparer.Ordinal);

    /// <param name="dataDirectory">Where default PIN files live (hsm/pins/&lt;tenant&gt;.pin).</param>
    /// <param name="tenants">The current tenant snapshot (the gateway's <see cref="TenantDirectoryService"/>, or the CLI's load).</param>
    public TenantHsmTokens(string dataDirectory, Func<TenantSnapshot> tenants)
        : this(dataDirectory, tenant => tenants().Find(tenant)?.Hsm)
    {
    }

    /// <summary>Fixed settings per tenant (tests); null means the defaults.</summary>
    internal TenantHsmTokens(string dataDirectory, Func<string, TenantHsmModel?> tenant)
    {
        _dataDirectory = dataDirectory;
        _tenant = tenant;
    }

    public static string DefaultLabel(string tenant) => $"smtpgw-{tenant}";

    public string PinFile(string tenant) => PinFile(tenant, _tenant(tenant));

    public string Label(string tenant) => Label(tenant, _tenant(tenant));

    public HsmTenantToken Resolve(string tenant)
    {
        var settings = _tenant(tenant);
        if (_cache.TryGetValue(tenant, out var cached) && Equals(cached.Settings, settings))
        {
            return cached.Token;
        }

        var token = new HsmTenantToken(tenant, Label(tenant, settings), ReadPin(tenant, settings));
        _cache[tenant] = (settings, token);
        return token;
    }

    string PinFile(string tenant, TenantHsmModel? settings) =>
        settings?.PinFile ?? Path.Combine(_dataDirectory, "hsm", "pins", tenant + ".pin");

    static string Label(string tenant, TenantHsmModel? settings) => settings?.TokenLabel ?? DefaultLabel(tenant);

    string ReadPin(string tenant, TenantHsmModel? settings)
    {
        string? pin = null;
        if (settings?.PinEnvironmentVariable is { } variable)
        {
            pin = Environment.GetEnvironmentVariable(variable);
        }

        if (string.IsNullOrEmpty(pin))
        {
            var file = PinFile(tenant, settings);
            if (!File.Exists(file))
            {
                throw new SigningException($"no HSM PIN for tenant '{tenant}' (PIN file or environment variable missing)");
            }

            pin = File.ReadAllText(file).Trim();
        }

        return pin;
    }
}

/// <summary>The HSM behind <see cref="IDkimKeySigner"/>: each tenant's signatures are made in that tenant's token.</summary>
public sealed class HsmKeySigner(IHsm hsm, TenantHsmTokens tokens) : IDkimKeySigner
{
    public byte[] Sign(string tenantId, DkimSelector selector, byte[] data)
    {
        try
        {
            var token = tokens.Resolve(tenantId);
            return selector.Algorithm == DkimAlgorithm.Ed25519
                // RFC 8463 section 3: ed25519-sha256 signs the SHA-256 hash of the canonicalised data with pure Ed25519.
                ? hsm.Sign(token, selector.KeyLabel, DkimKeyAlgorithm.Ed25519, System.Security.Cryptography.SHA256.HashData(data))
                : hsm.Sign(token, selector.KeyLabel, DkimKeyAlgorithm.Rsa2048, data);
        }
        catch (HsmException ex)
        {
            throw new SigningException($"HSM: {ex.Message}", ex);
        }
    }
}
