using Microsoft.Extensions.Hosting;

namespace SmtpGateway.Vault;

/// <summary>
/// Destroys credential versions whose rotation grace window has ended, even when no write comes along to do it: a
/// rotated-out password must not linger in the file for days because nobody touched the vault since.
/// </summary>
public sealed class VaultSweeper(CredentialVault vault, TimeProvider time) : BackgroundService
{
    /// <summary>How often the files are checked; the check reads cached metadata and takes no lock when nothing is due.</summary>
    public TimeSpan Interval { get; init; } = TimeSpan.FromMinutes(1);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval, time);
        try
        {
            do
            {
                vault.Sweep();
            }
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }
}
