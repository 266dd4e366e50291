using System.Security.Cryptography;
using Net.Pkcs11Interop.Common;

namespace SmtpGateway.Hsm;

/// <summary>
/// PKCS#11 v3.0 values that Pkcs11Interop 5.3.0 (a v2.40 binding) has no enum members for, and the
/// small DER encodings the Edwards-curve objects need.
/// </summary>
internal static class Pkcs11Constants
{
    // PKCS#11 v3.0 Current Mechanisms, §2.3 "Elliptic Curve" (Edwards curves): key type and mechanisms.
    public const ulong CKK_EC_EDWARDS = 0x40;
    public const ulong CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
    public const ulong CKM_EDDSA = 0x1057;

    /// <summary>
    /// CKA_EC_PARAMS for Ed25519 as the DER of the RFC 8410 §3 object identifier id-Ed25519 (1.3.101.112).
    /// Tried first: it is the identifier OpenSSL and X.509 use. SoftHSM2 2.6.1 accepts it (and the curve name form).
    /// </summary>
    public static ReadOnlySpan<byte> Ed25519ParamsOid => [0x06, 0x03, 0x2B, 0x65, 0x70];

    /// <summary>
    /// CKA_EC_PARAMS as the PrintableString curve name "edwards25519" (13 0C + ASCII), which PKCS#11 v3.0 §2.3
    /// also allows and some modules require; used when the module refuses the OID form.
    /// </summary>
    public static ReadOnlySpan<byte> Ed25519ParamsName => [0x13, 0x0C, 0x65, 0x64, 0x77, 0x61, 0x72, 0x64, 0x73, 0x32, 0x35, 0x35, 0x31, 0x39];

    public const ulong RsaModulusBits = 2048;

    /// <summary>Secret keys are 256 bits: HMAC keys as long as SHA-256's output (RFC 2104 §3 recommends at least L bytes), AES-256.</summary>
    public const int SecretKeyBytes = 32;

    /// <summary>
    /// AES-GCM nonce: 96 bits, the length GCM processes without GHASHing it (NIST SP 800-38D §7.1), drawn at random per
    /// seal (the §8.2.2 construction; safe for far more than the vault's few seals per key).
    /// </summary>
    public const int GcmNonceBytes = 12;

    /// <summary>AES-GCM tag: the full 128 bits (SP 800-38D §5.2.1.2; shorter tags weaken forgery resistance).</summary>
    public const int GcmTagBytes = 16;

    /// <summary>F4 (65537), the public exponent every DKIM verifier expects.</summary>
    public static ReadOnlySpan<byte> RsaPublicExponent => [0x01, 0x00, 0x01];

    /// <summary>
    /// The raw 32-byte Ed25519 public key from CKA_EC_POINT. PKCS#11 v3.0 §2.3 defines the attribute as
    /// the DER OCTET STRING of the RFC 8032 encoding (04 20 ‖ 32 bytes), which is what SoftHSM2 returns;
    /// some modules return the bare 32 bytes, so both are accepted.
    /// </summary>
    public static byte[]? Ed25519PointToRaw(byte[] ecPoint) => ecPoint switch
    {
        { Length: 34 } when ecPoint[0] == 0x04 && ecPoint[1] == 0x20 => ecPoint[2..],
        { Length: 32 } => ecPoint,
        _ => null,
    };

    /// <summary>SubjectPublicKeyInfo DER (RFC 5280 §4.1.2.7, RFC 3279 §2.3.1) from the token's modulus and exponent.</summary>
    public static byte[] RsaSubjectPublicKeyInfo(byte[] modulus, byte[] exponent)
    {
        using var rsa = RSA.Create();
        // PKCS#11 big integers are unsigned big-endian (v2.40 §2.8, CK_BYTE arrays); a leading zero octet is
        // allowed there but would make RSAParameters report a 2056-bit key.
        rsa.ImportParameters(new RSAParameters { Modulus = TrimLeadingZeros(modulus), Exponent = TrimLeadingZeros(exponent) });
        return rsa.ExportSubjectPublicKeyInfo();
    }

    static byte[] TrimLeadingZeros(byte[] value)
    {
        var i = 0;
        while (i < value.Length - 1 && value[i] == 0)
        {
            i++;
        }

        return i == 0 ? value : value[i..];
    }

    /// <summary>CKA_ID for both halves of a pair: the same value lets tools (pkcs11-tool, p11-kit) pair them.</summary>
    public static byte[] KeyId(string keyLabel) => SHA1.HashData(System.Text.Encoding.UTF8.GetBytes(keyLabel));

    /// <summary>Return values after which a cached handle, session or login cannot be trusted any more.</summary>
    public static bool IsStale(CKR rv) => rv is CKR.CKR_OBJECT_HANDLE_INVALID or CKR.CKR_KEY_HANDLE_INVALID
        or CKR.CKR_SESSION_HANDLE_INVALID or CKR.CKR_SESSION_CLOSED or CKR.CKR_TOKEN_NOT_PRESENT
        or CKR.CKR_TOKEN_NOT_RECOGNIZED or CKR.CKR_DEVICE_REMOVED or CKR.CKR_DEVICE_ERROR
        or CKR.CKR_USER_NOT_LOGGED_IN or CKR.CKR_SLOT_ID_INVALID;

    /// <summary>Return values of C_Login that mean the PIN itself was refused.</summary>
    public static bool IsPinRefusal(CKR rv) => rv is CKR.CKR_PIN_INCORRECT or CKR.CKR_PIN_INVALID or CKR.CKR_PIN_LEN_RANGE
        or CKR.CKR_PIN_LOCKED or CKR.CKR_PIN_EXPIRED;

    /// <summary>
    /// Return values of C_Decrypt (after a successful C_DecryptInit) for AES-GCM input that does not authenticate or cannot
    /// be ciphertext. The standard code for a failed tag check is CKR_ENCRYPTED_DATA_INVALID (v3.0 Current Mechanisms
    /// §2.10.6), too-short input CKR_ENCRYPTED_DATA_LEN_RANGE (v2.40 §5.2); some modules say CKR_DATA_INVALID/LEN_RANGE. SoftHSM2
    /// 2.6.1 reports a failed tag check as CKR_GENERAL_ERROR (its SymDecrypt returns that when the OpenSSL decrypt-final
    /// fails; Pkcs11HsmSecretKeyTests shows it), so from C_Decrypt, with key and session known good, that counts too.
    /// </summary>
    public static bool IsDataRefusal(CKR rv) => rv is CKR.CKR_ENCRYPTED_DATA_INVALID or CKR.CKR_ENCRYPTED_DATA_LEN_RANGE
        or CKR.CKR_DATA_INVALID or CKR.CKR_DATA_LEN_RANGE or CKR.CKR_GENERAL_ERROR;

    /// <summary>Return values that say the module cannot do this at all; retrying will not help.</summary>
    public static bool IsUnsupported(CKR rv) => rv is CKR.CKR_MECHANISM_INVALID or CKR.CKR_MECHANISM_PARAM_INVALID
        or CKR.CKR_TEMPLATE_INCONSISTENT or CKR.CKR_TEMPLATE_INCOMPLETE or CKR.CKR_ATTRIBUTE_VALUE_INVALID
        or CKR.CKR_ATTRIBUTE_TYPE_INVALID or CKR.CKR_CURVE_NOT_SUPPORTED or CKR.CKR_DOMAIN_PARAMS_INVALID
        or CKR.CKR_KEY_TYPE_INCONSISTENT or CKR.CKR_KEY_FUNCTION_NOT_PERMITTED or CKR.CKR_FUNCTION_NOT_SUPPORTED;
}
