using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using SmtpGateway.Configuration;

namespace SmtpGateway.Identity.Tokens;

/// <summary>Claims inside a token. Short names keep tokens short enough for one AUTH PLAIN line.</summary>
public sealed record TokenPayload(
    [property: JsonPropertyName("v")] int Version,
    [property: JsonPropertyName("t")] string Tenant,
    [property: JsonPropertyName("k")] string KeyId,
    [property: JsonPropertyName("i")] string Id,
    [property: JsonPropertyName("a")] string Audience,
    [property: JsonPropertyName("iat")] long IssuedAt,
    [property: JsonPropertyName("exp")] long ExpiresAt,
    [property: JsonPropertyName("s")] IReadOnlyList<string> Senders);

public sealed record MintedToken(string Token, TokenRecord Record)
{
    // The token is printed once, deliberately, by `token mint`; formatting the record must not print it again.
    public override string ToString() => $"MintedToken {{ Record = {Record} }}";
}

public enum TokenState
{
    Active,
    Expired,
    Revoked,
}

public sealed record TokenListItem(string Id, string Tenant, string? Description, IReadOnlyList<string> Senders, DateTimeOffset Issued, DateTimeOffset Expires, string State);

/// <summary>
/// Outcome of checking a presented token. <see cref="Reason"/> is for the audit log only, never the client.
/// <see cref="Temporary"/>: the token could not be checked now (its revocation state is unknown), so the answer is
/// "try again later", never "bad credentials".
/// </summary>
public sealed record TokenCheck(bool Valid, string? Reason, TokenPayload? Payload, bool Temporary = false)
{
    public static TokenCheck Fail(string reason, TokenPayload? payload = null) => new(false, reason, payload);
}

/// <summary>
/// Session tokens: "sgw1." base64url(claims JSON) "." base64url(HMAC-SHA256(tenant key, "sgw1." + claims)).
/// One fixed construction (no algorithm field to negotiate, unlike JWT), a per-tenant key chosen by the tenant the
/// client names, and a constant-time MAC comparison. The MAC is computed inside the tenant's HSM token (the key is
/// non-extractable there); the data directory holds only key and token metadata, from which no token can be rebuilt.
/// Verification refuses on every cheap check (shape, tenant, key, retirement, audience, expiry, revocation) before it
/// asks the token, so one AUTH costs at most one HSM MAC and garbage costs none. An unreachable token surfaces as an
/// <see cref="Hsm.HsmException"/>: the caller answers a temporary failure, never "bad credentials".
/// </summary>
public sealed class TokenService(TokenStore store, Func<TenantSnapshot> tenants, IdentityConfig config, TimeProvider time)
{
    const string Prefix = "sgw1.";

    /// <summary>The reason given when a valid-looking token of one tenant is presented under another tenant's name.</summary>
    public const string TenantMismatch = "token tenant differs from user name";

    /// <summary>Hostile-input bound: nothing longer is even decoded.</summary>
    public const int MaxTokenLength = 4096;

    public TokenStore Store => store;

    public MintedToken Mint(string tenantId, TimeSpan? ttl, IReadOnlyList<string> senders, string? description)
    {
        var tenant = tenants().Find(tenantId) ?? throw new TokenException($"Unknown tenant '{tenantId}'.");
        var lifetime = ttl ?? config.DefaultTokenTtl;
        var max = tenant.MaxTokenTtl ?? config.MaxTokenTtl;
        if (lifetime <= TimeSpan.Zero || lifetime > max)
        {
            throw new TokenException($"TTL must be positive and at most {max}.");
        }

        var scope = new List<string>();
        foreach (var sender in senders)
        {
            var domain = sender.Contains('@', StringComparison.Ordinal) ? DomainName.OfAddress(sender) : DomainName.Normalize(sender);
            if (domain is null || !tenant.OwnsSendingDomain(domain))
            {
                throw new TokenException($"Sender '{sender}' is not in a domain of tenant '{tenantId}'.");
            }

            scope.Add(sender.Contains('@', StringComparison.Ordinal) ? $"{sender[..sender.LastIndexOf('@')]}@{domain}" : domain);
        }

        if (description is { Length: > 200 } || (description?.Any(char.IsControl) ?? false))
        {
            throw new TokenException("Description must be at most 200 printable characters.");
        }

        store.Refresh();
        var now = time.GetUtcNow();
        var key = ActiveKey(tenantId, now);
        var id = "tok_" + Base64Url(RandomNumberGenerator.GetBytes(12));
        var payload = new TokenPayload(1, tenantId, key.Id, id, config.Audience, now.ToUnixTimeSeconds(), (now + lifetime).ToUnixTimeSeconds(), scope);
        var token = Sign(tenantId, payload, key);
        var record = new TokenRecord(id, tenantId, description, scope, now, now + lifetime, key.Id);
        store.AppendRegistry(new RegistryEntry("mint", record, null, now));
        return new MintedToken(token, record);
    }

    /// <summary>
    /// The tenant a token claims, unverified: a bearer token (MCP) comes without a user name, so the claim names the tenant
    /// whose key then verifies it in <see cref="Verify"/>, exactly as a SASL user name would. Null when it is no token.
    /// </summary>
    public static string? ClaimedTenant(string token)
    {
        if (token.Length is 0 or > MaxTokenLength || !token.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return null;
        }

        var parts = token.Split('.');
        try
        {
            // Claims are client input: a payload without "t" deserialises with a null tenant.
            return parts.Length == 3 && JsonSerializer.Deserialize(FromBase64Url(parts[1]), TokenJsonContext.Default.TokenPayload)?.Tenant is { } tenant
                && TenantSnapshot.IsValidTenantId(tenant) ? tenant : null;
        }
        catch (Exception ex) when (ex is FormatException or JsonException)
        {
            return null;
        }
    }

    /// <summary>Checks a token presented as the AUTH password by the user <paramref name="userName"/>.</summary>
    public TokenCheck Verify(string userName, string token)
    {
        if (token.Length is 0 or > MaxTokenLength || !token.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return TokenCheck.Fail("malformed token");
        }

        var parts = token.Split('.');
        if (parts.Length != 3)
        {
            return TokenCheck.Fail("malformed token");
        }

        TokenPayload? payload;
        byte[] mac;
        try
        {
            payload = JsonSerializer.Deserialize(FromBase64Url(parts[1]), TokenJsonContext.Default.TokenPayload);
            mac = FromBase64Url(parts[2]);
        }
        catch (Exception ex) when (ex is FormatException or JsonException)
        {
            return TokenCheck.Fail("malformed token");
        }

        if (payload is null || payload.Version != 1 || payload.Senders is null)
        {
            return TokenCheck.Fail("malformed token");
        }

        if (tenants().Find(userName) is null)
        {
            return TokenCheck.Fail("unknown tenant");
        }

        if (!string.Equals(payload.Tenant, userName, StringComparison.Ordinal))
        {
            // Only a token that really is another tenant's (its MAC verifies under that tenant's own key) is reported
            // as a cross-tenant attempt, with that tenant's name; anything else is just a bad token, attributed to no one,
            // so nobody can pin forged "attacks" on a tenant or grow metric label sets with invented names.
            var known = tenants().Find(payload.Tenant) is not null;
            var claimed = known ? store.KeysOf(payload.Tenant).FirstOrDefault(k => k.Id == payload.KeyId) : null;
            if (known && claimed is null && store.RefreshIfStale(TimeSpan.FromMilliseconds(100)))
            {
                // As below: the other tenant's key may be brand new (its first mint moments ago), not yet seen by the
                // periodic refresh; without this a real cross-tenant attempt would be logged as a plain bad token.
                claimed = store.KeysOf(payload.Tenant).FirstOrDefault(k => k.Id == payload.KeyId);
            }

            if (claimed is null || (claimed.RetiresAt is { } gone && time.GetUtcNow() >= gone))
            {
                return TokenCheck.Fail("bad signature");
            }

            try
            {
                return CryptographicOperations.FixedTimeEquals(Mac(payload.Tenant, claimed, $"{Prefix}{parts[1]}"), mac)
                    ? TokenCheck.Fail(TenantMismatch, payload)
                    : TokenCheck.Fail("bad signature");
            }
            catch (Hsm.HsmException)
            {
                // A cross-tenant attempt can never succeed, so the other tenant's token being unreachable is no reason to
                // answer "try again later" (454): it is refused like any bad token, just not attributed.
                return TokenCheck.Fail("bad signature");
            }
        }

        // The key comes from the tenant the client named (== token tenant): tenant B's key can never vouch for A.
        var key = store.KeysOf(userName).FirstOrDefault(k => k.Id == payload.KeyId);
        if (key is null && store.RefreshIfStale(TimeSpan.FromMilliseconds(100)))
        {
            // A token minted moments ago under a brand-new key (first mint, or just after rotation) must not fail
            // because the periodic refresh has not run yet. Rate-limited, so unknown key ids cannot force disk scans.
            key = store.KeysOf(userName).FirstOrDefault(k => k.Id == payload.KeyId);
        }

        if (key is null)
        {
            return TokenCheck.Fail("unknown key");
        }

        // Refusals that hold whatever the MAC says come first, so they cost no HSM call (and a retired key, perhaps
        // already destroyed in the token, is never asked for). The client learns nothing it did not send. The claims
        // are not verified, so the token is attributed (audit token id) only when the registry has minted exactly
        // that token id for this tenant under this key; an invented id is attributed to no one, as any bad token.
        var now = time.GetUtcNow();
        var still = StillValid(payload);
        var cheap = key.RetiresAt is { } retires && now >= retires ? "key retired after rotation"
            : !string.Equals(payload.Audience, config.Audience, StringComparison.Ordinal) ? "wrong audience"
            : still is { Valid: false, Temporary: false } ? still.Reason
            : null;
        if (cheap is not null)
        {
            return TokenCheck.Fail(cheap, store.Record(payload.Id) is { } minted && minted.Tenant == userName && minted.KeyId == payload.KeyId ? payload : null);
        }

        var expected = Mac(userName, key, $"{Prefix}{parts[1]}");
        if (!CryptographicOperations.FixedTimeEquals(expected, mac))
        {
            // A forgery stays a forgery (535 and a strike) even while revocations cannot be read.
            return TokenCheck.Fail("bad signature");
        }

        return still.Temporary ? still : new TokenCheck(true, null, payload);
    }

    /// <summary>Expiry and revocation, checked at AUTH and again at every MAIL FROM of the session.</summary>
    public TokenCheck StillValid(TokenPayload payload)
    {
        var now = time.GetUtcNow();
        if (now.ToUnixTimeSeconds() >= payload.ExpiresAt)
        {
            return TokenCheck.Fail("expired", payload);
        }

        if (store.IsRevoked(payload.Id))
        {
            return TokenCheck.Fail("revoked", payload);
        }

        // Fail closed (issue 12): a registry that should exist but cannot be read might hold this token's revocation.
        // Checked after the known revocations, so a token revoked before the damage is refused outright.
        if (store.RegistryFault is { } fault)
        {
            return new TokenCheck(false, $"token registry {fault}", payload, Temporary: true);
        }

        // The cap applies to every use, not only to minting: a token minted before the operator lowered
        // Gateway:Identity:MaxTokenTtl (or the tenant's Limits:MaxTokenTtl) stops working at once.
        var cap = tenants().Find(payload.Tenant)?.MaxTokenTtl ?? config.MaxTokenTtl;
        if (payload.ExpiresAt - payload.IssuedAt > (long)cap.TotalSeconds)
        {
            return TokenCheck.Fail("lifetime longer than MaxTokenTtl", payload);
        }

        var key = store.KeysOf(payload.Tenant).FirstOrDefault(k => k.Id == payload.KeyId);
        if (key is null || (key.RetiresAt is { } retires && now >= retires))
        {
            return TokenCheck.Fail("key retired after rotation", payload);
        }

        return new TokenCheck(true, null, payload);
    }

    public TokenRecord Revoke(string id)
    {
        store.Refresh();
        var record = store.Tokens().FirstOrDefault(t => t.Id == id) ?? throw new TokenException(store.RegistryFault is { } fault
            // A token minted after a damaged line is not read until the line is repaired: say so rather than "no such token".
            ? $"No token with id '{id}' in the readable part of the registry: {store.RegistryPath} {fault}. Repair it, then revoke again."
            : $"No token with id '{id}'.");
        if (!store.IsRevoked(id))
        {
            store.AppendRegistry(new RegistryEntry("revoke", null, id, time.GetUtcNow()));
        }

        return record;
    }

    public IReadOnlyList<TokenListItem> List(string? tenant)
    {
        store.Refresh();
        var now = time.GetUtcNow();
        return store.Tokens()
            .Where(t => tenant is null || t.Tenant == tenant)
            .OrderBy(t => t.Issued)
            .Select(t => new TokenListItem(t.Id, t.Tenant, t.Description, t.Senders, t.Issued, t.Expires,
                (store.IsRevoked(t.Id) ? TokenState.Revoked : now >= t.Expires ? TokenState.Expired : TokenState.Active).ToString().ToLowerInvariant()))
            .ToList();
    }

    /// <summary>
    /// Dual-window rotation: a new key signs from now on; the previous keys keep verifying until now + grace, then
    /// their tokens are refused. Only this tenant's key file changes.
    /// </summary>
    public (TokenKey NewKey, DateTimeOffset OldKeysRetireAt) RotateKey(string tenantId, TimeSpan? grace)
    {
        if (tenants().Find(tenantId) is null)
        {
            throw new TokenException($"Unknown tenant '{tenantId}'.");
        }

        var now = time.GetUtcNow();
        var retireAt = now + (grace ?? config.KeyRotationGrace);
        TokenKey? fresh = null;
        store.Update(tenantId, keys =>
        {
            // Keys already past their retirement are destroyed in the token now; the rest retire at the latest by retireAt.
            var kept = store.DestroyRetired(tenantId, keys)
                .Select(k => k.RetiresAt is null || k.RetiresAt > retireAt ? k with { RetiresAt = retireAt } : k)
                .ToList();
            fresh = store.CreateKey(tenantId, now);
            kept.Add(fresh);
            return kept;
        });
        return (fresh!, retireAt);
    }

    TokenKey ActiveKey(string tenantId, DateTimeOffset now)
    {
        var active = store.KeysOf(tenantId).LastOrDefault(k => k.RetiresAt is null);
        if (active is not null)
        {
            return active;
        }

        // First mint: made under the file lock, so a concurrent first mint (or rotation) elsewhere is seen, not doubled.
        var keys = store.Update(tenantId, keys => keys.Any(k => k.RetiresAt is null) ? keys : [.. keys, store.CreateKey(tenantId, now)]);
        return keys.Last(k => k.RetiresAt is null);
    }

    string Sign(string tenantId, TokenPayload payload, TokenKey key)
    {
        var body = Base64Url(JsonSerializer.SerializeToUtf8Bytes(payload, TokenJsonContext.Default.TokenPayload));
        var signed = Prefix + body;
        return $"{signed}.{Base64Url(Mac(tenantId, key, signed))}";
    }

    /// <summary>The one HSM call of a mint or a verification: HMAC-SHA256 inside the tenant's token.</summary>
    byte[] Mac(string tenantId, TokenKey key, string signed) => store.Mac(tenantId, key, Encoding.ASCII.GetBytes(signed));

    static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    static byte[] FromBase64Url(string s)
    {
        var b = s.Replace('-', '+').Replace('_', '/');
        return Convert.FromBase64String(b.PadRight(b.Length + ((4 - (b.Length % 4)) % 4), '='));
    }
}

/// <summary>A refused control-plane request (unknown tenant, TTL too long...). Its message is safe to print.</summary>
public sealed class TokenException(string message) : Exception(message);
