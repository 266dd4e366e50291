namespace SmtpGateway.Hsm;

/// <summary>The DKIM key types the gateway signs with: rsa-sha256 (RFC 6376) and ed25519-sha256 (RFC 8463).</summary>
public enum DkimKeyAlgorithm
{
    Rsa2048,
    Ed25519,
}

/// <summary>
/// One tenant's token and the PIN that opens it, as resolved from configuration by the caller.
/// The PIN is passed in on every call rather than kept by the HSM layer: it is compared (as a salted
/// hash) against the one the token was logged in with, so a changed PIN in config takes effect.
/// </summary>
public sealed record HsmTenantToken(string TenantId, string TokenLabel, string UserPin)
{
    // A record's generated ToString prints every property; this one would print the PIN into any log
    // line or exception message that formats the record.
    public override string ToString() => $"HsmTenantToken {{ TenantId = {TenantId}, TokenLabel = {TokenLabel} }}";
}

/// <summary>The secret-key types a tenant token holds for the gateway (besides DKIM key pairs).</summary>
public enum HsmSecretKeyType
{
    /// <summary>256-bit CKK_GENERIC_SECRET for CKM_SHA256_HMAC (session-token and VERP keys); sign/verify only.</summary>
    Hmac256,
    /// <summary>AES-256 (CKK_AES) for CKM_AES_GCM (the vault's key-encryption key); encrypt/decrypt only.</summary>
    Aes256,
}

/// <summary>
/// A public key as DKIM publishes it in <c>p=</c>: for RSA the SubjectPublicKeyInfo DER (RFC 6376 §3.6.1),
/// for Ed25519 the raw 32-byte public key (RFC 8463 §4).
/// </summary>
public sealed record HsmPublicKey(DkimKeyAlgorithm Algorithm, byte[] Value);

/// <summary>
/// Key custody for DKIM. Private keys are generated inside the tenant's own token, sensitive and
/// non-extractable, and every signature is computed there (ARCHITECTURE.md §4 promise 3).
/// Every failure is an <see cref="HsmException"/>.
/// </summary>
public interface IHsm : IDisposable
{
    /// <summary>Loads the module, finds the tenant's token and logs in, if not yet done. Lets startup and
    /// health checks surface HSM trouble before the first message needs a signature.</summary>
    void Connect(HsmTenantToken token);

    /// <summary>Generates a key pair in the tenant's token; fails with <see cref="HsmErrorKind.KeyExists"/> if any object already has that label.</summary>
    HsmPublicKey GenerateKeyPair(HsmTenantToken token, string keyLabel, DkimKeyAlgorithm algorithm);

    /// <summary>The public half of the key pair with that label, or null when the token has none.</summary>
    HsmPublicKey? FindPublicKey(HsmTenantToken token, string keyLabel);

    /// <summary>Destroys both halves of the key pair; false when the token had no object with that label.</summary>
    bool DeleteKeyPair(HsmTenantToken token, string keyLabel);

    /// <summary>
    /// Signs <paramref name="data"/> with the private key of that label.
    /// RSA: CKM_SHA256_RSA_PKCS over data (PKCS#1 v1.5 with the SHA-256 DigestInfo, as DKIM rsa-sha256 needs).
    /// Ed25519: CKM_EDDSA (pure Ed25519, RFC 8032 §5.1) over data, as one single-part C_Sign, because
    /// SoftHSM2 does not implement C_SignUpdate for EdDSA. The caller passes what RFC 8463 §3 says is signed
    /// (the SHA-256 hash of the canonicalised header block), not a prehash for Ed25519ph.
    /// </summary>
    byte[] Sign(HsmTenantToken token, string keyLabel, DkimKeyAlgorithm algorithm, ReadOnlySpan<byte> data);

    /// <summary>Generates a secret key in the tenant's token (token, private, sensitive, non-extractable, usable for its one
    /// purpose only); fails with <see cref="HsmErrorKind.KeyExists"/> if any object already has that label.</summary>
    void GenerateSecretKey(HsmTenantToken token, string keyLabel, HsmSecretKeyType type);

    /// <summary>Creates an HMAC key (as <see cref="HsmSecretKeyType.Hmac256"/>) from known bytes with C_CreateObject: for
    /// migrating a legacy plaintext key only. KeyExists when the label is taken.</summary>
    void ImportHmacKey(HsmTenantToken token, string keyLabel, ReadOnlySpan<byte> secret);

    /// <summary>HMAC-SHA256 (CKM_SHA256_HMAC, single-part C_Sign) of <paramref name="data"/> with the HMAC key of that label.</summary>
    byte[] Hmac(HsmTenantToken token, string keyLabel, ReadOnlySpan<byte> data);

    /// <summary>AES-256-GCM (CKM_AES_GCM, C_Encrypt) under the AES key of that label with a fresh random 96-bit nonce and a
    /// 128-bit tag; returns nonce ‖ ciphertext ‖ tag.</summary>
    byte[] Seal(HsmTenantToken token, string keyLabel, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> associatedData);

    /// <summary>The inverse of <see cref="Seal"/>; data that does not authenticate is <see cref="HsmErrorKind.DataInvalid"/>.
    /// The caller zeroes the result after use.</summary>
    byte[] Open(HsmTenantToken token, string keyLabel, ReadOnlySpan<byte> sealedData, ReadOnlySpan<byte> associatedData);

    /// <summary>Whether the token holds a secret key with that label.</summary>
    bool HasSecretKey(HsmTenantToken token, string keyLabel);

    /// <summary>Destroys the secret key with that label (key pairs sharing the label are left alone); false when there was none.</summary>
    bool DeleteSecretKey(HsmTenantToken token, string keyLabel);
}
