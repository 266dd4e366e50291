using System.Globalization;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;

namespace SmtpGateway.Identity.Tokens;

/// <summary>A mint request as checked: every problem found at once, keyed by the field it is about.</summary>
public sealed record TokenMintCheck(TimeSpan? Ttl, IReadOnlyList<string> Senders, string? Description, IReadOnlyDictionary<string, string[]> Errors)
{
    public bool Valid => Errors.Count == 0;
}

/// <summary>
/// The token control plane shared by `smtpgw token` and the admin API: the request checks (every error at once, so an
/// API client fixes them in one go), the <see cref="TokenService"/> call and its audit event. In the gateway it runs on
/// the gateway's own <see cref="TokenService"/>, so a mint or revocation takes effect in that process at once.
/// </summary>
public sealed class TokenAdministration(TokenService tokens, Func<TenantSnapshot> tenants, IdentityConfig config, IAuditLog audit)
{
    public TokenService Tokens => tokens;

    /// <summary>Checks a mint for <paramref name="tenantId"/> (which must exist) without touching the registry or the HSM.</summary>
    public TokenMintCheck CheckMint(string tenantId, string? ttl, IReadOnlyList<string>? senders, string? description)
    {
        var errors = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        void Add(string field, string error)
        {
            if (!errors.TryGetValue(field, out var list))
            {
                errors[field] = list = [];
            }

            list.Add(error);
        }

        var tenant = tenants().Find(tenantId);
        if (tenant is null)
        {
            Add("tenant", $"Unknown tenant '{tenantId}'.");
        }

        TimeSpan? lifetime = null;
        if (ttl is not null)
        {
            try
            {
                lifetime = ParseDuration(ttl);
            }
            catch (FormatException ex)
            {
                Add("ttl", ex.Message);
            }
        }

        var max = tenant?.MaxTokenTtl ?? config.MaxTokenTtl;
        if (lifetime is { } l && (l <= TimeSpan.Zero || l > max))
        {
            Add("ttl", $"TTL must be positive and at most {max}.");
        }

        foreach (var sender in senders ?? [])
        {
            var domain = sender is null ? null : sender.Contains('@', StringComparison.Ordinal) ? DomainName.OfAddress(sender) : DomainName.Normalize(sender);
            if (tenant is not null && (domain is null || !tenant.OwnsSendingDomain(domain)))
            {
                Add("senders", $"Sender '{sender}' is not in a domain of tenant '{tenantId}'.");
            }
        }

        if (description is { Length: > 200 } || (description?.Any(char.IsControl) ?? false))
        {
            Add("description", "Description must be at most 200 printable characters.");
        }

        return new TokenMintCheck(lifetime, senders ?? [], description, errors.ToDictionary(e => e.Key, e => e.Value.ToArray(), StringComparer.Ordinal));
    }

    /// <summary>Mints after <see cref="CheckMint"/> passed; <see cref="TokenService.Mint"/> checks again (the tenant map may have changed).</summary>
    public MintedToken Mint(string tenantId, TokenMintCheck check, AuditOrigin origin)
    {
        var minted = tokens.Mint(tenantId, check.Ttl, check.Senders, check.Description);
        // A first mint may have made the tenant's key: the refresh lets an AUTH right after the mint find it (and the
        // registry line), instead of waiting for the rate-limited refresh on an unknown key.
        tokens.Store.Refresh();
        audit.Write(origin.Event(AuditActions.TokenMint, minted.Record.Tenant, $"expires {minted.Record.Expires:O}", minted.Record.Id));
        return minted;
    }

    /// <summary>The token's record when it exists and is <paramref name="tenantId"/>'s (else null: the API answers 404 either way).</summary>
    public TokenRecord? Find(string tenantId, string id)
    {
        tokens.Store.Refresh();
        return tokens.Store.Record(id) is { } record && string.Equals(record.Tenant, tenantId, StringComparison.Ordinal) ? record : null;
    }

    public TokenRecord Revoke(string id, AuditOrigin origin)
    {
        var record = tokens.Revoke(id);
        // In the gateway the refresh makes the revocation bite on the next AUTH or MAIL FROM, not at the periodic refresh.
        tokens.Store.Refresh();
        audit.Write(origin.Event(AuditActions.TokenRevoke, record.Tenant, null, record.Id));
        return record;
    }

    public (TokenKey NewKey, DateTimeOffset OldKeysRetireAt) RotateKey(string tenantId, TimeSpan? grace, AuditOrigin origin)
    {
        var (key, retireAt) = tokens.RotateKey(tenantId, grace);
        // Without it, a mint before the periodic refresh would still sign with the key that is now retiring.
        tokens.Store.Refresh();
        audit.Write(origin.Event(AuditActions.KeyRotate, tenantId, $"new key {key.Id}; old keys retire {retireAt:O}"));
        return (key, retireAt);
    }

    /// <summary>"90s", "15m", "2h", "1d", or a TimeSpan ("00:15:00"); "0" is zero (`rotate-key --grace 0`).</summary>
    public static TimeSpan ParseDuration(string text)
    {
        if (text == "0")
        {
            // `rotate-key --grace 0`: the old key stops at once (starting a lost registry over); a TTL of 0 is refused by Mint.
            return TimeSpan.Zero;
        }

        if (text.Length > 1 && double.TryParse(text[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out var n) && n > 0)
        {
            try
            {
                switch (text[^1])
                {
                    case 's': return TimeSpan.FromSeconds(n);
                    case 'm': return TimeSpan.FromMinutes(n);
                    case 'h': return TimeSpan.FromHours(n);
                    case 'd': return TimeSpan.FromDays(n);
                }
            }
            catch (OverflowException)
            {
                // "1e300d" from an API client: a bad duration (400), not a server error.
                throw new FormatException($"'{text}' is too long a duration.");
            }
        }

        return TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out var span) && span > TimeSpan.Zero
            ? span
            : throw new FormatException($"'{text}' is not a duration (use e.g. 15m, 2h, 1d).");
    }
}
