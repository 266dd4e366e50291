namespace SmtpGateway.Configuration;

/// <summary>"Gateway:Vault": the tenants' upstream-credential vault (smarthost passwords and OAuth 2.0 tokens).</summary>
public sealed class VaultConfig
{
    /// <summary>
    /// After `smtpgw vault rotate`, the previous version stays usable this long (and is then destroyed): queued and
    /// in-flight messages keep working, and a smarthost that does not yet accept the new secret falls back to the old one.
    /// </summary>
    public TimeSpan RotationGrace { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>An OAuth 2.0 access token that expires within this is refreshed before it is used, so it cannot lapse mid-AUTH.</summary>
    public TimeSpan RefreshBefore { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Whole refresh request (connect, TLS, response) to a token endpoint; past it the delivery is deferred.</summary>
    public TimeSpan TokenEndpointTimeout { get; set; } = TimeSpan.FromSeconds(15);
}
