using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Identity;

public sealed class TokenServiceTests : IDisposable
{
    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-tokens");
    readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero));
    readonly IdentityConfig _config = new() { Audience = "gw-test", KeyRotationGrace = TimeSpan.FromMinutes(30) };
    readonly TenantSnapshot _tenants;
    readonly InMemoryTenantKeys _hsm = new();

    public TokenServiceTests()
    {
        var errors = new List<string>();
        _tenants = TenantSnapshot.Build(new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Domains = ["tenant-a.example"] },
            ["tenant-b"] = new() { Domains = ["tenant-b.example"], Limits = new TenantLimitsConfig { MaxTokenTtl = TimeSpan.FromHours(1) } },
        }, errors);
        Assert.Empty(errors);
    }

    TokenService NewService(IdentityConfig? config = null) => new(new TokenStore(_data.FullName, _clock, _hsm), () => _tenants, config ?? _config, _clock);

    [Fact]
    public void Minted_token_verifies_for_its_tenant_only()
    {
        var svc = NewService();
        var minted = svc.Mint("tenant-a", null, [], "ci agent");
        Assert.StartsWith("sgw1.", minted.Token);
        Assert.Equal(_clock.GetUtcNow() + TimeSpan.FromMinutes(15), minted.Record.Expires); // default TTL

        var ok = svc.Verify("tenant-a", minted.Token);
        Assert.True(ok.Valid, ok.Reason);
        Assert.Equal(minted.Record.Id, ok.Payload!.Id);

        var cross = svc.Verify("tenant-b", minted.Token);
        Assert.False(cross.Valid);
        Assert.Equal("token tenant differs from user name", cross.Reason);
    }

    [Fact]
    public void A_cross_tenant_attempt_with_a_key_minted_moments_ago_by_another_process_is_still_reported_as_cross_tenant()
    {
        // The gateway's service has loaded its keys before tenant-b had any; the CLI (another store) then mints b's first token.
        var gateway = NewService();
        gateway.Mint("tenant-a", null, [], null);
        var b = NewService().Mint("tenant-b", null, [], null);

        // Within the refresh rate limit (100 ms) the gateway does not go to disk again: b's key is unknown to it yet.
        Assert.Equal("bad signature", gateway.Verify("tenant-a", b.Token).Reason);

        _clock.Advance(TimeSpan.FromMilliseconds(150)); // past the rate limit, as a real minute of uptime would be
        var check = gateway.Verify("tenant-a", b.Token);
        Assert.False(check.Valid);
        Assert.Equal(TokenService.TenantMismatch, check.Reason);
        Assert.Equal("tenant-b", check.Payload!.Tenant);
    }

    [Fact]
    public void A_token_of_tenant_b_relabelled_as_tenant_a_fails_the_mac()
    {
        var svc = NewService();
        var a = svc.Mint("tenant-a", null, [], null); // make sure A has a key
        var b = svc.Mint("tenant-b", null, [], null);
        var parts = b.Token.Split('.');
        var json = System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(parts[1].Replace('-', '+').Replace('_', '/').PadRight(parts[1].Length + ((4 - (parts[1].Length % 4)) % 4), '=')));
        var keyA = svc.Verify("tenant-a", a.Token).Payload!.KeyId;
        var forged = json.Replace("\"t\":\"tenant-b\"", "\"t\":\"tenant-a\"", StringComparison.Ordinal).Replace($"\"k\":\"{svc.Verify("tenant-b", b.Token).Payload!.KeyId}\"", $"\"k\":\"{keyA}\"", StringComparison.Ordinal);
        var forgedToken = $"sgw1.{Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(forged)).TrimEnd('=').Replace('+', '-').Replace('/', '_')}.{parts[2]}";
        var check = svc.Verify("tenant-a", forgedToken);
        Assert.False(check.Valid);
        Assert.Equal("bad signature", check.Reason);
    }

    [Theory]
    [InlineData("")]
    [InlineData("password")]
    [InlineData("sgw1.")]
    [InlineData("sgw1.!!!.???")]
    [InlineData("sgw1.e30.AAAA")]
    [InlineData("sgw1.a.b.c")]
    public void Garbage_is_refused_without_throwing(string token)
    {
        Assert.False(NewService().Verify("tenant-a", token).Valid);
        Assert.False(NewService().Verify("tenant-a", "sgw1." + new string('A', TokenService.MaxTokenLength)).Valid);
    }

    [Fact]
    public void Expiry_follows_the_clock()
    {
        var svc = NewService();
        var minted = svc.Mint("tenant-a", TimeSpan.FromMinutes(5), [], null);
        _clock.Advance(TimeSpan.FromMinutes(4));
        Assert.True(svc.Verify("tenant-a", minted.Token).Valid);
        _clock.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal("expired", svc.Verify("tenant-a", minted.Token).Reason);
        Assert.Equal("expired", Assert.Single(svc.List("tenant-a")).State);
    }

    [Fact]
    public void Revocation_written_by_another_process_is_seen_after_refresh()
    {
        var gateway = NewService();
        var cli = NewService();
        var minted = cli.Mint("tenant-a", null, [], null);
        gateway.Store.Refresh();
        var check = gateway.Verify("tenant-a", minted.Token);
        Assert.True(check.Valid);

        cli.Revoke(minted.Record.Id);
        Assert.True(gateway.StillValid(check.Payload!).Valid); // not yet re-read
        gateway.Store.Refresh();
        Assert.Equal("revoked", gateway.StillValid(check.Payload!).Reason);
        Assert.Equal("revoked", gateway.Verify("tenant-a", minted.Token).Reason);
        Assert.Equal("revoked", Assert.Single(cli.List(null)).State);
    }

    [Fact]
    public void Rotation_keeps_old_tokens_for_the_grace_window_only_and_leaves_other_tenants_alone()
    {
        var svc = NewService();
        var oldA = svc.Mint("tenant-a", TimeSpan.FromHours(2), [], null);
        var b = svc.Mint("tenant-b", TimeSpan.FromHours(1), [], null);

        var (newKey, retireAt) = svc.RotateKey("tenant-a", null);
        Assert.Equal(_clock.GetUtcNow() + TimeSpan.FromMinutes(30), retireAt);
        var newA = svc.Mint("tenant-a", TimeSpan.FromHours(2), [], null);
        Assert.Equal(newKey.Id, newA.Record.KeyId);
        Assert.NotEqual(oldA.Record.KeyId, newA.Record.KeyId);

        _clock.Advance(TimeSpan.FromMinutes(29));
        Assert.True(svc.Verify("tenant-a", oldA.Token).Valid);
        _clock.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal("key retired after rotation", svc.Verify("tenant-a", oldA.Token).Reason);
        Assert.True(svc.Verify("tenant-a", newA.Token).Valid);
        Assert.True(svc.Verify("tenant-b", b.Token).Valid);
    }

    [Fact]
    public void Token_for_another_deployment_is_refused()
    {
        var minted = NewService(new IdentityConfig { Audience = "other-gateway" }).Mint("tenant-a", null, [], null);
        var gateway = NewService();
        gateway.Store.Refresh();
        Assert.Equal("wrong audience", gateway.Verify("tenant-a", minted.Token).Reason);
    }

    [Fact]
    public void Mint_refuses_foreign_senders_long_ttls_and_unknown_tenants()
    {
        var svc = NewService();
        Assert.Throws<TokenException>(() => svc.Mint("tenant-a", null, ["ceo@tenant-b.example"], null));
        Assert.Throws<TokenException>(() => svc.Mint("tenant-b", TimeSpan.FromHours(2), [], null)); // tenant cap 1h
        Assert.Throws<TokenException>(() => svc.Mint("nobody", null, [], null));
        var scoped = svc.Mint("tenant-a", null, ["Alerts@Tenant-A.example", "TENANT-A.EXAMPLE"], null);
        Assert.Equal(["Alerts@tenant-a.example", "tenant-a.example"], scoped.Record.Senders);
    }

    [Fact]
    public void Nothing_on_disk_contains_the_token()
    {
        var minted = NewService().Mint("tenant-a", null, [], null);
        var mac = minted.Token.Split('.')[2];
        foreach (var file in Directory.EnumerateFiles(_data.FullName, "*", SearchOption.AllDirectories))
        {
            Assert.DoesNotContain(mac, File.ReadAllText(file));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        }
    }

    public void Dispose() => _data.Delete(recursive: true);
}
