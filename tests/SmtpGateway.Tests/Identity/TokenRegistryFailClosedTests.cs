using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Listener;

namespace SmtpGateway.Tests.Identity;

/// <summary>
/// Issue 12: revocation fails closed. The registry (tokens.jsonl, one file for every tenant) that should exist but is
/// missing, unreadable or damaged makes AUTH a temporary failure for every tenant until it reads again; revocations
/// already read are never forgotten. Real temp files, a fake clock (tests run as root, so damage is done by deleting,
/// corrupting, or putting a directory where the file was, not by chmod).
/// </summary>
public sealed class TokenRegistryFailClosedTests : IDisposable
{
    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-registry");
    readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
    readonly IdentityConfig _config = new() { Audience = "gw-test" };
    readonly InMemoryTenantKeys _hsm = new();
    readonly CapturingLogger _log = new();
    readonly TenantSnapshot _tenants;

    public TokenRegistryFailClosedTests()
    {
        var errors = new List<string>();
        _tenants = TenantSnapshot.Build(new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Domains = ["tenant-a.example"] },
            ["tenant-b"] = new() { Domains = ["tenant-b.example"] },
        }, errors);
        Assert.Empty(errors);
    }

    public void Dispose() => _data.Delete(recursive: true);

    TokenService NewService(ILogger? logger = null) => new(new TokenStore(_data.FullName, _clock, _hsm, logger), () => _tenants, _config, _clock);

    string RegistryPath => Path.Combine(_data.FullName, "identity", "tokens.jsonl");

    /// <summary>A gateway that has read a registry with a live token of each tenant and one revoked token of tenant-a.</summary>
    (TokenService Gateway, TokenService Cli, MintedToken A, MintedToken B, MintedToken Revoked) Running()
    {
        var cli = NewService();
        var a = cli.Mint("tenant-a", null, [], null);
        var b = cli.Mint("tenant-b", null, [], null);
        var revoked = cli.Mint("tenant-a", null, [], null);
        cli.Revoke(revoked.Record.Id);
        var gateway = NewService(_log);
        gateway.Store.Refresh();
        Assert.Null(gateway.Store.RegistryFault);
        Assert.True(gateway.Verify("tenant-a", a.Token).Valid);
        return (gateway, cli, a, b, revoked);
    }

    static void AssertTemporary(TokenCheck check)
    {
        Assert.False(check.Valid);
        Assert.True(check.Temporary, check.Reason);
        Assert.StartsWith("token registry ", check.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_fresh_install_without_a_registry_is_not_a_fault()
    {
        var svc = NewService(_log);
        svc.Store.Refresh();
        svc.RotateKey("tenant-a", null); // keys without any token minted: still no registry, still fine
        svc.Store.Refresh();
        Assert.Null(svc.Store.RegistryFault);
        Assert.False(File.Exists(svc.Store.RegistryMarkerPath));
        Assert.DoesNotContain(_log.Entries, e => e.Level >= LogLevel.Warning);

        // The first mint writes the marker before the registry line: from then on the registry must exist.
        svc.Mint("tenant-a", null, [], null);
        Assert.True(File.Exists(svc.Store.RegistryMarkerPath));
    }

    [Fact]
    public void A_deleted_registry_makes_every_tenant_s_auth_temporary_keeps_known_revocations_and_logs_once()
    {
        var (gateway, _, a, b, revoked) = Running();
        var saved = File.ReadAllBytes(RegistryPath);
        File.Delete(RegistryPath);
        gateway.Store.Refresh();
        gateway.Store.Refresh();

        Assert.Equal("is missing (or not a regular file)", gateway.Store.RegistryFault);
        AssertTemporary(gateway.Verify("tenant-a", a.Token));
        AssertTemporary(gateway.Verify("tenant-b", b.Token)); // the registry is global: every tenant is affected
        Assert.Equal("revoked", gateway.Verify("tenant-a", revoked.Token).Reason); // known revocation: refused outright
        Assert.False(gateway.Verify("tenant-a", revoked.Token).Temporary);
        var mac = a.Token.LastIndexOf('.') + 1;
        var forged = a.Token[..mac] + (a.Token[mac] == 'A' ? 'B' : 'A') + a.Token[(mac + 1)..];
        Assert.Equal("bad signature", gateway.Verify("tenant-a", forged).Reason); // a forgery is still a forgery (535, strike)
        Assert.False(gateway.Verify("tenant-a", forged).Temporary);

        // One error log for the whole outage so far, naming the cause, never the file's content.
        var error = Assert.Single(_log.Entries, e => e.Level == LogLevel.Error);
        Assert.Contains("is missing", error.Message, StringComparison.Ordinal);

        // Still faulted five minutes on: logged again, so the outage stays visible.
        _clock.Advance(TimeSpan.FromMinutes(5));
        gateway.Store.Refresh();
        Assert.Equal(2, _log.Entries.Count(e => e.Level == LogLevel.Error));

        // The operator restores it: a good read ends the fault, the old revocation stays.
        File.WriteAllBytes(RegistryPath, saved);
        gateway.Store.Refresh();
        Assert.Null(gateway.Store.RegistryFault);
        Assert.True(gateway.Verify("tenant-a", a.Token).Valid);
        Assert.Equal("revoked", gateway.Verify("tenant-a", revoked.Token).Reason);
        Assert.Contains(_log.Entries, e => e.Level == LogLevel.Information && e.Message.Contains("reads again", StringComparison.Ordinal));
    }

    [Fact]
    public void A_registry_lost_before_a_restart_is_noticed_by_the_marker()
    {
        var (_, _, a, _, _) = Running();
        File.Delete(RegistryPath);

        var restarted = NewService(_log);
        restarted.Store.Refresh();
        Assert.NotNull(restarted.Store.RegistryFault);
        AssertTemporary(restarted.Verify("tenant-a", a.Token));
    }

    [Fact]
    public void A_directory_in_place_of_the_registry_is_a_fault()
    {
        var (gateway, _, a, _, _) = Running();
        File.Delete(RegistryPath);
        Directory.CreateDirectory(RegistryPath);
        gateway.Store.Refresh();
        AssertTemporary(gateway.Verify("tenant-a", a.Token));

        // Even on a start that never saw the file and has no marker.
        File.Delete(Path.Combine(_data.FullName, "identity", "tokens.expected"));
        var restarted = NewService();
        restarted.Store.Refresh();
        Assert.NotNull(restarted.Store.RegistryFault);
    }

    [Theory]
    [InlineData("{not json\n")]
    [InlineData("{\"op\":\"revoke\"}\n")] // valid JSON, but a revoke without the id it revokes
    [InlineData("{\"op\":\"unrevoke\",\"id\":\"tok_x\"}\n")]
    [InlineData("\u0001\u0002garbage\n")]
    public void A_damaged_line_is_a_fault_until_repaired_and_the_lines_after_it_count_once_it_is(string damage)
    {
        var (gateway, cli, a, b, _) = Running();
        cli.Revoke(b.Record.Id);
        var good = File.ReadAllBytes(RegistryPath);
        var mintedLater = NewService().Mint("tenant-a", null, [], null);
        var after = File.ReadAllLines(RegistryPath).Last();
        File.WriteAllBytes(RegistryPath, [.. good, .. Encoding.UTF8.GetBytes(damage + after + "\n")]); // damage before the last line
        gateway.Store.Refresh();

        Assert.StartsWith("has a line that is not a registry entry at byte ", gateway.Store.RegistryFault, StringComparison.Ordinal);
        AssertTemporary(gateway.Verify("tenant-a", a.Token));
        Assert.DoesNotContain(_log.Lines, l => l.Contains("garbage", StringComparison.Ordinal) || l.Contains("not json", StringComparison.Ordinal));

        // Repaired (the damaged line removed): the file is shorter, so it is read again from the start; it kept every
        // revoke line, so the watermark passes, and the line after the damage counts.
        File.WriteAllBytes(RegistryPath, [.. good, .. Encoding.UTF8.GetBytes(after + "\n")]);
        gateway.Store.Refresh();
        Assert.Null(gateway.Store.RegistryFault);
        Assert.True(gateway.Verify("tenant-a", a.Token).Valid);
        Assert.True(gateway.Verify("tenant-a", mintedLater.Token).Valid);
        Assert.Equal("revoked", gateway.Verify("tenant-b", b.Token).Reason);
    }

    [Fact]
    public void Revoking_a_token_behind_a_damaged_line_says_why_it_is_not_found()
    {
        var (_, cli, _, _, _) = Running();
        var hidden = NewService().Mint("tenant-a", null, [], null);
        var lines = File.ReadAllLines(RegistryPath);
        File.WriteAllLines(RegistryPath, [.. lines[..^1], "{not json", lines[^1]]); // damage before the token's line
        var error = Assert.Throws<TokenException>(() => cli.Revoke(hidden.Record.Id));
        Assert.Contains("has a line that is not a registry entry", error.Message, StringComparison.Ordinal);
        Assert.Contains("Repair it", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Nothing_is_minted_or_revoked_while_the_registry_is_lost_so_a_restart_cannot_revive_a_revoked_token()
    {
        var (_, cli, a, _, revoked) = Running();
        File.Delete(RegistryPath);

        // A restarted gateway (a new store) knows the registry should exist: AUTH is a temporary failure.
        var restarted = NewService(_log);
        restarted.Store.Refresh();
        AssertTemporary(restarted.Verify("tenant-a", revoked.Token));

        // A routine mint or revoke must not recreate the file (which would end the fault with every revocation lost).
        var mint = Assert.Throws<TokenException>(() => NewService().Mint("tenant-b", null, [], null));
        Assert.Contains("nothing is written to it until it is repaired", mint.Message, StringComparison.Ordinal);
        Assert.Contains("--grace 0", mint.Message, StringComparison.Ordinal);
        Assert.Throws<TokenException>(() => cli.Revoke(a.Record.Id));
        Assert.False(File.Exists(RegistryPath));

        restarted.Store.Refresh();
        AssertTemporary(restarted.Verify("tenant-a", revoked.Token));
        Assert.False(restarted.Verify("tenant-a", revoked.Token).Valid);
    }

    [Fact]
    public void A_half_written_last_line_is_not_damage()
    {
        var (gateway, _, a, _, _) = Running();
        File.AppendAllText(RegistryPath, "{\"op\":\"revoke\",\"id\":"); // a writer still at work: no newline yet
        gateway.Store.Refresh();
        Assert.Null(gateway.Store.RegistryFault);
        Assert.True(gateway.Verify("tenant-a", a.Token).Valid);
    }

    [Fact]
    public void A_registry_replaced_by_an_older_copy_does_not_forget_a_revocation()
    {
        var cli = NewService();
        var a = cli.Mint("tenant-a", null, [], null);
        var backup = File.ReadAllBytes(RegistryPath);
        cli.Revoke(a.Record.Id);
        var gateway = NewService();
        gateway.Store.Refresh();
        Assert.Equal("revoked", gateway.Verify("tenant-a", a.Token).Reason);

        File.WriteAllBytes(RegistryPath, backup); // restored from a backup taken before the revocation
        gateway.Store.Refresh();
        Assert.Equal("holds 0 revocations, fewer than the 1 written to it (an older copy put back?)", gateway.Store.RegistryFault);
        Assert.False(gateway.Verify("tenant-a", a.Token).Valid);

        // After a restart the revocation is in no file any more; the watermark in the marker still says one was written.
        var restarted = NewService();
        restarted.Store.Refresh();
        AssertTemporary(restarted.Verify("tenant-a", a.Token));

        // The operator starts over on purpose: the key rotated with no grace, the marker deleted.
        restarted.RotateKey("tenant-a", TimeSpan.Zero);
        File.Delete(restarted.Store.RegistryMarkerPath);
        restarted.Store.Refresh();
        Assert.Null(restarted.Store.RegistryFault);
        Assert.False(restarted.Verify("tenant-a", a.Token).Valid);
        Assert.True(restarted.Verify("tenant-a", restarted.Mint("tenant-a", null, [], null).Token).Valid);
    }

    [Fact]
    public void Mail_in_a_session_authenticated_before_the_damage_gets_a_temporary_failure_not_a_revocation()
    {
        var (gateway, _, a, _, _) = Running();
        var payload = gateway.Verify("tenant-a", a.Token).Payload!;
        var saved = File.ReadAllBytes(RegistryPath);
        File.Delete(RegistryPath);
        gateway.Store.Refresh();
        var still = gateway.StillValid(payload);
        Assert.True(still.Temporary);

        // An empty file would lack the revocation the watermark counts: still a fault. The real file back ends it.
        File.WriteAllText(RegistryPath, "");
        gateway.Store.Refresh();
        Assert.True(gateway.StillValid(payload).Temporary);
        File.WriteAllBytes(RegistryPath, saved);
        gateway.Store.Refresh();
        Assert.True(gateway.StillValid(payload).Valid);
    }

    [Fact]
    public async Task Over_smtp_auth_answers_454_without_a_strike_while_the_registry_is_gone_and_235_once_it_is_back()
    {
        await using var gw = await TestGateway.StartAsync();
        var token = gw.Tokens.Mint("tenant-a", null, [], "agent").Token;
        gw.Tokens.Store.Refresh();
        var registry = gw.Tokens.Store.RegistryPath;
        var saved = File.ReadAllBytes(registry);
        File.Delete(registry);
        gw.Tokens.Store.Refresh(); // as the refresh service would within a second

        await using var c = await IdentityTranscriptTests.SubmissionAsync(gw);
        var plain = Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0tenant-a\0{token}"));
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal("454 4.7.0 Temporary authentication failure, try again later", await c.CommandAsync("AUTH PLAIN " + plain));
        }

        Assert.All(gw.Audit.Events.Where(e => e.Action == AuditActions.Auth), e => Assert.Equal("error", e.Result));

        File.WriteAllBytes(registry, saved);
        gw.Tokens.Store.Refresh();
        Assert.StartsWith("235 2.7.0", await c.CommandAsync("AUTH PLAIN " + plain));
    }

    [Fact]
    public async Task Over_smtp_mail_in_a_session_authenticated_before_the_loss_gets_451_and_keeps_its_auth()
    {
        await using var gw = await TestGateway.StartAsync();
        var token = gw.Tokens.Mint("tenant-a", null, [], "agent").Token;
        gw.Tokens.Store.Refresh();
        var registry = gw.Tokens.Store.RegistryPath;
        var saved = File.ReadAllBytes(registry);

        await using var c = await IdentityTranscriptTests.SubmissionAsync(gw);
        Assert.StartsWith("235 2.7.0", await c.CommandAsync("AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0tenant-a\0{token}"))));

        File.Delete(registry);
        gw.Tokens.Store.Refresh();
        Assert.Equal("451 4.7.0 Temporary failure checking the session's credentials, try again later", await c.CommandAsync("MAIL FROM:<agent@tenant-a.example>"));
        Assert.Contains(gw.Audit.Events, e => e.Action == AuditActions.TokenCheck && e.Result == "error");

        File.WriteAllBytes(registry, saved);
        gw.Tokens.Store.Refresh();
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<agent@tenant-a.example>"));
    }
}
