namespace SmtpGateway.Hsm;

/// <summary>
/// Symmetric keys held in a tenant's own HSM token, addressed by tenant id and key label: HMAC keys for session tokens
/// and return paths, and the key-encryption key of the tenant's credential vault. The key material is generated (or,
/// once, imported from a legacy plaintext file) inside the token as sensitive and non-extractable, so neither this
/// process nor a copy of the data directory ever holds it (ARCHITECTURE.md §3 "Secrets at rest"). The tenant's token
/// and PIN are resolved from the tenant snapshot by the implementation; callers pass only the tenant id, which always
/// comes from the session or the spooled envelope, never from client input. Every failure is an <see cref="HsmException"/>.
/// </summary>
public interface ITenantKeys
{
    /// <summary>Generates a 256-bit HMAC key (CKK_GENERIC_SECRET via CKM_GENERIC_SECRET_KEY_GEN, sign/verify only);
    /// fails with <see cref="HsmErrorKind.KeyExists"/> when the label is taken.</summary>
    void CreateMacKey(string tenantId, string keyLabel);

    /// <summary>Migration only: turns a legacy plaintext HMAC secret into the same kind of token object (C_CreateObject,
    /// sensitive, non-extractable). The caller shreds the plaintext afterwards.</summary>
    void ImportMacKey(string tenantId, string keyLabel, ReadOnlySpan<byte> secret);

    /// <summary>HMAC-SHA256 (CKM_SHA256_HMAC) of <paramref name="data"/> inside the token.</summary>
    byte[] Mac(string tenantId, string keyLabel, ReadOnlySpan<byte> data);

    /// <summary>Generates an AES-256 key-encryption key (CKK_AES, encrypt/decrypt only); KeyExists when the label is taken.</summary>
    void CreateWrappingKey(string tenantId, string keyLabel);

    /// <summary>AES-256-GCM inside the token under that key: returns nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes).</summary>
    byte[] Seal(string tenantId, string keyLabel, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> associatedData);

    /// <summary>Inverse of <see cref="Seal"/>; a tag that does not verify (wrong tenant, wrong associated data, tampering)
    /// is an <see cref="HsmException"/> of kind <see cref="HsmErrorKind.DataInvalid"/>. The caller zeroes the result after use.</summary>
    byte[] Open(string tenantId, string keyLabel, ReadOnlySpan<byte> sealedData, ReadOnlySpan<byte> associatedData);

    /// <summary>Whether the tenant's token holds a secret key with that label.</summary>
    bool HasKey(string tenantId, string keyLabel);

    /// <summary>Destroys the key; false when the token had none with that label.</summary>
    bool DeleteKey(string tenantId, string keyLabel);
}
