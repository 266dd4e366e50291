using Microsoft.Extensions.Hosting;
using SmtpGateway.Envelope;
using SmtpGateway.Identity.Tokens;

namespace SmtpGateway.Hosting;

/// <summary>
/// At start, before the listener accepts: moves legacy plaintext token and return-path keys into the tenants' HSM
/// tokens and shreds the files' old bytes (one log line per tenant and kind). A tenant whose token cannot be reached is
/// logged and migrated on first use instead; the gateway still starts for the others.
/// </summary>
internal sealed class LegacyKeyMigration(TokenStore tokens, VerpKeyStore returnPaths) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        tokens.MigrateLegacyKeys();
        returnPaths.MigrateLegacyKeys();
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
