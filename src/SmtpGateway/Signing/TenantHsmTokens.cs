using System.Collections.Concurrent;
using SmtpGateway.Configuration;
using SmtpGateway.Hsm;

namespace SmtpGateway.Signing;

/// <summary>
/// Resolves a tenant's token label and PIN from configuration: the PIN from the tenant's environment variable or
/// PIN file (never from the message, never logged). Cached per tenant; the PIN file is read once.
/// </summary>
public sealed class TenantHsmTokens(string dataDirectory, Func<string, TenantHsmConfig?> tenantConfig)
{
    readonly ConcurrentDictionary<string, HsmTenantToken> _cache = new(StringComparer.Ordinal);

    public static string DefaultLabel(string tenant) => $"smtpgw-{tenant}";

    public string PinFile(string tenant) =>
        tenantConfig(tenant)?.PinFile is { Length: > 0 } file ? Path.GetFullPath(file) : Path.Combine(dataDirectory, "hsm", "pins", tenant + ".pin");

    public string Label(string tenant) => tenantConfig(tenant)?.TokenLabel is { Length: > 0 } label ? label : DefaultLabel(tenant);

    public HsmTenantToken Resolve(string tenant) => _cache.GetOrAdd(tenant, t =>
    {
        var config = tenantConfig(t);
        string? pin = null;
        if (config?.PinEnvironmentVariable is { Length: > 0 } variable)
        {
            pin = Environment.GetEnvironmentVariable(variable);
        }

        if (string.IsNullOrEmpty(pin))
        {
            var file = PinFile(t);
            if (!File.Exists(file))
            {
                throw new SigningException($"no HSM PIN for tenant '{t}' (PIN file or environment variable missing)");
            }

            pin = File.ReadAllText(file).Trim();
        }

        return new HsmTenantToken(t, Label(t), pin);
    });
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
