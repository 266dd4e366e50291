using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Hsm;

namespace SmtpGateway.Vault;

/// <summary>One row of `vault list`: a version and what is known of it without decrypting anything.</summary>
/// <param name="Grant">For OAuth2: "access-token" or "refresh-token".</param>
/// <param name="AccessTokenExpires">For a refresh-token record: when the last fetched access token expires.</param>
public sealed record VaultListing(UpstreamCredentialVersion Version, string? Grant, string? TokenEndpoint, string? ClientId, DateTimeOffset? AccessTokenExpires);

/// <summary>
/// The tenants' upstream credentials (spec-11 §2, issue #11 items 3 and 5): versioned records per tenant and name,
/// AES-256-GCM under a per-tenant data key sealed by a key-encryption key in the tenant's HSM token. Secrets exist in
/// plaintext only in byte arrays that are zeroed after use; every decryption is an audit event. Rotation keeps the
/// previous version usable for a grace window, after which it is removed from the file (on the next write and by
/// <see cref="Sweep"/>). Management (set, rotate, delete, list) is for the CLI; Delivery sees <see cref="IUpstreamCredentials"/>.
/// </summary>
public sealed partial class CredentialVault : IUpstreamCredentials, IDisposable
{
    public const string PurposeSmtpAuth = "smtp-auth";
    public const string PurposeRefresh = "oauth2-refresh";
    public const string PurposeVerify = "cli-verify";

    /// <summary>A rotation seals the previous versions again, because their retirement is part of their associated data.</summary>
    public const string PurposeRotate = "rotate";

    /// <summary>
    /// Lifetime assumed when a token endpoint omits expires_in (RFC 6749 section 5.1 only recommends it): the hour the
    /// large providers issue. A token that dies sooner is refused by the smarthost, and that defers, never bounces.
    /// </summary>
    static readonly TimeSpan DefaultAccessTokenLifetime = TimeSpan.FromHours(1);

    readonly VaultStore _store;
    readonly VaultCrypto _crypto;
    readonly IAuditLog _audit;
    readonly TimeProvider _time;
    readonly VaultConfig _config;
    readonly HttpMessageInvoker _http;
    readonly OAuth2TokenClient _tokens;
    readonly ILogger _logger;
    readonly Lock _writeLock = new();
    readonly ConcurrentDictionary<(string Tenant, string Name, int Version), Task<AccessTokenRecord>> _refreshes = new();

    /// <param name="tokenEndpointHandler">HTTP to the token endpoints (<see cref="OAuth2TokenClient.CreateHandler"/>); owned and disposed by the vault.</param>
    public CredentialVault(string dataDirectory, ITenantKeys keys, IAuditLog audit, TimeProvider time, VaultConfig config, HttpMessageHandler tokenEndpointHandler, ILogger<CredentialVault> logger)
    {
        _store = new VaultStore(dataDirectory, time);
        _crypto = new VaultCrypto(keys);
        _audit = audit;
        _time = time;
        _config = config;
        _http = new HttpMessageInvoker(tokenEndpointHandler, disposeHandler: true);
        _tokens = new OAuth2TokenClient(_http, config.TokenEndpointTimeout, time);
        _logger = logger;
    }

    /// <summary>Where the tenant's file is (for operators and tests).</summary>
    public string PathFor(string tenant) => _store.PathFor(tenant);

    public void Dispose() => _http.Dispose();

    // ---- management (CLI) ----

    /// <summary>Stores the first version of a new credential (1, or past any number a deleted one of that name used);
    /// refuses a name that exists (a second secret is a rotation).</summary>
    /// <param name="channel">The door the change came through ("api"; null for the CLI acting on the files), for the audit event.</param>
    /// <param name="tokenId">The admin key id that asked for it, for the audit event.</param>
    public UpstreamCredentialVersion Set(string tenant, string name, NewSecret secret, string? channel = null, string? tokenId = null)
    {
        CheckName(name);
        var version = Write(tenant, document =>
        {
            if (document.Find(name) is not null)
            {
                throw new InvalidOperationException($"tenant '{tenant}' already has a credential '{name}'; use `vault rotate` to replace it");
            }

            return AddVersion(tenant, document, name, document.NextVersion(name), secret, []);
        });
        Audited(AuditActions.VaultSet, version, $"{version.Kind} for {version.UserName}", channel, tokenId);
        return version;
    }

    /// <summary>
    /// Stores a new current version; the versions before it stay usable until now + <paramref name="grace"/> (default
    /// Gateway:Vault:RotationGrace) and are destroyed after. A version already retiring sooner keeps its earlier time.
    /// </summary>
    public UpstreamCredentialVersion Rotate(string tenant, string name, NewSecret secret, TimeSpan? grace = null, string? channel = null, string? tokenId = null)
    {
        CheckName(name);
        var period = grace ?? _config.RotationGrace;
        if (period < TimeSpan.Zero)
        {
            throw new ArgumentException("the grace period must not be negative", nameof(grace));
        }

        var retiring = DateTimeOffset.MinValue;
        var version = Write(tenant, document =>
        {
            var credential = document.Find(name) ?? throw new InvalidOperationException($"tenant '{tenant}' has no credential '{name}'; use `vault set` to create it");
            retiring = _time.GetUtcNow() + period;
            var kept = credential.Versions.Select(v => v.RetiresAt is { } at && at <= retiring ? v : Reseal(tenant, name, document, v, v with { RetiresAt = retiring })).ToList();
            return AddVersion(tenant, document, name, document.NextVersion(name), secret, kept);
        });
        Audited(AuditActions.VaultRotate, version, $"{version.Kind} for {version.UserName}; previous versions retire {retiring:O}", channel, tokenId);
        return version;
    }

    /// <summary>Destroys one version, or every version of the name; returns how many went (0: nothing by that name).</summary>
    public int Delete(string tenant, string name, int? version = null, string? channel = null, string? tokenId = null)
    {
        CheckName(name);
        var removed = Write(tenant, document =>
        {
            if (document.Find(name) is not { } credential)
            {
                return (document, 0);
            }

            var kept = credential.Versions.Where(v => version is { } only && v.Version != only).ToList();
            return (document.With(credential with { Versions = kept }), credential.Versions.Count - kept.Count);
        });
        if (removed > 0)
        {
            _audit.Write(new AuditEvent
            {
                Action = AuditActions.VaultDelete, Result = "ok", Tenant = tenant, Subject = version is { } v ? Subject(name, v) : $"{name} (all versions)",
                Channel = channel, TokenId = tokenId,
            });
        }

        return removed;
    }

    /// <summary>Every version not yet destroyed, by name and newest first. Nothing here is secret.</summary>
    public IReadOnlyList<VaultListing> List(string tenant)
    {
        var now = _time.GetUtcNow();
        return [.. Read(tenant).Credentials.OrderBy(c => c.Name, StringComparer.Ordinal)
            .SelectMany(c => c.Versions.Where(v => !v.Retired(now)).OrderByDescending(v => v.Version)
                .Select(v => new VaultListing(ToVersion(tenant, c.Name, v), GrantName(v.Grant), v.TokenEndpoint, v.ClientId, v.Access?.Expires)))];
    }

    /// <summary>Decrypts a version and throws the plaintext away: proves the record and the tenant's HSM key agree (audited, purpose cli-verify).</summary>
    public void Verify(UpstreamCredentialVersion version)
    {
        var document = Read(version.Tenant);
        var record = Find(document, version, PurposeVerify, null);
        CryptographicOperations.ZeroMemory(Decrypt(version, document, record.Ciphertext, VaultCrypto.RecordAad(version.Tenant, version.Name, record), PurposeVerify, null));
    }

    /// <summary>Removes every version past its grace window from every tenant's file; returns how many went.</summary>
    public int Sweep()
    {
        var now = _time.GetUtcNow();
        var destroyed = 0;
        foreach (var tenant in _store.Tenants())
        {
            try
            {
                // Cheap check on the cached copy first: most sweeps find nothing to do and must not take the lock.
                if (_store.Cached(tenant).Credentials.Any(c => c.Versions.Any(v => v.Retired(now))))
                {
                    Write(tenant, document => (document, 0), out var count);
                    destroyed += count;
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                VaultLog.SweepFailed(_logger, tenant, ex);
            }
        }

        return destroyed;
    }

    // ---- IUpstreamCredentials (Delivery) ----

    public IReadOnlyList<UpstreamCredentialVersion> Usable(string tenant, string name)
    {
        var now = _time.GetUtcNow();
        if (Read(tenant, cached: true).Find(name) is not { } credential)
        {
            return [];
        }

        // The current version (not retiring) first, then the fallbacks still in their window, newest first.
        return [.. credential.Versions.Where(v => !v.Retired(now))
            .OrderBy(v => v.RetiresAt is null ? 0 : 1).ThenByDescending(v => v.Version)
            .Select(v => ToVersion(tenant, name, v))];
    }

    public async ValueTask<UpstreamSecret> OpenAsync(UpstreamCredentialVersion version, string purpose, string? queueId, CancellationToken cancellationToken)
    {
        var document = Read(version.Tenant);
        var record = Find(document, version, purpose, queueId);
        if (!record.Refreshable)
        {
            var aad = VaultCrypto.RecordAad(version.Tenant, version.Name, record);
            return new UpstreamSecret(version, Decrypt(version, document, record.Ciphertext, aad, purpose, queueId));
        }

        var access = record.Access;
        if (access is null || access.Expires - _time.GetUtcNow() <= _config.RefreshBefore)
        {
            try
            {
                access = await RefreshOnce(version, queueId).WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (UpstreamCredentialException) when (access is not null && access.Expires > _time.GetUtcNow())
            {
                // The endpoint is down or refusing, but the token in hand has not expired yet: use it. RefreshBefore is a
                // margin, not a deadline, and a token endpoint outage must not stop mail while tokens still work.
            }
        }

        return new UpstreamSecret(version, Decrypt(version, document, access.Ciphertext, VaultCrypto.AccessAad(version.Tenant, version.Name, version.Version, access.Expires), purpose, queueId));
    }

    /// <summary>
    /// Audit event and log line; the per-tenant counter is Delivery's (UpstreamAuthenticator counts the 535 where it
    /// happens), so a refusal is counted once.
    /// </summary>
    public void Refused(UpstreamCredentialVersion version, string? queueId, string reply)
    {
        UpstreamRefused(version, queueId, Printable(reply));
        if (version.Kind == UpstreamCredentialKind.OAuth2)
        {
            ForgetAccessToken(version);
        }
    }

    /// <summary>
    /// A refused bearer token may have been revoked before its expiry: drop it, so that the next AUTH fetches a new one
    /// with the refresh token instead of offering the dead one until it nears expiry.
    /// </summary>
    void ForgetAccessToken(UpstreamCredentialVersion version)
    {
        try
        {
            Write(version.Tenant, document =>
                document.Find(version.Name) is { } credential && credential.Versions.FirstOrDefault(v => v.Version == version.Version) is { Refreshable: true, Access: not null } record
                    ? (document.With(credential with { Versions = [.. credential.Versions.Select(v => v == record ? v with { Access = null } : v)] }), 0)
                    : (document, 0));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            // The refusal is already audited and counted; the stale token is then replaced when it nears expiry.
            VaultLog.ForgetFailed(_logger, version.Tenant, Subject(version.Name, version.Version), ex);
        }
    }

    void UpstreamRefused(UpstreamCredentialVersion version, string? queueId, string reason)
    {
        VaultLog.UpstreamRefused(_logger, version.Tenant, Subject(version.Name, version.Version), queueId, reason);
        _audit.Write(new AuditEvent
        {
            Action = AuditActions.UpstreamAuth, Result = "refused", Tenant = version.Tenant, Subject = Subject(version.Name, version.Version), Reason = reason, QueueId = queueId,
        });
    }

    // ---- OAuth 2.0 refresh ----

    /// <summary>One refresh per record at a time: callers that arrive while one runs wait for it (and then decrypt its result themselves).</summary>
    Task<AccessTokenRecord> RefreshOnce(UpstreamCredentialVersion version, string? queueId)
    {
        var key = (version.Tenant, version.Name, version.Version);
        while (true)
        {
            if (_refreshes.TryGetValue(key, out var running))
            {
                return running;
            }

            var done = new TaskCompletionSource<AccessTokenRecord>(TaskCreationOptions.RunContinuationsAsynchronously);
            if (_refreshes.TryAdd(key, done.Task))
            {
                _ = RunAsync(done);
                return done.Task;
            }
        }

        async Task RunAsync(TaskCompletionSource<AccessTokenRecord> done)
        {
            AccessTokenRecord? access = null;
            Exception? failure = null;
            try
            {
                // Not the caller's token: other callers wait for this refresh too; the endpoint timeout bounds it.
                access = await RefreshAsync(version, queueId).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                failure = ex;
            }

            // Out of the table before anyone is released: a caller resumed by the result (on another thread) that
            // opens again must start a new refresh, not be handed this finished one.
            _refreshes.TryRemove(new KeyValuePair<(string, string, int), Task<AccessTokenRecord>>(key, done.Task));
            if (failure is null)
            {
                done.SetResult(access!);
            }
            else
            {
                done.SetException(failure);
            }
        }
    }

    async Task<AccessTokenRecord> RefreshAsync(UpstreamCredentialVersion version, string? queueId)
    {
        await Task.Yield();
        var tenant = version.Tenant;
        var subject = Subject(version.Name, version.Version);
        var document = Read(tenant);
        var record = Find(document, version, PurposeRefresh, queueId);
        // Another process (or an earlier refresh here) may have stored a fresh token since the caller looked.
        if (record.Access is { } stored && stored.Expires - _time.GetUtcNow() > _config.RefreshBefore)
        {
            return stored;
        }

        var payload = Decrypt(version, document, record.Ciphertext, VaultCrypto.RecordAad(tenant, version.Name, record), PurposeRefresh, queueId);
        try
        {
            var split = Array.IndexOf(payload, (byte)'\n');
            var refreshToken = split < 0 ? payload.AsMemory() : payload.AsMemory(0, split);
            var clientSecret = split < 0 ? ReadOnlyMemory<byte>.Empty : payload.AsMemory(split + 1);
            TokenResponse response;
            try
            {
                response = await _tokens.RefreshAsync(record.TokenEndpoint ?? "", record.ClientId ?? "", refreshToken, clientSecret, CancellationToken.None).ConfigureAwait(false);
            }
            catch (UpstreamCredentialException ex)
            {
                VaultLog.RefreshFailed(_logger, tenant, subject, ex.Transient, ex.Message);
                if (!ex.Transient)
                {
                    // The endpoint refused the refresh token (revoked, expired): the same as a smarthost's 535.
                    VaultMetrics.TokenEndpointRefused(tenant);
                    UpstreamRefused(version, queueId, $"token endpoint: {ex.Message}");
                }

                throw;
            }

            using (response)
            {
                var expires = DateTimeOffset.FromUnixTimeSeconds((_time.GetUtcNow() + (response.ExpiresIn ?? DefaultAccessTokenLifetime)).ToUnixTimeSeconds());
                var access = Store(version, response, clientSecret.Span, expires);
                VaultLog.Refreshed(_logger, tenant, subject, expires, response.RefreshToken is not null);
                return access;
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(payload);
        }
    }

    /// <summary>Seals the new access token (and a rotated refresh token, with the same client secret) into the record.</summary>
    AccessTokenRecord Store(UpstreamCredentialVersion version, TokenResponse response, ReadOnlySpan<byte> clientSecret, DateTimeOffset expires)
    {
        byte[]? rotated = null;
        if (response.RefreshToken is { Length: > 0 } newRefresh)
        {
            rotated = SecretBuffer.Allocate(newRefresh.Length + (clientSecret.IsEmpty ? 0 : 1 + clientSecret.Length));
            newRefresh.CopyTo(rotated, 0);
            if (!clientSecret.IsEmpty)
            {
                rotated[newRefresh.Length] = (byte)'\n';
                clientSecret.CopyTo(rotated.AsSpan(newRefresh.Length + 1));
            }
        }

        try
        {
            var (tenant, name, number) = (version.Tenant, version.Name, version.Version);
            return Write(tenant, document =>
            {
                var credential = document.Find(name);
                var record = credential?.Versions.FirstOrDefault(v => v.Version == number)
                    ?? throw new UpstreamCredentialException($"{Subject(name, number)} of tenant '{tenant}' was deleted during the refresh", transient: false);
                var sealedKey = document.DataKey ?? throw new UpstreamCredentialException($"the vault of tenant '{tenant}' has no data key", transient: false);
                var updated = _crypto.WithDataKey(tenant, sealedKey, dataKey => record with
                {
                    Access = new AccessTokenRecord(expires, VaultCrypto.Seal(dataKey, response.AccessToken, VaultCrypto.AccessAad(tenant, name, number, expires))),
                    Ciphertext = rotated is null ? record.Ciphertext : VaultCrypto.Seal(dataKey, rotated, VaultCrypto.RecordAad(tenant, name, record)),
                });
                return (document.With(credential! with { Versions = [.. credential.Versions.Select(v => v.Version == number ? updated : v)] }), updated.Access!);
            });
        }
        catch (IOException ex)
        {
            // The file lock was not had in time, or the disk refused the write: temporary, like an HSM outage.
            throw new UpstreamCredentialException($"cannot store the refreshed token of {Subject(version.Name, version.Version)}: {ex.GetType().Name}", transient: true, ex);
        }
        catch (HsmException ex)
        {
            throw new UpstreamCredentialException($"cannot store the refreshed token of {Subject(version.Name, version.Version)}: {ex.Message}", ex.Transient, ex);
        }
        finally
        {
            if (rotated is not null)
            {
                CryptographicOperations.ZeroMemory(rotated);
            }
        }
    }

    // ---- records ----

    /// <summary>Decrypts one ciphertext of the tenant's file, audited (vault-decrypt: ok, refused or error).</summary>
    byte[] Decrypt(UpstreamCredentialVersion version, VaultDocument document, string ciphertext, byte[] associatedData, string purpose, string? queueId)
    {
        var tenant = version.Tenant;
        var subject = Subject(version.Name, version.Version);
        try
        {
            var sealedKey = document.DataKey ?? throw new HsmException(HsmErrorKind.DataInvalid, tenant, "the vault file has records but no data key");
            var plaintext = _crypto.WithDataKey(tenant, sealedKey, dataKey => VaultCrypto.Open(tenant, dataKey, ciphertext, associatedData));
            AuditDecrypt(tenant, subject, purpose, queueId, "ok");
            return plaintext;
        }
        catch (Exception ex) when (ex is HsmException { Kind: HsmErrorKind.DataInvalid or HsmErrorKind.KeyNotFound or HsmErrorKind.KeyMismatch } or FormatException)
        {
            // Not this tenant's record (copied from another tenant's file), altered, or sealed under a key this token lacks.
            VaultLog.Refused(_logger, tenant, subject, purpose, queueId, ex.Message);
            AuditDecrypt(tenant, subject, purpose, queueId, "refused");
            throw new UpstreamCredentialException($"{subject} of tenant '{tenant}' does not decrypt: it was altered or is not this tenant's", transient: false, ex);
        }
        catch (HsmException ex)
        {
            VaultLog.DecryptFailed(_logger, tenant, subject, purpose, queueId, ex.Message);
            AuditDecrypt(tenant, subject, purpose, queueId, "error");
            throw new UpstreamCredentialException($"{subject} of tenant '{tenant}' cannot be decrypted now: {ex.Message}", ex.Transient, ex);
        }
    }

    void AuditDecrypt(string tenant, string subject, string purpose, string? queueId, string result)
    {
        VaultMetrics.Decrypted(tenant, result);
        _audit.Write(new AuditEvent { Action = AuditActions.VaultDecrypt, Result = result, Tenant = tenant, Subject = subject, Reason = purpose, QueueId = queueId });
    }

    /// <summary>The record behind a version; a missing or retired one is an audited error (the caller defers).</summary>
    VaultRecord Find(VaultDocument document, UpstreamCredentialVersion version, string purpose, string? queueId)
    {
        if (document.Find(version.Name, version.Version) is { } record && !record.Retired(_time.GetUtcNow()))
        {
            return record;
        }

        AuditDecrypt(version.Tenant, Subject(version.Name, version.Version), purpose, queueId, "error");
        throw new UpstreamCredentialException($"{Subject(version.Name, version.Version)} of tenant '{version.Tenant}' no longer exists (deleted or past its grace window)", transient: false);
    }

    /// <summary>
    /// <paramref name="changed"/> with its secret sealed again under its new associated data (a rotation sets the previous
    /// versions' retirement, which is bound to the ciphertext). A record that no longer authenticates stops the rotation.
    /// </summary>
    VaultRecord Reseal(string tenant, string name, VaultDocument document, VaultRecord current, VaultRecord changed)
    {
        var sealedKey = document.DataKey ?? throw new InvalidDataException($"the vault of tenant '{tenant}' has records but no data key");
        return _crypto.WithDataKey(tenant, sealedKey, dataKey =>
        {
            var plaintext = VaultCrypto.Open(tenant, dataKey, current.Ciphertext, VaultCrypto.RecordAad(tenant, name, current));
            AuditDecrypt(tenant, Subject(name, current.Version), PurposeRotate, null, "ok");
            try
            {
                // A stored access token is bound to its record by tenant, name and version only, so it stays valid.
                return changed with { Ciphertext = VaultCrypto.Seal(dataKey, plaintext, VaultCrypto.RecordAad(tenant, name, changed)) };
            }
            finally
            {
                CryptographicOperations.ZeroMemory(plaintext);
            }
        });
    }

    (VaultDocument Document, UpstreamCredentialVersion Version) AddVersion(string tenant, VaultDocument document, string name, int number, NewSecret secret, List<VaultRecord> previous)
    {
        var sealedKey = document.DataKey ?? _crypto.NewDataKey(tenant);
        var payload = secret.Payload();
        try
        {
            var record = new VaultRecord(number, secret.Kind, secret.Grant, secret.UserName, _time.GetUtcNow(), null, secret.TokenEndpoint, secret.ClientId, "", null);
            record = record with { Ciphertext = _crypto.WithDataKey(tenant, sealedKey, dataKey => VaultCrypto.Seal(dataKey, payload, VaultCrypto.RecordAad(tenant, name, record))) };
            return (document.With(new VaultCredential(name, [.. previous, record])) with { DataKey = sealedKey }, ToVersion(tenant, name, record));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(payload);
        }
    }

    /// <summary>A read-modify-write of the tenant's file that also destroys every version past its grace window.</summary>
    T Write<T>(string tenant, Func<VaultDocument, (VaultDocument Document, T Result)> change) => Write(tenant, change, out _);

    T Write<T>(string tenant, Func<VaultDocument, (VaultDocument Document, T Result)> change, out int destroyedCount)
    {
        lock (_writeLock)
        {
            IReadOnlyList<(string Name, int Version)> destroyed = [];
            var result = _store.Update(tenant, document =>
            {
                var kept = document.WithoutRetired(_time.GetUtcNow(), out destroyed);
                var (changed, value) = change(kept);
                return (ReferenceEquals(changed, kept) ? (destroyed.Count > 0 ? kept : document) : changed, value);
            });
            foreach (var (name, version) in destroyed)
            {
                VaultLog.Destroyed(_logger, tenant, Subject(name, version));
            }

            destroyedCount = destroyed.Count;
            return result;
        }
    }

    VaultDocument Read(string tenant, bool cached = false)
    {
        try
        {
            return cached ? _store.Cached(tenant) : _store.Load(tenant);
        }
        catch (InvalidDataException ex)
        {
            throw new UpstreamCredentialException(ex.Message, transient: false, ex);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new UpstreamCredentialException($"cannot read the vault of tenant '{tenant}': {ex.Message}", transient: true, ex);
        }
    }

    static UpstreamCredentialVersion ToVersion(string tenant, string name, VaultRecord record) =>
        new(tenant, name, record.Version, record.Kind, record.UserName, record.Created, record.RetiresAt);

    void Audited(string action, UpstreamCredentialVersion version, string reason, string? channel, string? tokenId) =>
        _audit.Write(new AuditEvent
        {
            Action = action, Result = "ok", Tenant = version.Tenant, Subject = Subject(version.Name, version.Version), Reason = reason, Channel = channel, TokenId = tokenId,
        });

    static string Subject(string name, int version) => $"{name}#v{version}";

    static string? GrantName(OAuth2Grant? grant) => grant switch
    {
        OAuth2Grant.AccessToken => "access-token",
        OAuth2Grant.RefreshToken => "refresh-token",
        _ => null,
    };

    /// <summary>A smarthost reply for the audit trail and log: printable ASCII, at most 200 characters.</summary>
    static string Printable(string reply)
    {
        var text = new string([.. reply.Select(c => c is >= ' ' and <= '~' ? c : ' ')]).Trim();
        return text.Length <= 200 ? text : text[..200];
    }

    /// <summary>Names are part of the associated data (NUL-separated) and of the egress config: a short plain token.</summary>
    internal static void CheckName(string name)
    {
        if (!NamePattern().IsMatch(name))
        {
            throw new ArgumentException($"'{name}' is not a credential name (1-64 letters, digits, '.', '_' or '-', starting with a letter or digit)");
        }
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\\z")]
    private static partial Regex NamePattern();
}
