using MimeKit.Cryptography;
using Org.BouncyCastle.Crypto;
using SmtpGateway.Signing;

namespace SmtpGateway.SignBench;

/// <summary>
/// MimeKit's DKIM signer (canonicalisation, header selection, tag layout) with the signature itself made by the
/// HSM: <see cref="CreateSigningContext"/> returns a context that collects the canonicalised data and hands it to
/// the tenant's token in one single-part C_Sign (SoftHSM2's EdDSA has no multi-part signing).
/// </summary>
/// <remarks>The gateway signed this way until issue 10 (canonicalisation of its own, body hash while streaming); kept here as the
/// reference the benchmark compares against.</remarks>
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
