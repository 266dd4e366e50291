using System.Net;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;

namespace SmtpGateway.Delivery;

/// <summary>How one tenant's mail leaves the gateway: its EHLO name, source address, optional smarthost and STARTTLS policy.</summary>
/// <param name="HeloName">EHLO argument (RFC 5321 section 4.1.1.1).</param>
/// <param name="SourceAddress">Local address bound before connecting; null lets the kernel choose.</param>
/// <param name="Smarthost">The tenant's own next hop; null means the gateway's routing (MX or the gateway's smarthost).</param>
/// <param name="Tls">Per destination domain STARTTLS policy.</param>
internal sealed record TenantEgress(string HeloName, IPAddress? SourceAddress, TenantSmarthost? Smarthost, TlsPolicyTable Tls);

/// <summary>
/// Default policy plus per-domain overrides. A tenant's table is consulted first, then the gateway's;
/// an exact domain beats a ".parent" suffix entry, which beats the default.
/// </summary>
internal sealed class TlsPolicyTable
{
    readonly IReadOnlyDictionary<string, TlsPolicy> _domains;
    readonly TlsPolicyTable? _fallback;
    readonly TlsPolicy? _default;

    public TlsPolicyTable(TlsPolicyConfig? config, TlsPolicyTable? fallback)
    {
        var domains = new Dictionary<string, TlsPolicy>(StringComparer.OrdinalIgnoreCase);
        foreach (var (domain, policy) in config?.Domains ?? [])
        {
            domains[domain.TrimEnd('.')] = policy;
        }

        _domains = domains;
        _default = config?.Default;
        _fallback = fallback;
    }

    /// <summary>A tenant's table as the snapshot compiled it (domains already trimmed, case-insensitive), over the gateway's.</summary>
    public TlsPolicyTable(TenantTlsPolicy tenant, TlsPolicyTable fallback)
    {
        _domains = tenant.Domains;
        _default = tenant.Default;
        _fallback = fallback;
    }

    public static TlsPolicyTable Opportunistic { get; } = new((TlsPolicyConfig?)null, null);

    /// <summary>The policy for destinations no domain entry names (a smarthost route).</summary>
    public TlsPolicy Default => _default ?? _fallback?._default ?? TlsPolicy.Opportunistic;

    /// <summary>The policy for mail to <paramref name="domain"/>.</summary>
    public TlsPolicy For(string domain)
    {
        var own = Lookup(domain);
        if (own is { } found)
        {
            return found;
        }

        var inherited = _fallback?.Lookup(domain);
        return inherited ?? _default ?? _fallback?._default ?? TlsPolicy.Opportunistic;
    }

    TlsPolicy? Lookup(string domain)
    {
        domain = domain.TrimEnd('.');
        if (_domains.TryGetValue(domain, out var exact))
        {
            return exact;
        }

        for (var dot = domain.IndexOf('.', StringComparison.Ordinal); dot >= 0; dot = domain.IndexOf('.', dot + 1))
        {
            if (_domains.TryGetValue(domain[dot..], out var suffix))
            {
                return suffix;
            }
        }

        return null;
    }
}

/// <summary>
/// Tenants' egress as the current tenant snapshot states it (<see cref="TenantDirectoryService"/> compiles and validates
/// "Tenants:&lt;id&gt;:Egress" with the rest of the tenant), with the gateway's defaults filled in. The derived table is
/// cached against the snapshot reference, so a message costs one reference check and one lookup, and a reload is seen
/// by the next attempt. The tenant comes from the spooled envelope, which the Listener took from the session, never
/// from message content.
/// </summary>
internal sealed class EgressDirectory
{
    readonly Func<TenantSnapshot> _tenants;
    readonly string _defaultHelo;
    readonly TlsPolicyTable _gatewayTls;
    readonly TenantEgress _gatewayDefaults;
    volatile Compiled? _compiled;

    /// <param name="tenants">The current tenant snapshot.</param>
    /// <param name="defaultHelo">EHLO name for tenants without one (Smarthost:HeloName, else the server name).</param>
    /// <param name="gatewayTls">Gateway-wide TLS policy (Delivery:Tls).</param>
    public EgressDirectory(Func<TenantSnapshot> tenants, string defaultHelo, TlsPolicyConfig? gatewayTls)
    {
        _tenants = tenants;
        _defaultHelo = defaultHelo;
        _gatewayTls = new TlsPolicyTable(gatewayTls, null);
        _gatewayDefaults = new TenantEgress(defaultHelo, null, null, _gatewayTls);
    }

    /// <summary>The gateway's own TLS table (for tenants without settings).</summary>
    public TlsPolicyTable GatewayTls => _gatewayTls;

    /// <summary>Egress of <paramref name="tenant"/> in the current snapshot; a tenant without settings gets the gateway defaults.</summary>
    public TenantEgress For(string tenant) => For(_tenants(), tenant);

    /// <summary>Egress of <paramref name="tenant"/> in <paramref name="snapshot"/>.</summary>
    public TenantEgress For(TenantSnapshot snapshot, string tenant)
    {
        var compiled = _compiled;
        if (compiled is null || !ReferenceEquals(compiled.Snapshot, snapshot))
        {
            // Two workers racing after a reload both build the same table; either result is right, so no lock.
            compiled = new Compiled(snapshot, Derive(snapshot));
            _compiled = compiled;
        }

        return compiled.Tenants.TryGetValue(tenant, out var egress) ? egress : _gatewayDefaults;
    }

    Dictionary<string, TenantEgress> Derive(TenantSnapshot snapshot)
    {
        var result = new Dictionary<string, TenantEgress>(StringComparer.Ordinal);
        foreach (var (id, tenant) in snapshot.Tenants)
        {
            var egress = tenant.Egress;
            result[id] = ReferenceEquals(egress, TenantEgressModel.GatewayDefaults)
                ? _gatewayDefaults
                : new TenantEgress(egress.HeloName ?? _defaultHelo, egress.SourceAddress, egress.Smarthost,
                    egress.Tls is { } tls ? new TlsPolicyTable(tls, _gatewayTls) : _gatewayTls);
        }

        return result;
    }

    sealed record Compiled(TenantSnapshot Snapshot, Dictionary<string, TenantEgress> Tenants);
}
