using MimeKit.Cryptography;
using Org.BouncyCastle.Crypto;

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

/// <summary>
/// MimeKit's DKIM signer (canonicalisation, header selection, tag layout) with the signature itself made by the
/// HSM: <see cref="CreateSigningContext"/> returns a context that collects the canonicalised data and hands it to
/// the tenant's token in one single-part C_Sign (SoftHSM2's EdDSA has no multi-part signing).
/// </summary>
public sealed class HsmDkimSigner : DkimSigner
{
    readonly IDkimKeySigner _keys;
    readonly string _tenant;
    readonly DkimSelector _selector;
    readonly TimeProvider _time;

    public HsmDkimSigner(IDkimKeySigner keys, string tenantId, DkimSelector selector, TimeProvider time, TimeSpan? lifetime)
        : base(new HsmKeyReference(), selector.Domain, selector.Selector, selector.Algorithm == DkimAlgorithm.Ed25519 ? DkimSignatureAlgorithm.Ed25519Sha256 : DkimSignatureAlgorithm.RsaSha256)
    {
        _keys = keys;
        _tenant = tenantId;
        _selector = selector;
        _time = time;
        HeaderCanonicalizationAlgorithm = DkimCanonicalizationAlgorithm.Relaxed;
        BodyCanonicalizationAlgorithm = DkimCanonicalizationAlgorithm.Relaxed;
        SignaturesExpireAfter = lifetime;
    }

    protected override long GetTimestamp() => _time.GetUtcNow().ToUnixTimeSeconds();

    protected override ISigner CreateSigningContext() => new HsmSigningContext(this);

    /// <summary>Stands where MimeKit expects a private key; holds nothing (the key is in the HSM).</summary>
    sealed class HsmKeyReference() : AsymmetricKeyParameter(privateKey: true);

    sealed class HsmSigningContext(HsmDkimSigner owner) : ISigner
    {
        readonly MemoryStream _data = new();

        public string AlgorithmName => owner._selector.Algorithm == DkimAlgorithm.Ed25519 ? "Ed25519" : "SHA256withRSA";

        public void Init(bool forSigning, ICipherParameters parameters)
        {
        }

        public void Update(byte input) => _data.WriteByte(input);

        public void BlockUpdate(byte[] input, int inOff, int inLen) => _data.Write(input, inOff, inLen);

        public void BlockUpdate(ReadOnlySpan<byte> input) => _data.Write(input);

        public int GetMaxSignatureSize() => owner._selector.Algorithm == DkimAlgorithm.Ed25519 ? 64 : 256;

        public byte[] GenerateSignature() => owner._keys.Sign(owner._tenant, owner._selector, _data.ToArray());

        public bool VerifySignature(byte[] signature) => throw new NotSupportedException("Signing context only.");

        public void Reset() => _data.SetLength(0);
    }
}
