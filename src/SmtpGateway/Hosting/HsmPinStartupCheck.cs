using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Signing;

namespace SmtpGateway.Hosting;

/// <summary>
/// Part of the start-up validation (ValidateOnStart): legacy PIN files are moved out of the data directory, and a PIN
/// file or PIN directory that group or others may access refuses the start, naming file and mode (never the PIN), so
/// a PIN exposed on disk is fixed before the gateway runs rather than found later. The same check runs in the CLI's
/// HSM commands (<see cref="TenantHsmTokens.PrepareAtStart"/>).
/// </summary>
internal sealed class HsmPinStartupCheck(IServiceProvider services) : IValidateOptions<GatewayConfig>
{
    readonly Lock _gate = new();
    List<string>? _errors;

    public ValidateOptionsResult Validate(string? name, GatewayConfig options)
    {
        TenantSnapshot tenants;
        try
        {
            tenants = services.GetRequiredService<TenantDirectoryService>().Current;
        }
        catch (Exception ex) when (ex is OptionsValidationException or InvalidOperationException or FormatException)
        {
            return ValidateOptionsResult.Skip; // TenantDirectoryValidator reports a tenant map that does not load
        }

        // IOptions and IOptionsMonitor each validate once; the legacy move and the log lines happen once.
        lock (_gate)
        {
            _errors ??= new TenantHsmTokens(GatewayPaths.DataDirectory(options), () => tenants, options.Hsm)
                .PrepareAtStart(tenants.Tenants.Keys, services.GetRequiredService<ILogger<TenantHsmTokens>>());
        }

        return _errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(_errors);
    }
}
