using SmtpGateway.Audit;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;

namespace SmtpGateway.Signing;

/// <summary>A selector as the CLI prints it and the API shows it: its state and the TXT record to publish.</summary>
public sealed record DkimSelectorView(
    string Domain, string Selector, string Algorithm, string State, bool Published, string Name, string Value, string Record,
    DateTimeOffset Created, DateTimeOffset? StateChanged)
{
    public static DkimSelectorView Of(DkimSelector s) => new(
        s.Domain, s.Selector, s.Algorithm.ToString().ToLowerInvariant(), s.State.ToString().ToLowerInvariant(), s.State != SelectorState.Retired,
        DkimDnsRecord.Name(s), DkimDnsRecord.Value(s), DkimDnsRecord.Format(s), s.Created, s.StateChanged);
}

/// <summary>The rotation steps of `smtpgw dkim rotate` (README "DKIM key rotation").</summary>
public enum DkimRotateStep
{
    /// <summary>Step 1: a pending selector per active algorithm, to publish.</summary>
    Publish,

    /// <summary>Step 2: pending selectors sign; the active ones they replace retire (still published).</summary>
    Activate,

    /// <summary>Step 3: retiring selectors are withdrawn and their keys deleted from the HSM.</summary>
    Retire,
}

/// <summary>What a rotation step changed: the selectors added, activated or retired.</summary>
public sealed record DkimRotateResult(string Tenant, string Domain, DkimRotateStep Step, IReadOnlyList<DkimSelector> Changed)
{
    /// <summary>What `dkim rotate` tells the operator after the step (the CLI prints it, the API returns it).</summary>
    public string Message => Step switch
    {
        DkimRotateStep.Activate => $"{Domain}: now signing with {string.Join(", ", Changed.Select(p => p.Selector))}; the replaced selectors stay published until `--retire`.",
        DkimRotateStep.Retire => $"{Domain}: retired {Changed.Count} selector(s); remove their TXT records.",
        _ => $"Publish the record(s) above, wait for DNS (at least the old TTL), then: smtpgw dkim rotate --tenant {Tenant} --domain {Domain} --activate",
    };
}

/// <summary>
/// DKIM key lifecycle in a tenant's HSM token, shared by `smtpgw dkim` and the admin API: checks (every error at once),
/// keygen, the three rotation steps, and their audit events. Refusals that depend on the current selectors (a selector
/// that exists, nothing pending to activate) are <see cref="InvalidOperationException"/>; HSM trouble stays
/// <see cref="HsmException"/> or <see cref="SigningException"/>. In the gateway it runs on the gateway's own HSM session
/// and <see cref="DkimKeyStore"/>, so no second process changes the token behind the signer's back.
/// </summary>
public sealed class DkimAdministration(DkimKeyStore store, IHsm hsm, TenantHsmTokens tokens, Func<TenantSnapshot> tenants, IAuditLog audit, TimeProvider time)
{
    // One change at a time: each step reads the selector file, changes the HSM, then writes the file back.
    readonly Lock _lock = new();

    public IReadOnlyList<DkimSelector> Selectors(string tenant) => store.Selectors(tenant);

    /// <summary>Every selector still in DNS (pending, active, retiring): what `dkim dns` prints.</summary>
    public IReadOnlyList<DkimSelector> Published(string tenant) => store.Selectors(tenant).Where(s => s.State != SelectorState.Retired).ToList();

    /// <summary>The normalised domain, or an error when it is no domain of the tenant.</summary>
    public string? CheckDomain(string tenant, string? domain, ICollection<string> errors)
    {
        var d = DomainName.Normalize(domain);
        if (d is null)
        {
            errors.Add($"'{domain}' is not a domain name.");
            return null;
        }

        if (tenants().Find(tenant)?.OwnsSendingDomain(d) != true)
        {
            errors.Add($"{domain} is not a domain of tenant '{tenant}'.");
            return null;
        }

        return d;
    }

    public static string? CheckSelector(string? selector, ICollection<string> errors)
    {
        if (selector is { Length: > 0 and <= 63 } && selector.All(c => char.IsAsciiLetterOrDigit(c) || c == '-'))
        {
            return selector.ToLowerInvariant();
        }

        errors.Add($"'{selector}' is not a selector (letters, digits and '-', at most 63).");
        return null;
    }

    public static DkimAlgorithm? CheckAlgorithm(string? algorithm, ICollection<string> errors)
    {
        switch (algorithm?.ToLowerInvariant())
        {
            case "ed25519":
                return DkimAlgorithm.Ed25519;
            case "rsa2048" or "rsa":
                return DkimAlgorithm.Rsa2048;
            default:
                errors.Add($"the algorithm must be ed25519 or rsa2048, not '{algorithm}'.");
                return null;
        }
    }

    /// <summary>The selector name a generated key gets when none is given: "ed"/"rsa" and the time, as rotation names them.</summary>
    public string DefaultSelector(DkimAlgorithm algorithm) => $"{(algorithm == DkimAlgorithm.Ed25519 ? "ed" : "rsa")}{time.GetUtcNow():yyyyMMddHHmm}";

    /// <summary>
    /// A new key pair in the tenant's token. The first key of an algorithm for a domain signs at once; later ones are
    /// pending until <see cref="Rotate"/> activates them. Arguments are already checked (normalised domain and selector).
    /// </summary>
    public DkimSelector Keygen(string tenant, string domain, string selector, DkimAlgorithm algorithm, AuditOrigin origin)
    {
        lock (_lock)
        {
            var existing = store.Selectors(tenant).ToList();
            if (existing.Any(x => x.Domain == domain && x.Selector == selector))
            {
                throw new InvalidOperationException($"selector '{selector}' already exists for {domain}.");
            }

            var state = existing.Any(x => x.Domain == domain && x.Algorithm == algorithm && x.State == SelectorState.Active) ? SelectorState.Pending : SelectorState.Active;
            var created = Generate(tenant, domain, selector, algorithm, state);
            store.Save(tenant, [.. existing, created]);
            audit.Write(origin.Event(AuditActions.DkimKeygen, tenant, $"{selector}._domainkey.{domain} {algorithm} {state}"));
            return created;
        }
    }

    /// <summary>One rotation step for the domain (already checked and normalised).</summary>
    public DkimRotateResult Rotate(string tenant, string domain, DkimRotateStep step, AuditOrigin origin)
    {
        lock (_lock)
        {
            var now = time.GetUtcNow();
            var selectors = store.Selectors(tenant).ToList();
            switch (step)
            {
                case DkimRotateStep.Activate:
                {
                    var pending = selectors.Where(s => s.Domain == domain && s.State == SelectorState.Pending).ToList();
                    if (pending.Count == 0)
                    {
                        throw new InvalidOperationException($"no pending selector for {domain}; run `dkim rotate --tenant {tenant} --domain {domain}` first.");
                    }

                    selectors = selectors.Select(s =>
                        s.Domain == domain && s.State == SelectorState.Active && pending.Any(p => p.Algorithm == s.Algorithm) ? s with { State = SelectorState.Retiring, StateChanged = now }
                        : s.Domain == domain && s.State == SelectorState.Pending ? s with { State = SelectorState.Active, StateChanged = now }
                        : s).ToList();
                    store.Save(tenant, selectors);
                    audit.Write(origin.Event(AuditActions.DkimRotate, tenant, $"{domain}: activated {string.Join(",", pending.Select(p => p.Selector))}"));
                    return new DkimRotateResult(tenant, domain, step, pending);
                }

                case DkimRotateStep.Retire:
                {
                    var retiring = selectors.Where(s => s.Domain == domain && s.State == SelectorState.Retiring).ToList();
                    foreach (var s in retiring)
                    {
                        hsm.DeleteKeyPair(tokens.Resolve(tenant), s.KeyLabel);
                    }

                    selectors = selectors.Select(s => retiring.Contains(s) ? s with { State = SelectorState.Retired, StateChanged = now } : s).ToList();
                    store.Save(tenant, selectors);
                    audit.Write(origin.Event(AuditActions.DkimRotate, tenant, $"{domain}: retired {string.Join(",", retiring.Select(p => p.Selector))}"));
                    return new DkimRotateResult(tenant, domain, step, retiring);
                }

                default:
                {
                    var active = selectors.Where(s => s.Domain == domain && s.State == SelectorState.Active).ToList();
                    if (active.Count == 0)
                    {
                        throw new InvalidOperationException($"{domain} has no active selector; create one with `dkim keygen`.");
                    }

                    var added = new List<DkimSelector>();
                    foreach (var algorithm in active.Select(a => a.Algorithm).Distinct())
                    {
                        if (!selectors.Any(s => s.Domain == domain && s.Algorithm == algorithm && s.State == SelectorState.Pending))
                        {
                            added.Add(Generate(tenant, domain, DefaultSelector(algorithm), algorithm, SelectorState.Pending));
                        }
                    }

                    store.Save(tenant, [.. selectors, .. added]);
                    audit.Write(origin.Event(AuditActions.DkimRotate, tenant, $"{domain}: pending {string.Join(",", added.Select(p => p.Selector))}"));
                    return new DkimRotateResult(tenant, domain, step, added);
                }
            }
        }
    }

    DkimSelector Generate(string tenant, string domain, string selector, DkimAlgorithm algorithm, SelectorState state)
    {
        var label = $"dkim:{domain}:{selector}";
        var key = hsm.GenerateKeyPair(tokens.Resolve(tenant), label, algorithm == DkimAlgorithm.Ed25519 ? DkimKeyAlgorithm.Ed25519 : DkimKeyAlgorithm.Rsa2048);
        return new DkimSelector(domain, selector, algorithm, state, label, Convert.ToBase64String(key.Value), time.GetUtcNow(), null);
    }
}
