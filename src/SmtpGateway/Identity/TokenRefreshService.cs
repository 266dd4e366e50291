using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;
using SmtpGateway.Diagnostics;
using SmtpGateway.Hsm;
using SmtpGateway.Identity.Tokens;

namespace SmtpGateway.Identity;

/// <summary>
/// Re-reads token revocations and keys written by the CLI, so `smtpgw token revoke` bites within a second, and destroys
/// token keys past their rotation grace in the tenants' HSM tokens, so a retired key does not outlive its window even
/// when nobody rotates again.
/// </summary>
public sealed partial class TokenRefreshService(TokenStore store, IdentityConfig config, TimeProvider time, ILogger<TokenRefreshService> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(config.RefreshInterval, time);
        do
        {
            try
            {
                store.Refresh();
                DestroyRetiredKeys();
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // A file mid-rename or unreadable for a moment: keep the last good view and try again next tick.
                // The loop must never die, or revocations would silently stop reaching the gateway.
                RefreshFailed(logger, ex.GetType().Name);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }

    void DestroyRetiredKeys()
    {
        try
        {
            store.DestroyRetiredKeys();
        }
        catch (HsmException ex)
        {
            // The keys stay listed (and refused, being retired) until the token answers; the next tick tries again.
            DestroyFailed(logger, ex.Message);
        }
    }

    [LoggerMessage(EventId = EventIds.Identity + 14, Level = LogLevel.Warning, Message = "Destroying retired token keys in the HSM failed ({Error}); will retry")]
    private static partial void DestroyFailed(ILogger logger, string error);

    [LoggerMessage(EventId = EventIds.Identity + 10, Level = LogLevel.Error, Message = "Reading token revocations and keys failed ({Error}); keeping the last good state")]
    private static partial void RefreshFailed(ILogger logger, string error);
}
