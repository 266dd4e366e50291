using System.Buffers;
using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

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
    /// The plaintext keys of a legacy key file, by position in its "keys" array (null where a key has none), read from
    /// the file's bytes with <see cref="Utf8JsonReader"/> so no key ever becomes a string (a string cannot be zeroed, and
    /// a core dump of the gateway would show it). The read buffer is zeroed; the caller zeroes each key after import.
    /// </summary>
    public static List<byte[]?> ReadSecrets(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var secrets = new List<byte[]?>();
        try
        {
            var reader = new Utf8JsonReader(bytes);
            var inKeys = false;
            while (reader.Read())
            {
                switch (reader.TokenType)
                {
                    case JsonTokenType.PropertyName when reader.CurrentDepth == 1:
                        inKeys = reader.ValueTextEquals("keys"u8);
                        break;
                    case JsonTokenType.StartObject when inKeys && reader.CurrentDepth == 2:
                        secrets.Add(null);
                        break;
                    case JsonTokenType.EndArray when reader.CurrentDepth == 1:
                        inKeys = false;
                        break;
                    case JsonTokenType.PropertyName when inKeys && reader.CurrentDepth == 3 && reader.ValueTextEquals("secret"u8):
                        reader.Read();
                        secrets[^1] = Decode(ref reader);
                        break;
                }
            }
        }
        catch (JsonException ex)
        {
            ZeroAll(secrets);
            throw new InvalidDataException($"legacy key file '{path}' is damaged", ex);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(bytes);
        }

        return secrets;
    }

    /// <summary>
    /// Imports every legacy key of the file at <paramref name="path"/>: <paramref name="labels"/> has, per position in its
    /// "keys" array, the label to import under, or null for a key without plaintext. The records the caller deserialised
    /// only know that a key has a secret; the values are read again here as bytes and zeroed after the import.
    /// </summary>
    public static void ImportAll(ITenantKeys keys, string tenant, string path, IReadOnlyList<string?> labels)
    {
        if (labels.All(l => l is null))
        {
            return;
        }

        var secrets = ReadSecrets(path);
        try
        {
            for (var i = 0; i < labels.Count; i++)
            {
                if (labels[i] is { } label)
                {
                    Import(keys, tenant, label, i < secrets.Count ? secrets[i] : null);
                }
            }
        }
        finally
        {
            ZeroAll(secrets);
        }
    }

    /// <summary>Zeroes every key <see cref="ReadSecrets"/> returned.</summary>
    public static void ZeroAll(List<byte[]?> secrets)
    {
        foreach (var secret in secrets)
        {
            CryptographicOperations.ZeroMemory(secret);
        }
    }

    static byte[] Decode(ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            throw new JsonException("a legacy key's secret is not a string");
        }

        // Base64 has nothing JSON escapes except '/' and '+' written as \u002F / \u002B by some writers: unescape into a
        // buffer of our own rather than through a string.
        var text = ArrayPool<byte>.Shared.Rent(Math.Max(1, reader.ValueSpan.Length));
        var decoded = new byte[Base64.GetMaxDecodedFromUtf8Length(reader.ValueSpan.Length)];
        try
        {
            var length = reader.CopyString(text);
            if (Base64.DecodeFromUtf8(text.AsSpan(0, length), decoded, out _, out var written) != OperationStatus.Done)
            {
                throw new JsonException("a legacy key's secret is not base64");
            }

            return decoded.AsSpan(0, written).ToArray();
        }
        finally
        {
            CryptographicOperations.ZeroMemory(text);
            ArrayPool<byte>.Shared.Return(text);
            CryptographicOperations.ZeroMemory(decoded);
        }
    }

    /// <summary>
    /// Imports <paramref name="secret"/> under <paramref name="label"/>. A label already taken is accepted only when
    /// it holds the very same key (checked by MACing a probe both ways): that is a migration interrupted after the import
    /// and before the file was rewritten, which must be able to finish; anything else is refused, never overwritten.
    /// </summary>
    public static void Import(ITenantKeys keys, string tenant, string label, byte[]? secret)
    {
        if (secret is not { Length: > 0 })
        {
            throw new InvalidDataException($"legacy key '{label}' of tenant '{tenant}' has no readable secret");
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

/// <summary>
/// The "secret" member of a legacy key file, read only as "there is one": the value is skipped without being turned
/// into a string; <see cref="LegacyMacKey.ReadSecrets"/> reads it as bytes when migrating.
/// </summary>
[JsonConverter(typeof(LegacySecretMarkerConverter))]
public sealed class LegacySecretMarker
{
    public static LegacySecretMarker Present { get; } = new();

    LegacySecretMarker()
    {
    }
}

internal sealed class LegacySecretMarkerConverter : JsonConverter<LegacySecretMarker>
{
    public override LegacySecretMarker Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType == JsonTokenType.String ? LegacySecretMarker.Present : throw new JsonException("a legacy key's secret is not a string");

    // Nothing writes the legacy format any more: a record is stripped of its marker before it is saved.
    public override void Write(Utf8JsonWriter writer, LegacySecretMarker value, JsonSerializerOptions options) =>
        throw new InvalidOperationException("legacy key secrets are never written");
}
