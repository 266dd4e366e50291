using System.Text;
using SmtpGateway.Vault;

namespace SmtpGateway.Tests.Vault;

/// <summary>The vault set/rotate body: what the CLI writes, the API reads back byte for byte, and every error is listed.</summary>
public sealed class VaultSecretBodyTests
{
    [Fact]
    public void A_refresh_token_body_round_trips_with_its_bytes_intact()
    {
        var secret = Encoding.UTF8.GetBytes("r\"t\\é<>&\u2028x");
        var clientSecret = Encoding.UTF8.GetBytes("c s");
        var (buffer, length) = VaultSecretBody.Write(VaultSecretKind.RefreshToken, "mailer@c.example", secret, clientSecret, "https://login.example/token", "c1",
            TimeSpan.FromHours(2));
        var errors = new Dictionary<string, List<string>>();

        using var body = VaultSecretBody.Parse(buffer.AsSpan(0, length), rotate: true, errors);

        Assert.Empty(errors);
        Assert.Equal(VaultSecretKind.RefreshToken, body.Kind);
        Assert.Equal("mailer@c.example", body.User);
        Assert.Equal("https://login.example/token", body.TokenEndpoint);
        Assert.Equal("c1", body.ClientId);
        Assert.Equal(TimeSpan.FromHours(2), body.Grace);
        using var stored = body.ToSecret();
        Assert.Equal([.. secret, (byte)'\n', .. clientSecret], stored.Payload());
    }

    [Fact]
    public void Every_error_is_listed_at_once()
    {
        var errors = new Dictionary<string, List<string>>();
        using var body = VaultSecretBody.Parse("{\"password\":\"\",\"accessToken\":\"a\",\"clientId\":\"c\",\"clientSecret\":\"s\",\"grace\":\"1h\",\"x\":[1]}"u8,
            rotate: false, errors);

        Assert.Equal(["clientSecret", "grace", "password", "refreshToken", "secret", "user", "x"], errors.Keys.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Not_json_is_one_error()
    {
        var errors = new Dictionary<string, List<string>>();
        using var body = VaultSecretBody.Parse("{\"user\":"u8, rotate: false, errors);
        Assert.Equal(["body"], errors.Keys);
    }
}
