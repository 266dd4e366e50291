using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;

namespace SmtpGateway.Vault;

/// <summary>One row of `vault list --json` and of the admin API's vault list; nothing secret.</summary>
public sealed record VaultListItem(string Name, int Version, string Kind, string User, DateTimeOffset Created, DateTimeOffset? RetiresAt,
    string? Grant, string? TokenEndpoint, string? ClientId, DateTimeOffset? AccessTokenExpires)
{
    public static VaultListItem From(VaultListing l) => new(l.Version.Name, l.Version.Version, l.Version.Kind.ToString().ToLowerInvariant(), l.Version.UserName,
        l.Version.Created, l.Version.RetiresAt, l.Grant, l.TokenEndpoint, l.ClientId, l.AccessTokenExpires);
}

/// <summary>What a set or rotate stored (never the secret): the new version, and when a rotation retires the previous one.</summary>
public sealed record VaultStored(string Name, int Version, string Kind, string User, DateTimeOffset Created, DateTimeOffset? PreviousRetiresAt)
{
    /// <summary>The line `vault set|rotate` prints, whichever door the change went through.</summary>
    public string Describe(string tenant) =>
        $"{tenant}: stored {Name}#v{Version} ({Kind} for {User})"
        + (PreviousRetiresAt is { } at
            ? string.Create(CultureInfo.InvariantCulture, $"; the previous version stays usable until {at:yyyy-MM-ddTHH:mm:ssZ}, then it is destroyed")
            : "");
}

/// <summary>The three kinds of secret `vault set` takes.</summary>
public enum VaultSecretKind
{
    Password,
    AccessToken,
    RefreshToken,
}

/// <summary>
/// set and rotate for the CLI and the admin API alike: build the <see cref="NewSecret"/>, store it, decrypt it once through
/// the tenant's HSM key (audited, purpose cli-verify: what the gateway will do per AUTH), and say what was stored.
/// </summary>
public static class VaultOperations
{
    /// <summary>Takes ownership of <paramref name="secret"/> and <paramref name="second"/> (zeroed here or by the NewSecret).</summary>
    public static NewSecret Secret(VaultSecretKind kind, string user, byte[] secret, byte[]? second, string? tokenEndpoint, string? clientId)
    {
        if (kind != VaultSecretKind.RefreshToken && second is not null)
        {
            // Only a refresh token has a second line (the client secret); anything else there is dropped unread.
            CryptographicOperations.ZeroMemory(second);
            second = null;
        }

        return kind switch
        {
            VaultSecretKind.Password => NewSecret.Password(user, secret),
            VaultSecretKind.AccessToken => NewSecret.AccessToken(user, secret),
            _ => NewSecret.RefreshToken(user, secret, second, tokenEndpoint!, clientId!),
        };
    }

    /// <param name="grace">Null for a set (a new name); a rotation's grace otherwise.</param>
    public static VaultStored Store(CredentialVault vault, string tenant, string name, NewSecret secret, TimeSpan? grace, string? channel = null, string? tokenId = null)
    {
        var stored = grace is { } period ? vault.Rotate(tenant, name, secret, period, channel, tokenId) : vault.Set(tenant, name, secret, channel, tokenId);
        vault.Verify(stored);
        var retiring = grace is null ? null : vault.Usable(tenant, stored.Name).Skip(1).FirstOrDefault()?.RetiresAt;
        return new VaultStored(stored.Name, stored.Version, stored.Kind.ToString().ToLowerInvariant(), stored.UserName, stored.Created, retiring);
    }
}

/// <summary>
/// The JSON body of the admin API's vault set (PUT) and rotate (POST):
/// <c>{"user", "password"}</c>, <c>{"user", "accessToken"}</c> or <c>{"user", "refreshToken", "clientSecret"?, "tokenEndpoint", "clientId"}</c>,
/// plus <c>"grace"</c> ("hh:mm:ss") for a rotation. Read with a reader, not a serializer: the secrets go straight from the
/// (pinned, zeroed) request buffer into pinned byte arrays and never become strings. Every error is collected.
/// </summary>
public sealed class VaultSecretBody : IDisposable
{
    /// <summary>A body is a few short fields; anything longer is refused before it is parsed.</summary>
    public const int MaxBytes = 64 * 1024;

    byte[]? _secret;
    byte[]? _clientSecret;

    public VaultSecretKind? Kind { get; private set; }

    public string? User { get; private set; }

    public string? TokenEndpoint { get; private set; }

    public string? ClientId { get; private set; }

    public TimeSpan? Grace { get; private set; }

    /// <summary>Parses <paramref name="json"/>; every problem goes into <paramref name="errors"/> (field → messages).</summary>
    public static VaultSecretBody Parse(ReadOnlySpan<byte> json, bool rotate, Dictionary<string, List<string>> errors)
    {
        var body = new VaultSecretBody();
        var kinds = new List<string>();
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 2 });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                Add(errors, "body", "a JSON object is required.");
                return body;
            }

            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var field = reader.GetString()!;
                reader.Read();
                switch (field)
                {
                    case "user":
                        body.User = Text(ref reader, field, 256, errors);
                        break;
                    case "tokenEndpoint":
                        body.TokenEndpoint = Text(ref reader, field, 2048, errors);
                        break;
                    case "clientId":
                        body.ClientId = Text(ref reader, field, 512, errors);
                        break;
                    case "grace" when rotate:
                        var grace = Text(ref reader, field, 64, errors);
                        if (grace is not null)
                        {
                            body.Grace = TimeSpan.TryParse(grace, CultureInfo.InvariantCulture, out var g) && g >= TimeSpan.Zero ? g
                                : Error<TimeSpan?>(errors, field, "the grace period is a duration such as \"00:10:00\" or \"1.00:00:00\".");
                        }

                        break;
                    case "password" or "accessToken" or "refreshToken":
                        kinds.Add(field);
                        var secret = Bytes(ref reader, field, errors);
                        Replace(ref body._secret, secret);
                        body.Kind = field == "password" ? VaultSecretKind.Password : field == "accessToken" ? VaultSecretKind.AccessToken : VaultSecretKind.RefreshToken;
                        break;
                    case "clientSecret":
                        Replace(ref body._clientSecret, Bytes(ref reader, field, errors));
                        break;
                    default:
                        Add(errors, field.Length <= 64 ? field : field[..64], rotate || field != "grace" ? "unknown field." : "grace goes with a rotation (POST .../rotate).");
                        reader.Skip();
                        break;
                }
            }
        }
        catch (JsonException)
        {
            Add(errors, "body", "the body is not valid JSON.");
            return body;
        }

        body.Check(kinds, errors);
        return body;
    }

    void Check(List<string> kinds, Dictionary<string, List<string>> errors)
    {
        if (User is null && !errors.ContainsKey("user"))
        {
            Add(errors, "user", "the user name is required.");
        }

        if (kinds.Count != 1)
        {
            Add(errors, "secret", "give exactly one of password, accessToken, refreshToken.");
        }

        var refresh = Kind == VaultSecretKind.RefreshToken;
        if (refresh != (TokenEndpoint is not null) || refresh != (ClientId is not null))
        {
            Add(errors, "refreshToken", "tokenEndpoint and clientId go with refreshToken, and it needs both.");
        }

        if (refresh && TokenEndpoint is not null && OAuth2TokenClient.EndpointError(TokenEndpoint) is { } endpointError)
        {
            Add(errors, "tokenEndpoint", endpointError + ".");
        }

        if (_clientSecret is not null && !refresh)
        {
            Add(errors, "clientSecret", "a client secret goes with refreshToken only.");
        }

        if (refresh && _secret is not null && _secret.AsSpan().Contains((byte)'\n'))
        {
            Add(errors, "refreshToken", "a refresh token cannot contain a line feed.");
        }
    }

    /// <summary>The secret to store; ownership of the bytes passes to it. Only after a parse without errors.</summary>
    public NewSecret ToSecret()
    {
        var secret = _secret ?? throw new InvalidOperationException("no secret");
        var second = _clientSecret;
        _secret = null;
        _clientSecret = null;
        return VaultOperations.Secret(Kind!.Value, User!, secret, second, TokenEndpoint, ClientId);
    }

    public void Dispose()
    {
        Replace(ref _secret, null);
        Replace(ref _clientSecret, null);
    }

    /// <summary>
    /// The body for <paramref name="kind"/> as the CLI sends it, written into a pinned buffer the caller zeroes after
    /// sending; returns the buffer and the length used. <paramref name="secret"/> and <paramref name="second"/> stay the caller's.
    /// </summary>
    public static (byte[] Buffer, int Length) Write(VaultSecretKind kind, string user, ReadOnlySpan<byte> secret, ReadOnlySpan<byte> second,
        string? tokenEndpoint, string? clientId, TimeSpan? grace)
    {
        // Escaping writes at most 6 bytes per input byte ("\u00XX"); the rest is short text.
        var buffer = SecretBuffer.Allocate((6 * (secret.Length + second.Length)) + (18 * (user.Length + (tokenEndpoint?.Length ?? 0) + (clientId?.Length ?? 0))) + 8192);
        try
        {
            var output = new FixedBufferWriter(buffer);
            using (var writer = new Utf8JsonWriter(output))
            {
                writer.WriteStartObject();
                writer.WriteString("user", user);
                writer.WriteString(kind switch { VaultSecretKind.Password => "password", VaultSecretKind.AccessToken => "accessToken", _ => "refreshToken" }, secret);
                if (kind == VaultSecretKind.RefreshToken)
                {
                    if (!second.IsEmpty)
                    {
                        writer.WriteString("clientSecret", second);
                    }

                    writer.WriteString("tokenEndpoint", tokenEndpoint);
                    writer.WriteString("clientId", clientId);
                }

                if (grace is { } g)
                {
                    writer.WriteString("grace", g.ToString("c", CultureInfo.InvariantCulture));
                }

                writer.WriteEndObject();
            }

            return (buffer, output.Written);
        }
        catch
        {
            CryptographicOperations.ZeroMemory(buffer);
            throw;
        }
    }

    static string? Text(ref Utf8JsonReader reader, string field, int maxLength, Dictionary<string, List<string>> errors)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            reader.Skip();
            return Error<string?>(errors, field, "must be a string.");
        }

        var value = reader.GetString()!;
        return value.Length == 0 || value.Length > maxLength || value.Any(char.IsControl)
            ? Error<string?>(errors, field, $"must be 1-{maxLength} characters without control characters.")
            : value;
    }

    /// <summary>A secret string value as UTF-8 bytes in a pinned array of its exact length (the scratch copy is zeroed).</summary>
    static byte[]? Bytes(ref Utf8JsonReader reader, string field, Dictionary<string, List<string>> errors)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            reader.Skip();
            return Error<byte[]?>(errors, field, "must be a string.");
        }

        var scratch = SecretBuffer.Allocate(reader.HasValueSequence ? checked((int)reader.ValueSequence.Length) : reader.ValueSpan.Length);
        try
        {
            var length = reader.CopyString(scratch);
            if (length == 0)
            {
                return Error<byte[]?>(errors, field, "must not be empty.");
            }

            var exact = SecretBuffer.Allocate(length);
            scratch.AsSpan(0, length).CopyTo(exact);
            return exact;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(scratch);
        }
    }

    static void Replace(ref byte[]? slot, byte[]? value)
    {
        if (slot is not null)
        {
            CryptographicOperations.ZeroMemory(slot);
        }

        slot = value;
    }

    static T Error<T>(Dictionary<string, List<string>> errors, string field, string message)
    {
        Add(errors, field, message);
        return default!;
    }

    static void Add(Dictionary<string, List<string>> errors, string field, string message)
    {
        if (!errors.TryGetValue(field, out var list))
        {
            errors[field] = list = [];
        }

        list.Add(message);
    }

    /// <summary>An <see cref="IBufferWriter{T}"/> over one array that never grows (growing would leave secret copies behind).</summary>
    sealed class FixedBufferWriter(byte[] buffer) : IBufferWriter<byte>
    {
        public int Written { get; private set; }

        public void Advance(int count) => Written += count;

        public Memory<byte> GetMemory(int sizeHint = 0) =>
            buffer.Length - Written >= Math.Max(sizeHint, 1) ? buffer.AsMemory(Written) : throw new InvalidOperationException("the request body does not fit its buffer");

        public Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;
    }
}
