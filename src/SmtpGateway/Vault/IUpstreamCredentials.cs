using System.Security.Cryptography;

namespace SmtpGateway.Vault;

/// <summary>What a stored upstream credential is: a password (AUTH PLAIN/LOGIN) or an OAuth 2.0 bearer token (XOAUTH2).</summary>
public enum UpstreamCredentialKind
{
    Password,
    OAuth2,
}

/// <summary>One version of a tenant's named upstream credential, as far as it is not secret.</summary>
/// <param name="Tenant">Owner; always the spooled envelope's tenant, never anything from message content.</param>
/// <param name="Name">Credential name the tenant's egress config refers to.</param>
/// <param name="Version">1, 2, … in order of creation; part of the pool key, so a rotation opens new connections.</param>
/// <param name="Kind">Password or OAuth2.</param>
/// <param name="UserName">The SASL user name (authcid); not secret.</param>
/// <param name="Created">When this version was stored.</param>
/// <param name="RetiresAt">Set by a rotation: after this the version is destroyed; until then it is the fallback.</param>
public sealed record UpstreamCredentialVersion(string Tenant, string Name, int Version, UpstreamCredentialKind Kind, string UserName,
    DateTimeOffset Created, DateTimeOffset? RetiresAt);

/// <summary>
/// A decrypted secret for the length of one AUTH exchange: the password or access token as UTF-8 bytes in a buffer of
/// its own, zeroed on <see cref="Dispose"/> (ARCHITECTURE.md §4 promise 4). Never turned into a string.
/// </summary>
public sealed class UpstreamSecret(UpstreamCredentialVersion version, byte[] secret) : IDisposable
{
    bool _disposed;

    public UpstreamCredentialVersion Version { get; } = version;

    /// <summary>The secret bytes; valid until disposed.</summary>
    public ReadOnlySpan<byte> Secret
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return secret;
        }
    }

    public void Dispose()
    {
        if (!_disposed)
        {
            _disposed = true;
            CryptographicOperations.ZeroMemory(secret);
        }
    }

    // Never print the secret, whatever formats this object.
    public override string ToString() => $"UpstreamSecret {{ {Version.Tenant}/{Version.Name}#v{Version.Version} }}";
}

/// <summary>A credential could not be produced: none stored, undecryptable, token endpoint refused. The message is safe to log.</summary>
public sealed class UpstreamCredentialException(string message, bool transient, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>True when a later attempt may succeed (HSM down, token endpoint unreachable); the delivery is deferred either way.</summary>
    public bool Transient { get; } = transient;
}

/// <summary>
/// The tenants' upstream credentials as Delivery sees them (the vault, src/SmtpGateway/Vault). Every decryption and every
/// refusal by the upstream server is an audit event (tenant, credential, version, purpose, queue id, result).
/// </summary>
public interface IUpstreamCredentials
{
    /// <summary>Versions usable for a new connection now, newest first: the current one, then any still in their
    /// rotation grace window (the fallback when the upstream refuses the new one). Empty when the tenant has none.</summary>
    IReadOnlyList<UpstreamCredentialVersion> Usable(string tenant, string name);

    /// <summary>Decrypts a version for one AUTH (OAuth2 with a refresh token: a current access token, refreshed over https
    /// first when it is near expiry). Throws <see cref="UpstreamCredentialException"/>, audited, when it cannot.</summary>
    ValueTask<UpstreamSecret> OpenAsync(UpstreamCredentialVersion version, string purpose, string? queueId, CancellationToken cancellationToken);

    /// <summary>The upstream server refused the credential (535 and kin): audit event and per-tenant counter.</summary>
    void Refused(UpstreamCredentialVersion version, string? queueId, string reply);
}
