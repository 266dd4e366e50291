using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Configuration;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Listener;

namespace SmtpGateway.Tests.Identity;

/// <summary>
/// Issue #11: session-token keys live in the tenant's HSM token. Legacy plaintext key files are migrated and tokens
/// minted before keep verifying; rotation destroys retired keys in the token; another tenant's key never vouches;
/// one HSM MAC per AUTH at most, none for tokens refused by cheaper checks; an unreachable token is a temporary failure.
/// </summary>
public sealed class TokenKeyHsmTests : IDisposable
{
    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-tokenkeys");
    readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero));
    readonly IdentityConfig _config = new() { Audience = "gw-test", KeyRotationGrace = TimeSpan.FromMinutes(30) };
    readonly InMemoryTenantKeys _hsm = new();
    readonly TenantSnapshot _tenants = TwoTenants();

    /// <summary>tenant-a and tenant-b with a domain each and nothing else.</summary>
    internal static TenantSnapshot TwoTenants()
    {
        var errors = new List<string>();
        var tenants = TenantSnapshot.Build(new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Domains = ["tenant-a.example"] },
            ["tenant-b"] = new() { Domains = ["tenant-b.example"] },
        }, errors);
        Assert.Empty(errors);
        return tenants;
    }

    public void Dispose() => _data.Delete(recursive: true);

    string KeyFile(string tenant) => Path.Combine(_data.FullName, "identity", "keys", tenant + ".json");

    TokenService NewService(Microsoft.Extensions.Logging.ILogger? logger = null) =>
        new(new TokenStore(_data.FullName, _clock, _hsm, logger), () => _tenants, _config, _clock);

    int Macs(Action action)
    {
        var before = _hsm.MacCalls;
        action();
        return _hsm.MacCalls - before;
    }

    /// <summary>A token as the pre-#11 gateway minted it: HMAC-SHA256 in process under the plaintext key.</summary>
    string LegacyToken(string tenant, string keyId, string secret, TimeSpan ttl)
    {
        var now = _clock.GetUtcNow();
        var payload = new TokenPayload(1, tenant, keyId, "tok_legacy" + keyId, _config.Audience, now.ToUnixTimeSeconds(), (now + ttl).ToUnixTimeSeconds(), []);
        static string B64(byte[] b) => Convert.ToBase64String(b).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        var signed = "sgw1." + B64(JsonSerializer.SerializeToUtf8Bytes(payload, TokenJsonContext.Default.TokenPayload));
        return $"{signed}.{B64(HMACSHA256.HashData(Convert.FromBase64String(secret), Encoding.ASCII.GetBytes(signed)))}";
    }

    void WriteLegacyFile(string tenant, params (string Id, string Secret, DateTimeOffset Created, DateTimeOffset? RetiresAt)[] keys)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(KeyFile(tenant))!);
        var entries = keys.Select(k => $$"""{"id":"{{k.Id}}","secret":"{{k.Secret}}","created":"{{k.Created:O}}"{{(k.RetiresAt is { } r ? $",\"retiresAt\":\"{r:O}\"" : "")}}}""");
        File.WriteAllText(KeyFile(tenant), $$"""{"keys":[{{string.Join(',', entries)}}]}""");
    }

    [Fact]
    public async Task A_legacy_key_file_seen_first_while_the_token_is_down_gives_a_temporary_auth_failure_not_535()
    {
        var secret = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
        WriteLegacyFile("tenant-a", ("k1", secret, _clock.GetUtcNow() - TimeSpan.FromMinutes(5), null));
        var token = LegacyToken("tenant-a", "k1", secret, TimeSpan.FromHours(1));
        _hsm.Unavailable = true;
        var service = NewService();
        service.Store.Refresh(); // migration fails: the token is down

        var result = await new TokenAuthenticator(service, new RecordingAudit())
            .AuthenticateAsync(new AuthRequest("s1", IPAddress.Loopback, "submission", "PLAIN", "", "tenant-a", token), CancellationToken.None);

        Assert.False(result.Succeeded);
        Assert.True(result.Temporary);
        Assert.Contains("\"secret\"", File.ReadAllText(KeyFile("tenant-a")), StringComparison.Ordinal); // not yet migrated

        _hsm.Unavailable = false;
        service.Store.Refresh();
        Assert.True(service.Verify("tenant-a", token).Valid);
        KeyFileAssertions.HoldsNoKeyMaterial(KeyFile("tenant-a"));
    }

    [Fact]
    public void The_lifetime_cap_is_checked_at_every_use_not_only_at_mint()
    {
        var service = NewService();
        var token = service.Mint("tenant-a", TimeSpan.FromHours(2), [], null);
        var check = service.Verify("tenant-a", token.Token);
        Assert.True(check.Valid);

        // The operator lowers the cap: the two-hour token stops working at once, at AUTH and at the next MAIL FROM.
        _config.MaxTokenTtl = TimeSpan.FromHours(1);

        Assert.Equal("lifetime longer than MaxTokenTtl", service.Verify("tenant-a", token.Token).Reason);
        Assert.False(service.StillValid(check.Payload!).Valid);
        Assert.True(service.Verify("tenant-a", service.Mint("tenant-a", TimeSpan.FromMinutes(30), [], null).Token).Valid);
    }

    [Fact]
    public void Legacy_keys_are_imported_the_file_shredded_and_tokens_minted_before_still_verify()
    {
        var (old, current) = (Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)), Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)));
        var now = _clock.GetUtcNow();
        WriteLegacyFile("tenant-a", ("k1", old, now - TimeSpan.FromDays(1), now + TimeSpan.FromMinutes(10)), ("k2", current, now - TimeSpan.FromMinutes(5), null));
        var leftover = KeyFile("tenant-a") + ".tmp"; // the old writer's fixed temp name, left by a crash
        File.WriteAllText(leftover, File.ReadAllText(KeyFile("tenant-a")));
        var witness = KeyFileAssertions.HardLink(KeyFile("tenant-a"));
        var tokenOld = LegacyToken("tenant-a", "k1", old, TimeSpan.FromHours(1));
        var tokenCurrent = LegacyToken("tenant-a", "k2", current, TimeSpan.FromHours(1));
        var log = new CapturingLogger();

        var service = NewService(log);
        service.Store.MigrateLegacyKeys();

        KeyFileAssertions.HoldsNoKeyMaterial(KeyFile("tenant-a"));
        KeyFileAssertions.IsZeros(witness);
        Assert.False(File.Exists(leftover));
        Assert.Contains("migrated 2 token keys of tenant tenant-a into its HSM token; plaintext file shredded", log.Lines.Single());
        Assert.True(_hsm.HasKey("tenant-a", "smtpgw-token-k1"));
        Assert.True(_hsm.HasKey("tenant-a", "smtpgw-token-k2"));

        service.Store.Refresh();
        Assert.True(service.Verify("tenant-a", tokenOld).Valid);
        Assert.True(service.Verify("tenant-a", tokenCurrent).Valid);
        Assert.Equal("k2", service.Mint("tenant-a", null, [], null).Record.KeyId); // the current key keeps minting
        _clock.Advance(TimeSpan.FromMinutes(10));
        Assert.Equal("key retired after rotation", service.Verify("tenant-a", tokenOld).Reason); // its grace still counts
    }

    [Fact]
    public void A_legacy_file_appearing_under_a_running_gateway_is_migrated_on_refresh()
    {
        var service = NewService();
        var secret = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
        WriteLegacyFile("tenant-b", ("k9", secret, _clock.GetUtcNow(), null));

        service.Store.Refresh();

        KeyFileAssertions.HoldsNoKeyMaterial(KeyFile("tenant-b"));
        Assert.True(service.Verify("tenant-b", LegacyToken("tenant-b", "k9", secret, TimeSpan.FromMinutes(5))).Valid);
    }

    [Fact]
    public void Key_files_hold_metadata_only_and_keys_are_made_in_the_token()
    {
        var service = NewService();
        var minted = service.Mint("tenant-a", null, [], null);
        service.RotateKey("tenant-a", null);

        KeyFileAssertions.HoldsNoKeyMaterial(KeyFile("tenant-a"));
        var keys = service.Store.KeysOf("tenant-a");
        Assert.Equal(2, keys.Count);
        Assert.All(keys, k => Assert.Equal(TokenStore.LabelFor(k.Id), k.Label));
        Assert.All(keys, k => Assert.True(_hsm.HasKey("tenant-a", k.KeyLabel)));
        Assert.Contains(minted.Record.KeyId, File.ReadAllText(KeyFile("tenant-a")), StringComparison.Ordinal);
    }

    [Fact]
    public void Rotation_on_a_fake_clock_destroys_retired_keys_in_the_token()
    {
        var service = NewService();
        var first = service.Mint("tenant-a", TimeSpan.FromHours(2), [], null);
        var firstLabel = TokenStore.LabelFor(first.Record.KeyId);
        var (second, retireAt) = service.RotateKey("tenant-a", TimeSpan.FromMinutes(30));
        Assert.True(_hsm.HasKey("tenant-a", firstLabel));

        _clock.Advance(TimeSpan.FromMinutes(30));
        Assert.Equal(retireAt, _clock.GetUtcNow());
        service.Store.DestroyRetiredKeys(); // what the gateway's refresh loop does every tick

        Assert.False(_hsm.HasKey("tenant-a", firstLabel));
        Assert.Equal([second.Id], service.Store.KeysOf("tenant-a").Select(k => k.Id));
        Assert.DoesNotContain(first.Record.KeyId, File.ReadAllText(KeyFile("tenant-a")), StringComparison.Ordinal);
        Assert.Equal(0, Macs(() => Assert.False(service.Verify("tenant-a", first.Token).Valid))); // unknown key now: no HSM call

        // A rotation destroys whatever has retired by then as well; the key it retires goes at the next refresh.
        var (third, _) = service.RotateKey("tenant-a", TimeSpan.Zero);
        service.RotateKey("tenant-a", TimeSpan.Zero);
        Assert.False(_hsm.HasKey("tenant-a", second.KeyLabel));
        Assert.True(_hsm.HasKey("tenant-a", third.KeyLabel));
        service.Store.DestroyRetiredKeys();
        Assert.False(_hsm.HasKey("tenant-a", third.KeyLabel));
    }

    [Fact]
    public void Tenant_b_key_never_verifies_a_token_of_tenant_a()
    {
        var service = NewService();
        var a = service.Mint("tenant-a", null, [], null);
        var b = service.Mint("tenant-b", null, [], null);
        var labelB = TokenStore.LabelFor(b.Record.KeyId);

        // A's claims naming B's key id, MACed under B's key: A's key list does not have that id.
        var parts = a.Token.Split('.');
        var claims = Encoding.UTF8.GetString(Convert.FromBase64String(parts[1].Replace('-', '+').Replace('_', '/').PadRight(parts[1].Length + ((4 - (parts[1].Length % 4)) % 4), '=')))
            .Replace(a.Record.KeyId, b.Record.KeyId, StringComparison.Ordinal);
        var body = Convert.ToBase64String(Encoding.UTF8.GetBytes(claims)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        var mac = _hsm.Mac("tenant-b", labelB, Encoding.ASCII.GetBytes("sgw1." + body));
        var forged = $"sgw1.{body}.{Convert.ToBase64String(mac).TrimEnd('=').Replace('+', '-').Replace('/', '_')}";
        Assert.False(service.Verify("tenant-a", forged).Valid);

        // Even with B's key id copied into A's key file, the label names no key in A's token: never valid.
        var keysA = File.ReadAllText(KeyFile("tenant-a"));
        File.WriteAllText(KeyFile("tenant-a"), File.ReadAllText(KeyFile("tenant-b")));
        _clock.Advance(TimeSpan.FromSeconds(1));
        var fresh = NewService();
        Assert.ThrowsAny<HsmException>(() => fresh.Verify("tenant-a", forged));
        File.WriteAllText(KeyFile("tenant-a"), keysA);

        // And B's genuine token under A's name is the audited cross-tenant case, checked under B's key.
        Assert.Equal(TokenService.TenantMismatch, service.Verify("tenant-a", b.Token).Reason);
    }

    [Fact]
    public async Task One_hsm_mac_per_auth_and_none_for_tokens_refused_by_cheaper_checks()
    {
        var service = NewService();
        var good = service.Mint("tenant-a", TimeSpan.FromMinutes(10), [], null);
        var revoked = service.Mint("tenant-a", TimeSpan.FromMinutes(10), [], null);
        var expiring = service.Mint("tenant-a", TimeSpan.FromMinutes(1), [], null);
        service.Revoke(revoked.Record.Id);
        var foreign = new TokenService(service.Store, () => _tenants, new IdentityConfig { Audience = "elsewhere" }, _clock).Mint("tenant-a", null, [], null);
        service.Store.Refresh();
        _clock.Advance(TimeSpan.FromMinutes(2));

        Assert.Equal(1, Macs(() => Assert.True(service.Verify("tenant-a", good.Token).Valid)));
        Assert.Equal(1, Macs(() => Assert.Equal("bad signature", service.Verify("tenant-a", good.Token[..^4] + "AAAA").Reason)));
        Assert.Equal(0, Macs(() => Assert.Equal("malformed token", service.Verify("tenant-a", "sgw1.garbage").Reason)));
        Assert.Equal(0, Macs(() => Assert.Equal("unknown tenant", service.Verify("nobody", good.Token).Reason)));
        Assert.Equal(0, Macs(() => Assert.Equal("expired", service.Verify("tenant-a", expiring.Token).Reason)));
        Assert.Equal(0, Macs(() => Assert.Equal("revoked", service.Verify("tenant-a", revoked.Token).Reason)));
        Assert.Equal(0, Macs(() => Assert.Equal("wrong audience", service.Verify("tenant-a", foreign.Token).Reason)));
        // Unverified claims: attributed only to a token the registry minted for this tenant, never to an invented id.
        Assert.Equal(expiring.Record.Id, service.Verify("tenant-a", expiring.Token).Payload?.Id);
        var invented = LegacyToken("tenant-a", good.Record.KeyId, Convert.ToBase64String(new byte[32]), -TimeSpan.FromMinutes(1));
        Assert.Equal(0, Macs(() => Assert.Equal(("expired", (TokenPayload?)null), (service.Verify("tenant-a", invented).Reason, service.Verify("tenant-a", invented).Payload))));

        // The whole AUTH (authenticator + audit) is still one MAC; the per-MAIL FROM recheck is none.
        var audit = new RecordingAudit();
        var auth = new TokenAuthenticator(service, audit);
        var request = new AuthRequest("s1", IPAddress.Loopback, "submission", "PLAIN", "", "tenant-a", good.Token);
        var before = _hsm.MacCalls;
        var result = await auth.AuthenticateAsync(request, CancellationToken.None);
        Assert.Equal(1, _hsm.MacCalls - before);
        Assert.True(result.Succeeded);
        Assert.Equal(0, Macs(() => Assert.True(service.StillValid(result.Session!.Token!).Valid)));
    }

    [Fact]
    public async Task An_unreachable_token_at_auth_is_a_temporary_failure_audited_as_an_error()
    {
        var service = NewService();
        var good = service.Mint("tenant-a", null, [], null);
        var audit = new RecordingAudit();
        var auth = new TokenAuthenticator(service, audit);
        _hsm.Unavailable = true;

        Assert.Throws<HsmException>(() => service.Verify("tenant-a", good.Token));
        var result = await auth.AuthenticateAsync(new AuthRequest("s1", IPAddress.Loopback, "submission", "PLAIN", "", "tenant-a", good.Token), CancellationToken.None);

        Assert.False(result.Succeeded);
        Assert.True(result.Temporary);
        var e = Assert.Single(audit.Events);
        Assert.Equal(("auth", "error", "tenant-a"), (e.Action, e.Result, e.Tenant));
        Assert.Contains("TokenUnavailable", e.Reason, StringComparison.Ordinal);
        Assert.DoesNotContain(good.Token.Split('.')[2], e.Reason, StringComparison.Ordinal);

        // A garbage token is still a plain refusal: the outage is not a way to tell good tokens from bad.
        var garbage = await auth.AuthenticateAsync(new AuthRequest("s1", IPAddress.Loopback, "submission", "PLAIN", "", "tenant-a", "sgw1.x.y"), CancellationToken.None);
        Assert.False(garbage.Temporary);
    }
}
