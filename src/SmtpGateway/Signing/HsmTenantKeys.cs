using SmtpGateway.Hsm;

namespace SmtpGateway.Signing;

/// <summary>
/// <see cref="ITenantKeys"/> in each tenant's own HSM token: the tenant id picks the token and PIN (through
/// <see cref="TenantHsmTokens"/>, as DKIM signing does), so tenant A's labels do not exist for tenant B and a record
/// sealed under A's key does not open under B's, whatever the labels.
/// </summary>
public sealed class HsmTenantKeys(IHsm hsm, TenantHsmTokens tokens) : ITenantKeys
{
    public void CreateMacKey(string tenantId, string keyLabel) => hsm.GenerateSecretKey(Token(tenantId), keyLabel, HsmSecretKeyType.Hmac256);

    public void ImportMacKey(string tenantId, string keyLabel, ReadOnlySpan<byte> secret) => hsm.ImportHmacKey(Token(tenantId), keyLabel, secret);

    public byte[] Mac(string tenantId, string keyLabel, ReadOnlySpan<byte> data) => hsm.Hmac(Token(tenantId), keyLabel, data);

    public void CreateWrappingKey(string tenantId, string keyLabel) => hsm.GenerateSecretKey(Token(tenantId), keyLabel, HsmSecretKeyType.Aes256);

    public byte[] Seal(string tenantId, string keyLabel, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> associatedData) =>
        hsm.Seal(Token(tenantId), keyLabel, plaintext, associatedData);

    public byte[] Open(string tenantId, string keyLabel, ReadOnlySpan<byte> sealedData, ReadOnlySpan<byte> associatedData) =>
        hsm.Open(Token(tenantId), keyLabel, sealedData, associatedData);

    public bool HasKey(string tenantId, string keyLabel) => hsm.HasSecretKey(Token(tenantId), keyLabel);

    public bool DeleteKey(string tenantId, string keyLabel) => hsm.DeleteSecretKey(Token(tenantId), keyLabel);

    HsmTenantToken Token(string tenantId)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(tenantId);
        try
        {
            return tokens.Resolve(tenantId);
        }
        catch (SigningException ex)
        {
            // ITenantKeys promises HsmException for every failure; a tenant without a usable PIN source is configuration.
            // The message names the tenant and the source, never a PIN.
            throw new HsmException(HsmErrorKind.Configuration, tenantId, ex.Message, null, ex);
        }
    }
}
