using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Listener;

namespace SmtpGateway.Tests.Identity;

/// <summary>Issue #13: the token control plane the CLI and the admin API share (every error at once, audit origin, revocation at once).</summary>
public sealed class TokenAdministrationTests : IDisposable
{
    static readonly IdentityConfig Config = new() { Audience = "gw-test" };
    static readonly TenantSnapshot Tenants = TenantSnapshot.Build(
        new Dictionary<string, TenantConfig> { ["tenant-a"] = new() { Domains = ["tenant-a.example"] }, ["tenant-b"] = new() { Domains = ["tenant-b.example"] } }, []);

    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-tokenadmin");
    readonly FakeTimeProvider _clock = new(DateTimeOffset.UnixEpoch.AddYears(56));
    readonly RecordingAudit _audit = new();
    readonly InMemoryTenantKeys _keys = new();

    TokenAdministration NewAdmin() =>
        new(new TokenService(new TokenStore(_data.FullName, _clock, _keys), () => Tenants, Config, _clock), () => Tenants, Config, _audit);

    [Fact]
    public void A_mint_check_lists_every_error_at_once()
    {
        var check = NewAdmin().CheckMint("tenant-a", "forever", ["x@tenant-b.example", "billing@tenant-a.example", "not a domain"], new string('d', 201));
        Assert.False(check.Valid);
        Assert.Equal(["description", "senders", "ttl"], check.Errors.Keys.Order());
        Assert.Equal(2, check.Errors["senders"].Length);

        var tooLong = NewAdmin().CheckMint("tenant-a", "400d", [], null);
        Assert.Contains("at most", Assert.Single(tooLong.Errors["ttl"]), StringComparison.Ordinal);
        Assert.True(NewAdmin().CheckMint("tenant-a", "2h", ["tenant-a.example"], "ok").Valid);
    }

    [Fact]
    public void Changes_through_the_api_are_audited_with_the_admin_key_and_a_revocation_bites_at_once()
    {
        var admin = NewAdmin();
        var api = new AuditOrigin(null, "api", "abcdef012345", "127.0.0.1");
        var minted = admin.Mint("tenant-a", admin.CheckMint("tenant-a", "15m", [], null), api);
        Assert.True(admin.Tokens.Verify("tenant-a", minted.Token).Valid);

        var mint = Assert.Single(_audit.Events);
        Assert.Equal((AuditActions.TokenMint, minted.Record.Id, "api"), (mint.Action, mint.TokenId, mint.Channel));
        Assert.EndsWith("; admin key abcdef012345", mint.Subject, StringComparison.Ordinal);

        // Another tenant's token id is not found under this tenant (the API's 404, as for an unknown id).
        Assert.Null(admin.Find("tenant-b", minted.Record.Id));
        Assert.NotNull(admin.Find("tenant-a", minted.Record.Id));

        admin.Revoke(minted.Record.Id, api);
        Assert.Equal("revoked", admin.Tokens.Verify("tenant-a", minted.Token).Reason);

        admin.RotateKey("tenant-b", TimeSpan.FromMinutes(5), api);
        var rotate = _audit.Events.Last();
        Assert.Equal((AuditActions.KeyRotate, "abcdef012345", "tenant-b"), (rotate.Action, rotate.TokenId, rotate.Tenant));

        admin.Mint("tenant-a", admin.CheckMint("tenant-a", null, [], null), AuditOrigin.Cli);
        Assert.Equal(("cli", null), (_audit.Events.Last().Listener, _audit.Events.Last().Channel));
    }

    [Theory]
    [InlineData("90s", 90)]
    [InlineData("15m", 900)]
    [InlineData("00:10:00", 600)]
    [InlineData("0", 0)]
    public void Durations_parse_like_the_CLI(string text, int seconds) =>
        Assert.Equal(TimeSpan.FromSeconds(seconds), TokenAdministration.ParseDuration(text));

    [Theory]
    [InlineData("forever")]
    [InlineData("1e300d")]
    [InlineData("-5m")]
    public void Bad_durations_are_format_errors_never_overflows(string text) =>
        Assert.Throws<FormatException>(() => TokenAdministration.ParseDuration(text));

    public void Dispose() => _data.Delete(recursive: true);
}
