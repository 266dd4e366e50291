using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Configuration;
using SmtpGateway.Envelope;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Signing;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Listener;
using Xunit.Abstractions;

namespace SmtpGateway.Tests.Hsm;

/// <summary>
/// Issue #11 against real SoftHSM2 tokens (one per tenant): token and return-path keys made, imported (legacy migration),
/// used and destroyed in the tenant's token through <see cref="HsmTenantKeys"/>, and what that costs per AUTH and per
/// return path (HSM MAC calls and microseconds per call, written to the test output).
/// </summary>
[Collection(SoftHsmCollection.Name)]
public sealed class TenantMacKeysSoftHsmTests : IDisposable
{
    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-hsm-mackeys");
    readonly ITestOutputHelper _output;
    readonly CountingTenantKeys _keys;
    readonly TenantSnapshot _tenants = Identity.TokenKeyHsmTests.TwoTenants();

    // Each test its own point in time: VERP labels carry the creation second, and the tokens outlive a test.
    readonly FakeTimeProvider _clock = new(DateTimeOffset.UnixEpoch + TimeSpan.FromSeconds(RandomNumberGenerator.GetInt32(1_000_000_000, 2_000_000_000)));

    public TenantMacKeysSoftHsmTests(SoftHsmFixture fixture, ITestOutputHelper output)
    {
        _output = output;
        Environment.SetEnvironmentVariable("SMTPGW_TEST_PIN_TENANT_A", fixture.PinA);
        Environment.SetEnvironmentVariable("SMTPGW_TEST_PIN_TENANT_B", fixture.PinB);
        var labels = new Dictionary<string, TenantHsmModel>
        {
            ["tenant-a"] = new(SoftHsmFixture.TokenLabelA, null, "SMTPGW_TEST_PIN_TENANT_A"),
            ["tenant-b"] = new(SoftHsmFixture.TokenLabelB, null, "SMTPGW_TEST_PIN_TENANT_B"),
        };
        _keys = new CountingTenantKeys(new HsmTenantKeys(fixture.Hsm, new TenantHsmTokens(_data.FullName, t => labels.GetValueOrDefault(t))));
    }

    public void Dispose() => _data.Delete(recursive: true);

    TokenService NewTokens() => new(new TokenStore(_data.FullName, _clock, _keys), () => _tenants, new IdentityConfig { Audience = "gw-test" }, _clock);

    [Fact]
    public async Task Token_keys_live_in_the_token_migrate_from_legacy_files_and_cost_one_hmac_per_auth()
    {
        // A legacy key file and a token minted under it before the migration (HMAC in process, as the old code did).
        var keyId = "k" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
        var secret = RandomNumberGenerator.GetBytes(32);
        var path = Path.Combine(_data.FullName, "identity", "keys", "tenant-a.json");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, $$"""{"keys":[{"id":"{{keyId}}","secret":"{{Convert.ToBase64String(secret)}}","created":"{{_clock.GetUtcNow():O}}"}]}""");
        var now = _clock.GetUtcNow().ToUnixTimeSeconds();
        var body = Base64Url(JsonSerializer.SerializeToUtf8Bytes(new TokenPayload(1, "tenant-a", keyId, "tok_legacy", "gw-test", now, now + 600, []), TokenJsonContext.Default.TokenPayload));
        var legacyToken = $"sgw1.{body}.{Base64Url(HMACSHA256.HashData(secret, Encoding.ASCII.GetBytes("sgw1." + body)))}";

        var tokens = NewTokens();
        tokens.Store.MigrateLegacyKeys();
        KeyFileAssertions.HoldsNoKeyMaterial(path);
        Assert.True(_keys.HasKey("tenant-a", TokenStore.LabelFor(keyId)));
        tokens.Store.Refresh();
        Assert.True(tokens.Verify("tenant-a", legacyToken).Valid);

        // New tokens: minted and verified in the token; tenant B's token knows nothing of A's labels.
        var (rotated, _) = tokens.RotateKey("tenant-a", TimeSpan.FromMinutes(10));
        var minted = tokens.Mint("tenant-a", null, [], null);
        Assert.Equal(rotated.Id, minted.Record.KeyId);
        Assert.False(_keys.HasKey("tenant-b", rotated.KeyLabel));
        Assert.Equal(TokenService.TenantMismatch, tokens.Verify("tenant-b", minted.Token).Reason);

        // Cost: HSM MAC calls per AUTH, and microseconds per call.
        var auth = new TokenAuthenticator(tokens, new RecordingAudit());
        var request = new AuthRequest("s1", IPAddress.Loopback, "submission", "PLAIN", "", "tenant-a", minted.Token);
        const int Rounds = 300;
        var before = _keys.MacCalls;
        var watch = Stopwatch.StartNew();
        for (var i = 0; i < Rounds; i++)
        {
            Assert.True((await auth.AuthenticateAsync(request, CancellationToken.None)).Succeeded);
        }

        watch.Stop();
        Assert.Equal(Rounds, _keys.MacCalls - before);
        _output.WriteLine($"AUTH: {(double)(_keys.MacCalls - before) / Rounds:0.##} HSM MAC call(s) per AUTH; {watch.Elapsed.TotalMicroseconds / Rounds:0} us per AUTH (SoftHSM2, {Rounds} rounds); {_keys.MacMicroseconds:0} us per MAC call");

        // Retired keys are destroyed in the token once their grace is over.
        _clock.Advance(TimeSpan.FromMinutes(10));
        tokens.Store.DestroyRetiredKeys();
        Assert.False(_keys.HasKey("tenant-a", TokenStore.LabelFor(keyId)));
        Assert.False(tokens.Verify("tenant-a", legacyToken).Valid);
        Assert.True(tokens.Verify("tenant-a", minted.Token).Valid);
    }

    [Fact]
    public void Return_path_keys_live_in_the_token_migrate_from_legacy_files_and_cost_one_hmac_per_new_recipient()
    {
        var secret = RandomNumberGenerator.GetBytes(32);
        var created = _clock.GetUtcNow();
        var path = Path.Combine(_data.FullName, "verp", "tenant-b.json");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, $$"""{"keys":[{"id":"a","secret":"{{Convert.ToBase64String(secret)}}","created":"{{created:O}}"}]}""");

        // The tag the old code made with the plaintext key: the same MACs, computed in process.
        var hash = Convert.ToHexStringLower(HMACSHA256.HashData(secret, Encoding.UTF8.GetBytes("smtpgw-verp1-rcpt\0u@example.net"))[..4]);
        var store = new VerpKeyStore(_data.FullName, _clock, _keys);
        store.MigrateLegacyKeys();
        KeyFileAssertions.HoldsNoKeyMaterial(path);
        var rp = new ReturnPath(store);
        var queueId = $"{_clock.GetUtcNow().ToUnixTimeMilliseconds():X12}0000001A";
        var made = rp.For("tenant-b", "bounces.tenant-b.example", queueId, "u@example.net");
        Assert.StartsWith($"b+{queueId.ToLowerInvariant()}.{hash}.a", made, StringComparison.Ordinal);
        var local = made[..made.IndexOf('@', StringComparison.Ordinal)];
        Assert.NotNull(new ReturnPath(store).Verify("tenant-b", local));
        Assert.Null(new ReturnPath(new VerpKeyStore(_data.FullName, _clock, _keys)).Verify("tenant-a", local));

        // Cost: a return path for a new recipient is one HSM MAC (its fingerprint); the minute key of the tags (ids made
        // now, as the spool makes them) was made with the first one above; a retry of the same one is none.
        const int Rounds = 200;
        var before = _keys.MacCalls;
        var watch = Stopwatch.StartNew();
        for (var i = 0; i < Rounds; i++)
        {
            rp.For("tenant-b", "bounces.tenant-b.example", $"{_clock.GetUtcNow().ToUnixTimeMilliseconds():X12}{i:X8}", $"user{i}@example.net");
        }

        watch.Stop();
        Assert.Equal(Rounds, _keys.MacCalls - before);
        _output.WriteLine($"Return path: {(double)(_keys.MacCalls - before) / Rounds:0.##} HSM MAC calls per new return path; {watch.Elapsed.TotalMicroseconds / Rounds:0} us per return path (SoftHSM2, {Rounds} rounds); {_keys.MacMicroseconds:0} us per MAC call");
        before = _keys.MacCalls;
        rp.For("tenant-b", "bounces.tenant-b.example", $"{_clock.GetUtcNow().ToUnixTimeMilliseconds():X12}{0:X8}", "user0@example.net");
        Assert.Equal(0, _keys.MacCalls - before);

        // Rotation past the grace period destroys the imported key in the token.
        store.Rotate("tenant-b", TimeSpan.FromDays(1));
        _clock.Advance(TimeSpan.FromDays(1));
        Assert.Null(new ReturnPath(store).Verify("tenant-b", local));
        Assert.False(_keys.HasKey("tenant-b", VerpKeyStore.LabelFor('a', created)));
    }

    static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    /// <summary>Counts and times the MAC calls that reach the token.</summary>
    sealed class CountingTenantKeys(ITenantKeys inner) : ITenantKeys
    {
        long _ticks;

        public int MacCalls { get; private set; }

        public double MacMicroseconds => MacCalls == 0 ? 0 : TimeSpan.FromTicks(_ticks / MacCalls).TotalMicroseconds;

        public byte[] Mac(string tenantId, string keyLabel, ReadOnlySpan<byte> data)
        {
            var start = Stopwatch.GetTimestamp();
            var mac = inner.Mac(tenantId, keyLabel, data);
            _ticks += Stopwatch.GetElapsedTime(start).Ticks;
            MacCalls++;
            return mac;
        }

        public void CreateMacKey(string tenantId, string keyLabel) => inner.CreateMacKey(tenantId, keyLabel);

        public void ImportMacKey(string tenantId, string keyLabel, ReadOnlySpan<byte> secret) => inner.ImportMacKey(tenantId, keyLabel, secret);

        public void CreateWrappingKey(string tenantId, string keyLabel) => inner.CreateWrappingKey(tenantId, keyLabel);

        public byte[] Seal(string tenantId, string keyLabel, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> associatedData) => inner.Seal(tenantId, keyLabel, plaintext, associatedData);

        public byte[] Open(string tenantId, string keyLabel, ReadOnlySpan<byte> sealedData, ReadOnlySpan<byte> associatedData) => inner.Open(tenantId, keyLabel, sealedData, associatedData);

        public bool HasKey(string tenantId, string keyLabel) => inner.HasKey(tenantId, keyLabel);

        public bool DeleteKey(string tenantId, string keyLabel) => inner.DeleteKey(tenantId, keyLabel);
    }
}
