using System.Security.Cryptography;

namespace SmtpGateway.Hsm;

/// <summary>
/// Migration of a legacy plaintext HMAC key (base64 in a key file) into the tenant's HSM token, shared by the token and
/// return-path key stores. Importing the same bytes keeps every token and return path made before the migration valid.
/// </summary>
internal static class LegacyMacKey
{
    /// <summary>Fixed input for checking that a key already in the token is the one in the legacy file.</summary>
    static readonly byte[] Probe = "smtpgw-legacy-mac-key-probe"u8.ToArray();

    /// <summary>
    /// Imports <paramref name="secretBase64"/> under <paramref name="label"/>. A label already taken is accepted only when
    /// it holds the very same key (checked by MACing a probe both ways): that is a migration interrupted after the import
    /// and before the file was rewritten, which must be able to finish; anything else is refused, never overwritten.
    /// </summary>
    public static void Import(ITenantKeys keys, string tenant, string label, string secretBase64)
    {
        byte[] secret;
        try
        {
            secret = Convert.FromBase64String(secretBase64);
        }
        catch (FormatException ex)
        {
            // The message names the key, never its content.
            throw new InvalidDataException($"legacy key '{label}' of tenant '{tenant}' is not base64", ex);
        }

        try
        {
            keys.ImportMacKey(tenant, label, secret);
        }
        catch (HsmException ex) when (ex.Kind == HsmErrorKind.KeyExists)
        {
            if (!CryptographicOperations.FixedTimeEquals(HMACSHA256.HashData(secret, Probe), keys.Mac(tenant, label, Probe)))
            {
                throw new HsmException(HsmErrorKind.KeyExists, tenant, $"label '{label}' already holds a different key; the legacy key was not migrated", null, ex);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
        }
    }
}
