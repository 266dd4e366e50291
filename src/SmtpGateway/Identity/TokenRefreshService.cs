using Microsoft.Extensions.Hosting;
using SmtpGateway.Configuration;
using SmtpGateway.Identity.Tokens;

namespace SmtpGateway.Identity;

/// <summary>Re-reads token revocations and keys written by the CLI, so `smtpgw token revoke` bites within a second.</summary>
public sealed class TokenRefreshService(TokenStore store, IdentityConfig config, TimeProvider time) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(config.RefreshInterval, time);
        do
        {
            try
            {
                store.Refresh();
            }
            catch (IOException)
            {
                // A file mid-rename: the next tick reads it.
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }
}
