namespace SmtpGateway.Signing;

/// <summary>Signs DKIM data with a tenant's key inside the HSM. The gateway never sees the private key.</summary>
public interface IDkimKeySigner
{
    /// <summary>
    /// rsa-sha256: PKCS#1 v1.5 signature over SHA-256 of <paramref name="data"/>.
    /// ed25519-sha256 (RFC 8463 section 3): pure Ed25519 over the SHA-256 digest of <paramref name="data"/>.
    /// Throws <see cref="SigningException"/> on any HSM trouble.
    /// </summary>
    byte[] Sign(string tenantId, DkimSelector selector, byte[] data);
}

/// <summary>A signing failure. Always transient for the client: the answer is 451 4.3.0, never an unsigned message.</summary>
public sealed class SigningException(string message, Exception? inner = null) : Exception(message, inner);
