using System.Security.Cryptography;
using System.Text;
using SmtpGateway.Hsm;

namespace SmtpGateway.Vault;

/// <summary>
/// The vault's envelope encryption. A tenant's records are AES-256-GCM under its data key (in process); the data key is
/// sealed by a key-encryption key that never leaves the tenant's HSM token. The tenant id, credential name and version
/// are the associated data of every record, and the tenant id and KEK label that of the data key, so a record or a whole
/// file moved to another tenant does not authenticate (spec-11 §2).
/// </summary>
internal sealed class VaultCrypto(ITenantKeys keys)
{
    /// <summary>Label of the current key-encryption key; the number is its generation (a KEK rotation adds -2).</summary>
    public const string KekLabel = "smtpgw-vault-kek-1";

    const int KeySize = 32;
    const int NonceSize = 12;
    const int TagSize = 16;

    /// <summary>Seals a fresh data key for a tenant that has none, creating its key-encryption key on first use.</summary>
    public SealedDataKey NewDataKey(string tenant)
    {
        if (!keys.HasKey(tenant, KekLabel))
        {
            try
            {
                keys.CreateWrappingKey(tenant, KekLabel);
            }
            catch (HsmException ex) when (ex.Kind == HsmErrorKind.KeyExists)
            {
                // Another process (the gateway, a second CLI) made it between the check and here: use that one.
            }
        }

        var dataKey = RandomNumberGenerator.GetBytes(KeySize);
        try
        {
            return new SealedDataKey(KekLabel, Convert.ToBase64String(keys.Seal(tenant, KekLabel, dataKey, DataKeyAad(tenant, KekLabel))));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(dataKey);
        }
    }

    /// <summary>Runs <paramref name="use"/> with the tenant's data key unsealed in the HSM, and zeroes it after.</summary>
    /// <exception cref="HsmException">DataInvalid when the sealed key is not this tenant's (or was altered).</exception>
    public T WithDataKey<T>(string tenant, SealedDataKey sealedKey, Func<byte[], T> use)
    {
        var dataKey = keys.Open(tenant, sealedKey.Kek, Convert.FromBase64String(sealedKey.Ciphertext), DataKeyAad(tenant, sealedKey.Kek));
        try
        {
            if (dataKey.Length != KeySize)
            {
                throw new HsmException(HsmErrorKind.DataInvalid, tenant, "the vault data key has the wrong length");
            }

            return use(dataKey);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(dataKey);
        }
    }

    /// <summary>AES-256-GCM of <paramref name="plaintext"/>: base64 of nonce ‖ ciphertext ‖ tag.</summary>
    public static string Seal(byte[] dataKey, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> associatedData)
    {
        var output = new byte[NonceSize + plaintext.Length + TagSize];
        // A random nonce per record under a per-tenant key: far below the 2^32 messages NIST SP 800-38D allows per key.
        RandomNumberGenerator.Fill(output.AsSpan(0, NonceSize));
        using var aes = new AesGcm(dataKey, TagSize);
        aes.Encrypt(output.AsSpan(0, NonceSize), plaintext, output.AsSpan(NonceSize, plaintext.Length), output.AsSpan(NonceSize + plaintext.Length), associatedData);
        return Convert.ToBase64String(output);
    }

    /// <summary>Inverse of <see cref="Seal"/>; the caller zeroes the result. A tag that does not verify is DataInvalid.</summary>
    public static byte[] Open(string tenant, byte[] dataKey, string sealedText, ReadOnlySpan<byte> associatedData)
    {
        byte[] sealedData;
        try
        {
            sealedData = Convert.FromBase64String(sealedText);
        }
        catch (FormatException ex)
        {
            throw new HsmException(HsmErrorKind.DataInvalid, tenant, "a vault record is not base64", null, ex);
        }

        if (sealedData.Length < NonceSize + TagSize)
        {
            throw new HsmException(HsmErrorKind.DataInvalid, tenant, "a vault record is too short");
        }

        var plaintext = SecretBuffer.Allocate(sealedData.Length - NonceSize - TagSize);
        using var aes = new AesGcm(dataKey, TagSize);
        try
        {
            aes.Decrypt(sealedData.AsSpan(0, NonceSize), sealedData.AsSpan(NonceSize, plaintext.Length), sealedData.AsSpan(^TagSize), plaintext, associatedData);
        }
        catch (AuthenticationTagMismatchException ex)
        {
            // Decrypt already zeroed the output; the message names no content.
            throw new HsmException(HsmErrorKind.DataInvalid, tenant, "a vault record did not authenticate (altered, or not this tenant's)", null, ex);
        }

        return plaintext;
    }

    /// <summary>
    /// A record's associated data: its owner and place (tenant, name, version) and everything in clear that decides how
    /// the secret is used (kind, grant, user name, token endpoint, client id, retirement), each length-prefixed. So a
    /// record moved to another tenant does not decrypt, and neither does one whose clear fields were edited in the file
    /// (a password turned into a "refresh token" for an attacker's endpoint, a retired version given a longer life).
    /// </summary>
    public static byte[] RecordAad(string tenant, string name, VaultRecord record)
    {
        var fields = new[]
        {
            "smtpgw-vault2", tenant, name, record.Version.ToString(System.Globalization.CultureInfo.InvariantCulture), record.Kind.ToString(),
            record.Grant?.ToString() ?? "", record.UserName, record.TokenEndpoint ?? "", record.ClientId ?? "",
            record.RetiresAt?.ToUnixTimeSeconds().ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "",
        };
        var buffer = new List<byte>();
        foreach (var field in fields)
        {
            var bytes = Encoding.UTF8.GetBytes(field);
            buffer.AddRange(BitConverter.GetBytes(System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(bytes.Length)));
            buffer.AddRange(bytes);
        }

        return [.. buffer];
    }

    /// <summary>
    /// The record's associated data, then "\0access\0&lt;expires unix seconds&gt;": a fetched access token belongs to its
    /// record, and its expiry (kept in clear so no decryption is needed to see whether to refresh) cannot be extended by
    /// editing the file.
    /// </summary>
    public static byte[] AccessAad(string tenant, string name, int version, DateTimeOffset expires) =>
        Encoding.UTF8.GetBytes($"smtpgw-vault\0{tenant}\0{name}\0{version}\0access\0{expires.ToUnixTimeSeconds()}");

    static byte[] DataKeyAad(string tenant, string kekLabel) => Encoding.UTF8.GetBytes($"smtpgw-vault-dek\0{tenant}\0{kekLabel}");
}
