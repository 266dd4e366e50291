using System.Net;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using SmtpGateway.Configuration;

namespace SmtpGateway.Delivery;

/// <summary>How one tenant's mail leaves the gateway: its EHLO name, source address, optional smarthost and STARTTLS policy.</summary>
/// <param name="HeloName">EHLO argument (RFC 5321 section 4.1.1.1).</param>
/// <param name="SourceAddress">Local address bound before connecting; null lets the kernel choose.</param>
/// <param name="Smarthost">The tenant's own next hop; null means the gateway's routing (MX or the gateway's smarthost).</param>
/// <param name="Tls">Per destination domain STARTTLS policy.</param>
internal sealed record TenantEgress(string HeloName, IPAddress? SourceAddress, TenantSmarthost? Smarthost, TlsPolicyTable Tls);

/// <summary>A tenant smarthost after validation.</summary>
internal sealed record TenantSmarthost(string Host, int Port, TlsPolicy? Tls);

/// <summary>
/// Default policy plus per-domain overrides. A tenant's table is consulted first, then the gateway's;
/// an exact domain beats a ".parent" suffix entry, which beats the default.
/// </summary>
internal sealed class TlsPolicyTable
{
    readonly Dictionary<string, TlsPolicy> _domains;
    readonly TlsPolicyTable? _fallback;
    readonly TlsPolicy? _default;

    public TlsPolicyTable(TlsPolicyConfig? config, TlsPolicyTable? fallback)
    {
        _domains = new Dictionary<string, TlsPolicy>(StringComparer.OrdinalIgnoreCase);
        foreach (var (domain, policy) in config?.Domains ?? [])
            _domains[domain.TrimEnd('.')] = policy;
        _default = config?.Default;
        _fallback = fallback;
    }

    public static TlsPolicyTable Opportunistic { get; } = new(null, null);

    /// <summary>The policy for destinations no domain entry names (a smarthost route).</summary>
    public TlsPolicy Default => _default ?? _fallback?._default ?? TlsPolicy.Opportunistic;

    /// <summary>The policy for mail to <paramref name="domain"/>.</summary>
    public TlsPolicy For(string domain)
    {
        var own = Lookup(domain);
        if (own is { } found)
            return found;
        var inherited = _fallback?.Lookup(domain);
        return inherited ?? _default ?? _fallback?._default ?? TlsPolicy.Opportunistic;
    }

    TlsPolicy? Lookup(string domain)
    {
        domain = domain.TrimEnd('.');
        if (_domains.TryGetValue(domain, out var exact))
            return exact;
        for (var dot = domain.IndexOf('.', StringComparison.Ordinal); dot >= 0; dot = domain.IndexOf('.', dot + 1))
        {
            if (_domains.TryGetValue(domain[dot..], out var suffix))
                return suffix;
        }

        return null;
    }
}

/// <summary>
/// Tenants' egress settings read from "Tenants:&lt;id&gt;:Egress", rebuilt when the configuration reloads (a bad edit is
/// refused and the last good snapshot stays, like the tenant directory). The tenant comes from the spooled envelope,
/// which the Listener took from the session, never from message content.
/// </summary>
internal sealed class EgressDirectory : IDisposable
{
    const string TenantsSection = "Tenants";

    readonly IConfiguration? _configuration;
    readonly string _defaultHelo;
    readonly TlsPolicyTable _gatewayTls;
    readonly ILogger _logger;
    readonly IDisposable? _subscription;
    volatile Dictionary<string, TenantEgress> _tenants = new(StringComparer.Ordinal);

    /// <param name="configuration">The host configuration, read under "Tenants"; null means no tenant has egress settings.</param>
    /// <param name="defaultHelo">EHLO name for tenants without one (Smarthost:HeloName, else the server name).</param>
    /// <param name="gatewayTls">Gateway-wide TLS policy (Delivery:Tls).</param>
    /// <param name="logger">Delivery logger.</param>
    /// <param name="tenants">Fixed tenants instead of the configuration (tests).</param>
    /// <exception cref="InvalidDataException">A tenant's Egress section is invalid (the gateway refuses to start).</exception>
    public EgressDirectory(IConfiguration? configuration, string defaultHelo, TlsPolicyConfig? gatewayTls, ILogger logger,
        IReadOnlyDictionary<string, TenantConfig>? tenants = null)
    {
        _configuration = configuration;
        _defaultHelo = defaultHelo;
        _gatewayTls = new TlsPolicyTable(gatewayTls, null);
        _logger = logger;
        var errors = new List<string>();
        _tenants = tenants is not null ? Compile(tenants, errors) : Build(errors);
        if (errors.Count > 0)
            throw new InvalidDataException("Tenant egress configuration is invalid: " + string.Join("; ", errors));
        if (configuration is not null && tenants is null)
            _subscription = ChangeToken.OnChange(configuration.GetReloadToken, Reload);
    }

    /// <summary>The gateway's own TLS table (for tenants without settings).</summary>
    public TlsPolicyTable GatewayTls => _gatewayTls;

    /// <summary>Egress of <paramref name="tenant"/>; a tenant without settings gets the gateway defaults.</summary>
    public TenantEgress For(string tenant) =>
        _tenants.TryGetValue(tenant, out var egress) ? egress : new TenantEgress(_defaultHelo, null, null, _gatewayTls);

    Dictionary<string, TenantEgress> Build(List<string> errors)
    {
        if (_configuration is null)
            return new Dictionary<string, TenantEgress>(StringComparer.Ordinal);
        var tenants = _configuration.GetSection(TenantsSection).Get<Dictionary<string, TenantConfig>>() ?? [];
        return Compile(tenants, errors);
    }

    Dictionary<string, TenantEgress> Compile(IReadOnlyDictionary<string, TenantConfig> tenants, List<string> errors)
    {
        errors.AddRange(GatewayConfigValidator.CollectTenantEgress(tenants));
        if (errors.Count > 0)
            return _tenants;
        var result = new Dictionary<string, TenantEgress>(StringComparer.Ordinal);
        foreach (var (id, tenant) in tenants)
        {
            var egress = tenant.Egress ?? new EgressConfig();
            var source = string.IsNullOrEmpty(egress.SourceAddress) ? null : IPAddress.Parse(egress.SourceAddress);
            var smarthost = egress.Smarthost is { } s && !string.IsNullOrWhiteSpace(s.Host) ? new TenantSmarthost(s.Host, s.Port, s.Tls) : null;
            var helo = string.IsNullOrEmpty(egress.HeloName) ? _defaultHelo : egress.HeloName;
            result[id] = new TenantEgress(helo, source, smarthost, egress.Tls is null ? _gatewayTls : new TlsPolicyTable(egress.Tls, _gatewayTls));
        }

        return result;
    }

    void Reload()
    {
        var errors = new List<string>();
        Dictionary<string, TenantEgress> next;
        try
        {
            next = Build(errors);
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException)
        {
            errors.Add(ex.Message);
            next = _tenants;
        }

        if (errors.Count > 0)
        {
            DeliveryLog.EgressReloadRejected(_logger, errors.Count, string.Join("; ", errors));
            return;
        }

        _tenants = next;
    }

    public void Dispose() => _subscription?.Dispose();
}

/// <summary>
/// Refuses to start with an invalid Tenants:&lt;id&gt;:Egress section, listing every error with its path alongside the
/// gateway's own (options validation at start), instead of failing later when delivery first needs the tenant.
/// </summary>
internal sealed class EgressOptionsValidator(IConfiguration? configuration) : Microsoft.Extensions.Options.IValidateOptions<GatewayConfig>
{
    public Microsoft.Extensions.Options.ValidateOptionsResult Validate(string? name, GatewayConfig options)
    {
        if (configuration is null)
            return Microsoft.Extensions.Options.ValidateOptionsResult.Skip;
        List<string> errors;
        try
        {
            var tenants = configuration.GetSection("Tenants").Get<Dictionary<string, TenantConfig>>() ?? [];
            errors = GatewayConfigValidator.CollectTenantEgress(tenants);
        }
        catch (InvalidOperationException ex)
        {
            errors = [ex.Message];
        }

        return errors.Count == 0 ? Microsoft.Extensions.Options.ValidateOptionsResult.Success : Microsoft.Extensions.Options.ValidateOptionsResult.Fail(errors);
    }
}
