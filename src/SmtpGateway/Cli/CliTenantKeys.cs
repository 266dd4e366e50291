using SmtpGateway.Hsm;
using SmtpGateway.Signing;

namespace SmtpGateway.Cli;

/// <summary>
/// The tenants' HSM tokens for a CLI verb that makes, uses or destroys token or return-path keys: the same module,
/// token labels and PINs as the gateway, opened for the verb's duration only.
/// </summary>
internal sealed class CliTenantKeys : IDisposable
{
    readonly Pkcs11Hsm _hsm;

    CliTenantKeys(CliConfiguration cli)
    {
        var hsm = cli.Gateway.Hsm;
        if (hsm.SoftHsm)
        {
            SoftHsmSetup.Configure(cli.DataDirectory);
        }

        _hsm = new Pkcs11Hsm(new Pkcs11HsmOptions { ModulePath = hsm.ModulePath, MaxSessionsPerToken = hsm.MaxSessionsPerToken, KeyCopyRecheckInterval = hsm.KeyCopyRecheckInterval });
        Keys = new HsmTenantKeys(_hsm, new TenantHsmTokens(cli.DataDirectory, () => cli.Tenants, hsm));
    }

    public ITenantKeys Keys { get; }

    public static CliTenantKeys Open(CliConfiguration cli) => new(cli);

    public void Dispose() => _hsm.Dispose();
}
