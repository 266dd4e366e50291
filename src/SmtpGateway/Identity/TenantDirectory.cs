using System.Collections.Frozen;
using System.Net;
using SmtpGateway.Configuration;

namespace SmtpGateway.Identity;

/// <summary>A tenant compiled from <see cref="TenantConfig"/>: normalised domains, parsed networks.</summary>
public sealed record TenantModel(string Id, IReadOnlySet<string> Domains, string? BounceDomain, IReadOnlyList<IPNetwork> Networks, TimeSpan? MaxTokenTtl)
{
    /// <summary>Where inbound mail for the tenant's domains goes.</summary>
    public InboundRouteConfig Inbound { get; init; } = new();

    public ReputationConfig Reputation { get; init; } = new();

    /// <summary>How the tenant's mail leaves the gateway; unset values mean the gateway's own (Delivery fills them in).</summary>
    public TenantEgressModel Egress { get; init; } = TenantEgressModel.GatewayDefaults;

    /// <summary>The tenant's limits, its own or the gateway-wide defaults (Gateway:TenantLimits).</summary>
    public TenantLimits Limits { get; init; } = TenantLimits.Defaults;

    /// <summary>The tenant's own HSM token; unset values mean the defaults (label "smtpgw-&lt;tenant&gt;", PIN file under the data directory).</summary>
    public TenantHsmModel Hsm { get; init; } = TenantHsmModel.Defaults;

    /// <summary>
    /// "Tenants:&lt;id&gt;:Dkim:Unsigned": the tenant may send unsigned mail. False (signing required) unless the config
    /// says so, so a model built without it fails closed.
    /// </summary>
    public bool Unsigned { get; init; }

    /// <summary>True when the normalised domain is one of the tenant's sending domains.</summary>
    public bool OwnsSendingDomain(string normalizedDomain) => Domains.Contains(normalizedDomain);

    /// <summary>Domains that receive mail for this tenant: its domains and its bounce domain.</summary>
    public bool ReceivesFor(string normalizedDomain) => Domains.Contains(normalizedDomain) || normalizedDomain == BounceDomain;
}

/// <summary>"Tenants:&lt;id&gt;:Limits" with every unset value taken from "Gateway:TenantLimits".</summary>
/// <param name="MaxMessageSize">Bytes; never above the gateway's own Gateway:Limits:MaxMessageSize.</param>
public sealed record TenantLimits(int MessagesPerMinute, int RecipientsPerMinute, int MaxSessions, long MaxMessageSize, int MaxConcurrentSigning)
{
    public static TenantLimits Defaults { get; } = Resolve(new TenantLimitsConfig(), new TenantLimitDefaults(), new LimitsConfig().MaxMessageSize);

    public static TenantLimits Resolve(TenantLimitsConfig tenant, TenantLimitDefaults defaults, long gatewayMaxMessageSize) => new(
        tenant.MessagesPerMinute ?? defaults.MessagesPerMinute,
        tenant.RecipientsPerMinute ?? defaults.RecipientsPerMinute,
        tenant.MaxSessions ?? defaults.MaxSessions,
        Math.Min(tenant.MaxMessageSize ?? defaults.MaxMessageSize ?? gatewayMaxMessageSize, gatewayMaxMessageSize),
        tenant.MaxConcurrentSigning ?? defaults.MaxConcurrentSigning);
}

/// <summary>"Tenants:&lt;id&gt;:Egress" after validation: source address parsed, an empty smarthost dropped, TLS domains frozen.</summary>
/// <param name="HeloName">EHLO name; null means the gateway's.</param>
/// <param name="SourceAddress">Local address to bind; null lets the kernel choose.</param>
/// <param name="Smarthost">The tenant's own next hop; null means the gateway's routing (MX or the gateway's smarthost).</param>
/// <param name="Tls">The tenant's STARTTLS policy; null means the gateway's.</param>
public sealed record TenantEgressModel(string? HeloName, IPAddress? SourceAddress, TenantSmarthost? Smarthost, TenantTlsPolicy? Tls)
{
    public static TenantEgressModel GatewayDefaults { get; } = new(null, null, null, null);
}

/// <summary>A tenant smarthost after validation.</summary>
/// <param name="Host">Host name (or address literal); also the name its certificate must carry.</param>
/// <param name="Port">TCP port.</param>
/// <param name="Tls">STARTTLS policy; null is the tenant's default. Verify when a credential is set and the config left it unset.</param>
/// <param name="ImplicitTls">TLS from connect (RFC 8314 section 3.3), certificate verified.</param>
/// <param name="Credential">Vault credential name to AUTH with; null means no AUTH.</param>
/// <param name="AuthMechanism">Configured SASL mechanism; null lets the credential kind and the server's offer decide.</param>
public sealed record TenantSmarthost(string Host, int Port, TlsPolicy? Tls, bool ImplicitTls = false, string? Credential = null,
    SmarthostAuthMechanism? AuthMechanism = null);

/// <summary>A tenant's STARTTLS policy: default (null: the gateway's) and destination domain → policy, keys without a trailing dot.</summary>
public sealed record TenantTlsPolicy(TlsPolicy? Default, IReadOnlyDictionary<string, TlsPolicy> Domains);

/// <summary>"Tenants:&lt;id&gt;:Hsm" after validation; the PIN file path is made absolute once, at load.</summary>
public sealed record TenantHsmModel(string? TokenLabel, string? PinFile, string? PinEnvironmentVariable)
{
    public static TenantHsmModel Defaults { get; } = new(null, null, null);
}

/// <summary>
/// Immutable tenant map (Config → Model). Lookups are by normalised domain and by client address. A session keeps
/// the snapshot it started with; a reload swaps in a new one.
/// </summary>
public sealed class TenantSnapshot
{
    readonly Dictionary<string, TenantModel> _byDomain;
    readonly List<(IPNetwork Network, TenantModel Tenant)> _networks;

    TenantSnapshot(Dictionary<string, TenantModel> tenants, Dictionary<string, TenantModel> byDomain, List<(IPNetwork, TenantModel)> networks)
    {
        Tenants = tenants;
        _byDomain = byDomain;
        _networks = networks;
    }

    public static TenantSnapshot Empty { get; } = new(new(StringComparer.Ordinal), new(StringComparer.Ordinal), []);

    public IReadOnlyDictionary<string, TenantModel> Tenants { get; }

    public TenantModel? Find(string tenantId) => Tenants.GetValueOrDefault(tenantId);

    /// <summary>The tenant that sends from or receives for the domain (sending domains and bounce domains).</summary>
    public TenantModel? FindByDomain(string? normalizedDomain) =>
        normalizedDomain is null ? null : _byDomain.GetValueOrDefault(normalizedDomain);

    public TenantModel? FindByAddress(IPAddress address)
    {
        var a = address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
        foreach (var (network, tenant) in _networks)
        {
            if (network.Contains(a))
            {
                return tenant;
            }
        }

        return null;
    }

    /// <summary>Validates the whole map and builds it; every error is reported with its config path.</summary>
    /// <param name="limitDefaults">Gateway:TenantLimits; null: the built-in defaults.</param>
    /// <param name="gatewayMaxMessageSize">Gateway:Limits:MaxMessageSize; null: the built-in default.</param>
    public static TenantSnapshot Build(IReadOnlyDictionary<string, TenantConfig> config, List<string> errors, TenantLimitDefaults? limitDefaults = null, long? gatewayMaxMessageSize = null)
    {
        var defaults = limitDefaults ?? new TenantLimitDefaults();
        var maxMessageSize = gatewayMaxMessageSize ?? new LimitsConfig().MaxMessageSize;
        var tenants = new Dictionary<string, TenantModel>(StringComparer.Ordinal);
        var byDomain = new Dictionary<string, TenantModel>(StringComparer.Ordinal);
        var domainOwner = new Dictionary<string, string>(StringComparer.Ordinal);
        var networks = new List<(IPNetwork, TenantModel)>();
        var networkOwners = new List<(IPNetwork Network, string Tenant, string Path)>();

        foreach (var (id, t) in config.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var p = $"Tenants:{id}";
            if (id == ReservedTenantId)
            {
                errors.Add($"{p}: the tenant id '{ReservedTenantId}' is reserved: it names the gateway's own mail of no tenant (DSNs, inbound mail) in the queue and metrics. Choose another id.");
                continue;
            }

            if (!IsValidTenantId(id))
            {
                errors.Add($"{p}: tenant id must be 1-64 characters of a-z, 0-9, '-' and '_' (it is the AUTH user name and a directory name).");
                continue;
            }

            var domains = new HashSet<string>(StringComparer.Ordinal);
            for (var i = 0; i < t.Domains.Count; i++)
            {
                var d = DomainName.Normalize(t.Domains[i]);
                if (d is null)
                {
                    errors.Add($"{p}:Domains:{i}: '{t.Domains[i]}' is not a domain name.");
                    continue;
                }

                if (domainOwner.TryGetValue(d, out var other) && other != id)
                {
                    errors.Add($"{p}:Domains:{i}: '{t.Domains[i]}' is already claimed by tenant '{other}'.");
                    continue;
                }

                domainOwner[d] = id;
                domains.Add(d);
            }

            if (t.Domains.Count == 0)
            {
                errors.Add($"{p}:Domains: at least one sending domain is required.");
            }

            string? bounce = null;
            if (t.BounceDomain is not null)
            {
                bounce = DomainName.Normalize(t.BounceDomain);
                if (bounce is null)
                {
                    errors.Add($"{p}:BounceDomain: '{t.BounceDomain}' is not a domain name.");
                }
                else if (!domains.Any(d => bounce == d || bounce.EndsWith("." + d, StringComparison.Ordinal)))
                {
                    // Alignment (SPF/DMARC) is the tenant's only if the return path is in its own domain.
                    errors.Add($"{p}:BounceDomain: '{t.BounceDomain}' must be one of the tenant's domains or a subdomain of one.");
                }
                else if (domainOwner.TryGetValue(bounce, out var other) && other != id)
                {
                    errors.Add($"{p}:BounceDomain: '{t.BounceDomain}' is already claimed by tenant '{other}'.");
                }
                else
                {
                    domainOwner[bounce] = id;
                }
            }

            var parsed = new List<IPNetwork>();
            for (var i = 0; i < t.Networks.Count; i++)
            {
                if (!IPNetwork.TryParse(t.Networks[i], out var network))
                {
                    errors.Add($"{p}:Networks:{i}: '{t.Networks[i]}' is not a CIDR network.");
                    continue;
                }

                foreach (var (otherNetwork, otherTenant, otherPath) in networkOwners)
                {
                    if (otherTenant != id && Overlaps(network, otherNetwork))
                    {
                        errors.Add($"{p}:Networks:{i}: '{t.Networks[i]}' overlaps {otherPath} of tenant '{otherTenant}'; a client address must map to one tenant.");
                    }
                }

                // A prefix this short maps a whole provider (or everyone: 0.0.0.0/0) to one tenant's identity.
                var widest = network.BaseAddress.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 16 : 48;
                if (network.PrefixLength < widest && !t.AllowWideNetworks)
                {
                    errors.Add($"{p}:Networks:{i}: '{t.Networks[i]}' is wider than /{widest}; every address in it could send as this tenant. Narrow it, or set {p}:AllowWideNetworks to true.");
                }

                networkOwners.Add((network, id, $"{p}:Networks:{i}"));
                parsed.Add(network);
            }

            if (t.Hsm.TokenLabel is { } label && (label.Length == 0 || System.Text.Encoding.UTF8.GetByteCount(label) > 32))
            {
                // PKCS#11 v2.40 section 3.2: CK_TOKEN_INFO.label is 32 bytes.
                errors.Add($"{p}:Hsm:TokenLabel: '{label}' must be 1-32 bytes.");
            }

            if (t.Limits.MaxTokenTtl is { } ttl && ttl <= TimeSpan.Zero)
            {
                errors.Add($"{p}:Limits:MaxTokenTtl: must be positive.");
            }

            CheckLimits($"{p}:Limits", t.Limits, maxMessageSize, errors);
            GatewayConfigValidator.CheckTenantEgress($"{p}:Egress", t.Egress, errors);
            t.Inbound.Validate($"{p}:Inbound", errors, checkFiles: true);
            t.Reputation.Validate($"{p}:Reputation", errors);
            var model = new TenantModel(id, domains, bounce, parsed, t.Limits.MaxTokenTtl)
            {
                Inbound = t.Inbound, Reputation = t.Reputation, Egress = CompileEgress(t.Egress), Hsm = CompileHsm(t.Hsm), Unsigned = t.Dkim.Unsigned,
                Limits = TenantLimits.Resolve(t.Limits, defaults, maxMessageSize),
            };
            tenants[id] = model;
            foreach (var d in domains)
            {
                byDomain[d] = model;
            }

            if (bounce is not null)
            {
                byDomain[bounce] = model;
            }

            networks.AddRange(parsed.Select(n => (n, model)));
        }

        // Blast radius one (ARCHITECTURE promise 2/3): no two tenants may resolve to the same HSM token or PIN file,
        // explicitly or through the default label "smtpgw-<tenant>".
        foreach (var group in config.Where(kv => IsValidTenantId(kv.Key))
                     .GroupBy(kv => kv.Value.Hsm.TokenLabel is { Length: > 0 } l ? l : $"smtpgw-{kv.Key}", StringComparer.Ordinal)
                     .Where(g => g.Count() > 1))
        {
            errors.Add($"Tenants:{group.Last().Key}:Hsm:TokenLabel: token '{group.Key}' is also tenant '{group.First().Key}''s; each tenant needs its own token.");
        }

        foreach (var group in config.Where(kv => kv.Value.Hsm.PinFile is { Length: > 0 })
                     .GroupBy(kv => Path.GetFullPath(kv.Value.Hsm.PinFile!), StringComparer.Ordinal)
                     .Where(g => g.Count() > 1))
        {
            errors.Add($"Tenants:{group.Last().Key}:Hsm:PinFile: '{group.Key}' is also tenant '{group.First().Key}''s PIN file.");
        }

        // Most specific network first, so a lookup is a first match.
        networks.Sort((a, b) => b.Item1.PrefixLength.CompareTo(a.Item1.PrefixLength));
        return new TenantSnapshot(tenants, byDomain, networks);
    }

    static void CheckLimits(string p, TenantLimitsConfig limits, long gatewayMaxMessageSize, List<string> errors)
    {
        foreach (var (name, value) in new (string, long?)[]
                 {
                     ("MessagesPerMinute", limits.MessagesPerMinute), ("RecipientsPerMinute", limits.RecipientsPerMinute), ("MaxSessions", limits.MaxSessions),
                     ("MaxMessageSize", limits.MaxMessageSize), ("MaxConcurrentSigning", limits.MaxConcurrentSigning),
                 })
        {
            if (value is < 1)
            {
                errors.Add($"{p}:{name}: {value} must be at least 1.");
            }
        }

        if (limits.MaxMessageSize > gatewayMaxMessageSize)
        {
            errors.Add($"{p}:MaxMessageSize: {limits.MaxMessageSize} is above Gateway:Limits:MaxMessageSize ({gatewayMaxMessageSize}), the most any listener takes.");
        }
    }

    /// <summary>
    /// Lenient on purpose: anything invalid was reported by <see cref="GatewayConfigValidator.CheckTenantEgress"/>, and a
    /// snapshot built with errors is never used.
    /// </summary>
    static TenantEgressModel CompileEgress(EgressConfig? egress)
    {
        if (egress is null)
        {
            return TenantEgressModel.GatewayDefaults;
        }

        var source = IPAddress.TryParse(egress.SourceAddress, out var address) ? address : null;
        var smarthost = egress.Smarthost is { } s && !string.IsNullOrWhiteSpace(s.Host) ? CompileSmarthost(s) : null;
        TenantTlsPolicy? tls = null;
        if (egress.Tls is { } t)
        {
            // "example.com." and "example.com" are one domain; the later entry wins, as it did when the table was a copy of the config.
            var domains = new Dictionary<string, TlsPolicy>(StringComparer.OrdinalIgnoreCase);
            foreach (var (domain, policy) in t.Domains)
            {
                domains[domain.TrimEnd('.')] = policy;
            }

            tls = new TenantTlsPolicy(t.Default, domains.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase));
        }

        return new TenantEgressModel(string.IsNullOrEmpty(egress.HeloName) ? null : egress.HeloName, source, smarthost, tls);
    }

    static TenantSmarthost CompileSmarthost(TenantSmarthostConfig s)
    {
        var credential = string.IsNullOrWhiteSpace(s.Credential) ? null : s.Credential;

        // With a credential the default is Verify: AUTH never goes over plaintext or unverified TLS unless configured so.
        var tls = s.Tls ?? (credential is null ? null : TlsPolicy.Verify);
        return new TenantSmarthost(s.Host, s.Port, tls, s.ImplicitTls, credential, GatewayConfigValidator.ParseAuthMechanism(s.AuthMechanism));
    }

    static TenantHsmModel CompileHsm(TenantHsmConfig? hsm) =>
        hsm is null
            ? TenantHsmModel.Defaults
            : new TenantHsmModel(
                hsm.TokenLabel is { Length: > 0 } label ? label : null,
                hsm.PinFile is { Length: > 0 } file ? Path.GetFullPath(file) : null,
                hsm.PinEnvironmentVariable is { Length: > 0 } variable ? variable : null);

    /// <summary>The name under which mail of no tenant is shown (queue lists, metrics): never a configured tenant's id.</summary>
    public const string ReservedTenantId = "default";

    public static bool IsValidTenantId(string? id) =>
        id is not null && id != ReservedTenantId && id.Length is > 0 and <= 64 && id.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-' or '_');

    static bool Overlaps(IPNetwork a, IPNetwork b) =>
        a.BaseAddress.AddressFamily == b.BaseAddress.AddressFamily && (a.Contains(b.BaseAddress) || b.Contains(a.BaseAddress));
}
