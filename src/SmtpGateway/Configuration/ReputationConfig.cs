namespace SmtpGateway.Configuration;

/// <summary>
/// "Tenants:&lt;id&gt;:Reputation": when the tenant's recent bounce-plus-complaint rate passes the threshold, its outbound
/// queue is held (not dropped) until an operator runs `smtpgw queue resume --tenant T`. Mailbox providers throttle or
/// block a sending IP shared by every tenant at rates of a few percent; pausing one tenant protects the others.
/// </summary>
public sealed class ReputationConfig
{
    /// <summary>(bounced + complained) / (delivered + bounced) over <see cref="Window"/> above which the tenant is paused; 0 disables.</summary>
    public double MaxBounceRate { get; set; } = 0.10;

    /// <summary>No verdict below this many outcomes in the window: two bounces out of three messages say little.</summary>
    public int MinimumVolume { get; set; } = 100;

    public TimeSpan Window { get; set; } = TimeSpan.FromHours(1);

    public void Validate(string path, List<string> errors)
    {
        if (MaxBounceRate is < 0 or > 1 || double.IsNaN(MaxBounceRate))
        {
            errors.Add($"{path}:MaxBounceRate: must be between 0 (off) and 1.");
        }

        if (MinimumVolume < 1)
        {
            errors.Add($"{path}:MinimumVolume: must be at least 1.");
        }

        if (Window < TimeSpan.FromMinutes(1) || Window > TimeSpan.FromDays(30))
        {
            errors.Add($"{path}:Window: must be between 1 minute and 30 days.");
        }
    }
}
