using System.Text.Json.Serialization;

namespace SmtpGateway.Vault;

/// <summary>
/// The file DataDirectory/vault/&lt;tenant&gt;.json. Everything secret is AES-256-GCM ciphertext (nonce ‖ ciphertext ‖ tag,
/// base64); everything else (names, versions, kinds, user names, dates, token endpoints, client ids) is in clear so that
/// `vault list` and the delivery's choice of version need no decryption. Treated as immutable: a change writes a new one.
/// </summary>
/// <param name="DataKey">The tenant's data key sealed by the key-encryption key in its HSM token; null until the first secret.</param>
internal sealed record VaultDocument(SealedDataKey? DataKey, IReadOnlyList<VaultCredential> Credentials)
{
    public static readonly VaultDocument Empty = new(null, []);

    /// <summary>Format of the file, for a later migration.</summary>
    public int Format { get; init; } = 1;

    /// <summary>
    /// The highest version ever issued per name, kept after deletion: a version number is part of the delivery's pool key
    /// and of the record's associated data, so it must never be issued twice for one name (a pooled connection authenticated
    /// with a deleted version must not pass for the new one, nor a restored copy of a deleted record decrypt as it).
    /// </summary>
    public IReadOnlyDictionary<string, int>? LastVersions { get; init; }

    /// <summary>The number the next version of <paramref name="name"/> gets.</summary>
    public int NextVersion(string name) =>
        Math.Max(LastVersions?.GetValueOrDefault(name) ?? 0, Find(name)?.Versions.Max(v => v.Version) ?? 0) + 1;

    public VaultCredential? Find(string name) => Credentials.FirstOrDefault(c => c.Name == name);

    public VaultRecord? Find(string name, int version) => Find(name)?.Versions.FirstOrDefault(v => v.Version == version);

    /// <summary>The document with one credential replaced (or added, or removed when it has no versions left).</summary>
    public VaultDocument With(VaultCredential credential) => this with
    {
        Credentials = [.. Credentials.Where(c => c.Name != credential.Name), .. credential.Versions.Count > 0 ? [credential] : Array.Empty<VaultCredential>()],
        LastVersions = credential.Versions.Count == 0 ? LastVersions : new Dictionary<string, int>(LastVersions ?? new Dictionary<string, int>(), StringComparer.Ordinal)
        {
            [credential.Name] = Math.Max(LastVersions?.GetValueOrDefault(credential.Name) ?? 0, credential.Versions.Max(v => v.Version)),
        },
    };

    /// <summary>Without the versions whose grace window has passed at <paramref name="now"/>; the same instance when none has.</summary>
    public VaultDocument WithoutRetired(DateTimeOffset now, out IReadOnlyList<(string Name, int Version)> destroyed)
    {
        destroyed = [.. Credentials.SelectMany(c => c.Versions.Where(v => v.Retired(now)).Select(v => (c.Name, v.Version)))];
        return destroyed.Count == 0 ? this : this with
        {
            Credentials = [.. Credentials.Select(c => c with { Versions = [.. c.Versions.Where(v => !v.Retired(now))] }).Where(c => c.Versions.Count > 0)],
        };
    }
}

/// <param name="Kek">Label of the key-encryption key in the tenant's token (smtpgw-vault-kek-&lt;n&gt;).</param>
/// <param name="Ciphertext">The 32-byte data key as sealed by ITenantKeys.Seal.</param>
internal sealed record SealedDataKey(string Kek, string Ciphertext);

internal sealed record VaultCredential(string Name, IReadOnlyList<VaultRecord> Versions);

/// <summary>How an OAuth 2.0 record gets its bearer token.</summary>
internal enum OAuth2Grant
{
    /// <summary>The stored secret is the access token itself (the operator renews it).</summary>
    AccessToken,

    /// <summary>The stored secret is a refresh token (line 2: optional client secret); access tokens are fetched from the token endpoint.</summary>
    RefreshToken,
}

/// <summary>One version of a credential.</summary>
/// <param name="Ciphertext">Password; or access token; or refresh token, then "\n" and the client secret when there is one.</param>
/// <param name="Access">The last access token fetched with the refresh token, when there is one.</param>
internal sealed record VaultRecord(
    int Version,
    UpstreamCredentialKind Kind,
    OAuth2Grant? Grant,
    string UserName,
    DateTimeOffset Created,
    DateTimeOffset? RetiresAt,
    string? TokenEndpoint,
    string? ClientId,
    string Ciphertext,
    AccessTokenRecord? Access)
{
    public bool Retired(DateTimeOffset now) => RetiresAt is { } at && at <= now;

    [JsonIgnore]
    public bool Refreshable => Kind == UpstreamCredentialKind.OAuth2 && Grant == OAuth2Grant.RefreshToken;

    // Never print ciphertext either: it is what a `vault list` must not show, and it makes logs a copy of the file.
    public override string ToString() => $"VaultRecord {{ Version = {Version}, Kind = {Kind}, UserName = {UserName}, RetiresAt = {RetiresAt:O} }}";
}

/// <param name="Expires">When the access token stops working (whole seconds: it is part of the associated data).</param>
internal sealed record AccessTokenRecord(DateTimeOffset Expires, string Ciphertext);

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    UseStringEnumConverter = true,
    WriteIndented = true)]
[JsonSerializable(typeof(VaultDocument))]
internal sealed partial class VaultJsonContext : JsonSerializerContext;
