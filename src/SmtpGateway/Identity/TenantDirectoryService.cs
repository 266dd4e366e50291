using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;
using SmtpGateway.Configuration;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Identity;

/// <summary>
/// Holds the current <see cref="TenantSnapshot"/> and swaps it when the configuration file changes. A reload that
/// fails validation keeps the last good snapshot and logs every error; sessions keep the snapshot they began with.
/// This is the only place the gateway compiles the "Tenants" section: identity, policy, egress, HSM tokens and inbound
/// routes all read <see cref="Current"/>, so after a reload no stage can see another version of a tenant than the rest.
/// </summary>
public sealed partial class TenantDirectoryService : IDisposable
{
    public const string SectionName = "Tenants";

    readonly IConfiguration _configuration;
    readonly ILogger _logger;
    readonly IDisposable? _subscription;
    volatile TenantSnapshot _current;

    public TenantDirectoryService(IConfiguration configuration, ILoggerFactory loggers)
    {
        _configuration = configuration;
        _logger = loggers.CreateLogger("SmtpGateway.Identity");
        var errors = new List<string>();
        _current = Load(configuration, errors);
        if (errors.Count > 0)
        {
            throw new OptionsValidationException(SectionName, typeof(TenantConfig), errors);
        }

        TenantLog.Loaded(_logger, _current.Tenants.Count);
        _subscription = ChangeToken.OnChange(configuration.GetReloadToken, Reload);
    }

    /// <summary>Raised after a successful reload (tests wait on it).</summary>
    public event Action<TenantSnapshot>? Reloaded;

    /// <summary>Raised when a reload is refused (every error listed); the last good snapshot stays. Tests wait on it.</summary>
    public event Action<IReadOnlyList<string>>? ReloadRejected;

    public TenantSnapshot Current => _current;

    public static TenantSnapshot Load(IConfiguration configuration, List<string> errors)
    {
        var tenants = configuration.GetSection(SectionName).Get<Dictionary<string, TenantConfig>>() ?? [];
        var defaults = configuration.GetSection($"{GatewayConfig.SectionName}:TenantLimits").Get<TenantLimitDefaults>() ?? new TenantLimitDefaults();
        var limits = configuration.GetSection($"{GatewayConfig.SectionName}:Limits").Get<LimitsConfig>() ?? new LimitsConfig();
        var delivery = configuration.GetSection($"{GatewayConfig.SectionName}:Delivery").Get<DeliveryConfig>() ?? new DeliveryConfig();
        DestinationRanges.CheckTenants(tenants, delivery, errors);
        return TenantSnapshot.Build(tenants, errors, defaults, limits.MaxMessageSize);
    }

    void Reload()
    {
        var errors = new List<string>();
        TenantSnapshot next;
        try
        {
            next = Load(_configuration, errors);
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException)
        {
            errors.Add(ex.Message);
            next = _current;
        }

        if (errors.Count > 0)
        {
            TenantLog.ReloadRejected(_logger, errors.Count, string.Join("; ", errors));
            ReloadRejected?.Invoke(errors);
            return;
        }

        _current = next;
        TenantLog.Reloaded(_logger, next.Tenants.Count);
        Reloaded?.Invoke(next);
    }

    public void Dispose() => _subscription?.Dispose();

    static partial class TenantLog
    {
        [LoggerMessage(EventId = EventIds.Identity + 0, Level = LogLevel.Information, Message = "Tenant directory loaded: {Count} tenant(s)")]
        public static partial void Loaded(ILogger logger, int count);

        [LoggerMessage(EventId = EventIds.Identity + 1, Level = LogLevel.Information, Message = "Tenant directory reloaded: {Count} tenant(s)")]
        public static partial void Reloaded(ILogger logger, int count);

        [LoggerMessage(EventId = EventIds.Identity + 2, Level = LogLevel.Error, Message = "Tenant directory reload rejected ({Count} error(s)); keeping the last good snapshot: {Errors}")]
        public static partial void ReloadRejected(ILogger logger, int count, string errors);
    }
}

/// <summary>
/// Refuses to start with an invalid "Tenants" section, listing every tenant error with its path alongside the gateway's
/// own (options validation at start). It builds the directory itself, so the snapshot it validated is the one served.
/// </summary>
public sealed class TenantDirectoryValidator(IServiceProvider services) : IValidateOptions<GatewayConfig>
{
    public ValidateOptionsResult Validate(string? name, GatewayConfig options)
    {
        try
        {
            _ = services.GetService(typeof(TenantDirectoryService));
            return ValidateOptionsResult.Success;
        }
        catch (OptionsValidationException ex)
        {
            return ValidateOptionsResult.Fail(ex.Failures);
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException)
        {
            // The binder's own complaint (a value of the wrong type), which names the key.
            return ValidateOptionsResult.Fail(ex.Message);
        }
    }
}
