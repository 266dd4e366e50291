using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Envelope;
using SmtpGateway.Hsm;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Envelope;

/// <summary>
/// Issue #11: return-path keys live in the tenant's HSM token. Legacy plaintext key files are migrated (imported,
/// rewritten without key material, old bytes shredded) and tags made before the migration keep verifying; retired keys
/// are destroyed in the token; an unreachable token is an error, never a "forged" verdict; HSM calls per return path.
/// </summary>
public sealed class VerpKeyMigrationTests : IDisposable
{
    const string Bounce = "bounces.tenant-a.example";
    const string QueueId = "018F6B2C3D4E0000001A";

    readonly TempDirectory _dir = new();
    readonly FakeTimeProvider _time = new(new DateTimeOffset(2030, 1, 1, 12, 0, 0, TimeSpan.Zero));
    readonly InMemoryTenantKeys _hsm = new();

    public void Dispose() => _dir.Dispose();

    string KeyFile(string tenant) => Path.Combine(_dir.Path, "verp", tenant + ".json");

    VerpKeyStore NewStore(Microsoft.Extensions.Logging.ILogger? logger = null) => new(_dir.Path, _time, _hsm, logger);

    static string Local(string address) => address[..address.LastIndexOf('@')];

    /// <summary>A key file as the gateway wrote it before issue #11: the key in plaintext base64.</summary>
    internal static void WriteLegacyFile(string path, params (char Id, string Secret, DateTimeOffset Created)[] keys)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var entries = keys.Select(k => $$"""{"id":"{{k.Id}}","secret":"{{k.Secret}}","created":"{{k.Created:O}}"}""");
        File.WriteAllText(path, $$"""{"keys":[{{string.Join(',', entries)}}]}""");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    /// <summary>The tag the pre-#11 code made with a plaintext key (HMAC-SHA256 in process), for "made before the migration".</summary>
    /// <summary>A version 1 tag: the MAC under the tenant key itself (what versions before issue 15's minute keys made).</summary>
    static string LegacyLocal(string secret, string tenant, char keyId, string queueId, string recipient) =>
        Tag(secret, tenant, keyId, queueId, recipient, minuteKey: false);

    /// <summary>A version 2 tag, computed from the specification: the MAC under HMAC(tenant key, "smtpgw-verp2-minute", tenant, minute).</summary>
    static string MinuteLocal(string secret, string tenant, char keyId, string queueId, string recipient) =>
        Tag(secret, tenant, keyId, queueId, recipient, minuteKey: true);

    static string Tag(string secret, string tenant, char keyId, string queueId, string recipient, bool minuteKey)
    {
        var key = Convert.FromBase64String(secret);
        var hash = Convert.ToHexStringLower(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes("smtpgw-verp1-rcpt\0" + ReturnPath.NormalizeRecipient(recipient)))[..4]);
        var id = queueId.ToLowerInvariant();
        var minute = Convert.ToInt64(id[..12], 16) / 60_000;
        var mac = minuteKey
            ? HMACSHA256.HashData(
                HMACSHA256.HashData(key, Encoding.UTF8.GetBytes($"smtpgw-verp2-minute\0{tenant}\0{minute}")),
                Encoding.UTF8.GetBytes($"smtpgw-verp2\0{tenant}\0{id}\0{hash}"))[..10]
            : HMACSHA256.HashData(key, Encoding.UTF8.GetBytes($"smtpgw-verp1\0{tenant}\0{id}\0{hash}"))[..10];
        var base32 = new StringBuilder();
        for (var bit = 0; bit < mac.Length * 8; bit += 5)
        {
            var value = 0;
            for (var i = 0; i < 5; i++)
            {
                value = (value << 1) | ((mac[(bit + i) / 8] >> (7 - ((bit + i) % 8))) & 1);
            }

            base32.Append("abcdefghijklmnopqrstuvwxyz234567"[value]);
        }

        return $"b+{id}.{hash}.{keyId}{base32}";
    }

    static int MinutesHeld(ReturnPath rp) => rp.MinuteKeysHeld;

    static string NewSecret() => Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    [Fact]
    public void Legacy_keys_are_imported_the_file_rewritten_and_shredded_and_old_tags_still_verify()
    {
        var (secretA, secretB) = (NewSecret(), NewSecret());
        var createdA = _time.GetUtcNow() - TimeSpan.FromDays(3);
        var createdB = _time.GetUtcNow() - TimeSpan.FromDays(1);
        WriteLegacyFile(KeyFile("tenant-a"), ('a', secretA, createdA), ('b', secretB, createdB));
        var leftover = KeyFile("tenant-a") + "." + Guid.NewGuid().ToString("N") + ".tmp"; // a crashed pre-#11 write
        File.WriteAllText(leftover, File.ReadAllText(KeyFile("tenant-a")));
        var witness = KeyFileAssertions.HardLink(KeyFile("tenant-a"));
        var oldA = LegacyLocal(secretA, "tenant-a", 'a', QueueId, "u@example.net");
        var oldB = LegacyLocal(secretB, "tenant-a", 'b', QueueId, "u@example.net");
        var log = new CapturingLogger();

        var store = NewStore(log);
        store.MigrateLegacyKeys();

        KeyFileAssertions.HoldsNoKeyMaterial(KeyFile("tenant-a"));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(KeyFile("tenant-a")));
        KeyFileAssertions.IsZeros(witness); // the replaced file's own bytes, not just its name
        Assert.False(File.Exists(leftover));
        Assert.Contains("migrated 2 return-path keys of tenant tenant-a into its HSM token; plaintext file shredded", log.Lines.Single());
        Assert.True(_hsm.HasKey("tenant-a", VerpKeyStore.LabelFor('a', createdA)));
        Assert.True(_hsm.HasKey("tenant-a", $"smtpgw-verp-b{createdB.ToUnixTimeSeconds()}"));

        // Tags made before the migration verify; the newest key makes today's tag (version 2), exactly as specified, so
        // any later version can recognise it too.
        var rp = new ReturnPath(store);
        Assert.NotNull(rp.Verify("tenant-a", oldA));
        Assert.NotNull(rp.Verify("tenant-a", oldB));
        var made = Local(rp.For("tenant-a", Bounce, QueueId, "u@example.net"));
        Assert.Equal(MinuteLocal(secretB, "tenant-a", 'b', QueueId, "u@example.net"), made);
        Assert.NotEqual(oldB, made);
        Assert.NotNull(new ReturnPath(store).Verify("tenant-a", made));

        // Nothing left to do a second time: no new log line.
        NewStore(log).MigrateLegacyKeys();
        Assert.Single(log.Lines);
    }

    [Fact]
    public void A_legacy_file_is_migrated_on_first_use_as_well()
    {
        var secret = NewSecret();
        WriteLegacyFile(KeyFile("tenant-a"), ('a', secret, _time.GetUtcNow()));
        var old = LegacyLocal(secret, "tenant-a", 'a', QueueId, "u@example.net");

        Assert.NotNull(new ReturnPath(NewStore()).Verify("tenant-a", old));

        KeyFileAssertions.HoldsNoKeyMaterial(KeyFile("tenant-a"));
    }

    [Fact]
    public void An_interrupted_migration_finishes_but_a_label_holding_another_key_is_never_overwritten()
    {
        var created = _time.GetUtcNow();
        var label = VerpKeyStore.LabelFor('a', created);
        var secret = NewSecret();
        WriteLegacyFile(KeyFile("tenant-a"), ('a', secret, created));
        _hsm.ImportMacKey("tenant-a", label, Convert.FromBase64String(secret)); // imported, then the process died
        WriteLegacyFile(KeyFile("tenant-b"), ('a', NewSecret(), created));
        _hsm.ImportMacKey("tenant-b", label, RandomNumberGenerator.GetBytes(32)); // someone else's key under that label
        var log = new CapturingLogger();

        NewStore(log).MigrateLegacyKeys();

        KeyFileAssertions.HoldsNoKeyMaterial(KeyFile("tenant-a"));
        Assert.Contains("\"secret\"", File.ReadAllText(KeyFile("tenant-b")), StringComparison.Ordinal); // left as it was
        Assert.Contains(log.Lines, l => l.Contains("tenant-b", StringComparison.Ordinal) && l.Contains("already holds a different key", StringComparison.Ordinal));
        Assert.Throws<HsmException>(() => new ReturnPath(NewStore()).For("tenant-b", Bounce, QueueId, "u@example.net"));
    }

    [Fact]
    public void Keys_past_their_grace_period_are_destroyed_in_the_token_and_dropped_from_the_file()
    {
        var store = NewStore();
        var rp = new ReturnPath(store);
        var old = Local(rp.For("tenant-a", Bounce, QueueId, "u@example.net"));
        var first = store.Current("tenant-a");
        _time.Advance(TimeSpan.FromMinutes(5));

        var second = store.Rotate("tenant-a", TimeSpan.FromDays(7));
        _time.Advance(TimeSpan.FromDays(7) - TimeSpan.FromSeconds(1));
        Assert.NotNull(rp.Verify("tenant-a", old));
        Assert.True(_hsm.HasKey("tenant-a", first.KeyLabel));

        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Null(rp.Verify("tenant-a", old));
        Assert.False(_hsm.HasKey("tenant-a", first.KeyLabel));
        Assert.True(_hsm.HasKey("tenant-a", second.KeyLabel));
        Assert.Equal([second.Id], NewStore().Current("tenant-a") is { } current ? [current.Id] : Array.Empty<char>());
        Assert.DoesNotContain("\"a\"", File.ReadAllText(KeyFile("tenant-a")), StringComparison.Ordinal);
        KeyFileAssertions.HoldsNoKeyMaterial(KeyFile("tenant-a"));

        // A rotation destroys what is retired by then, too (the key it retires goes at the next read); the freed id is
        // reused under a new label.
        var third = store.Rotate("tenant-a", TimeSpan.Zero);
        var fourth = store.Rotate("tenant-a", TimeSpan.Zero);
        Assert.False(_hsm.HasKey("tenant-a", second.KeyLabel));
        Assert.Equal(fourth, store.Current("tenant-a"));
        Assert.False(_hsm.HasKey("tenant-a", third.KeyLabel));
        Assert.True(_hsm.HasKey("tenant-a", fourth.KeyLabel));
        Assert.Equal(first.Id, third.Id);
        Assert.NotEqual(first.KeyLabel, third.KeyLabel);
    }

    [Fact]
    public void An_unreachable_token_is_an_error_never_a_forged_or_untagged_verdict()
    {
        var made = Local(new ReturnPath(NewStore()).For("tenant-a", Bounce, QueueId, "u@example.net"));
        var restarted = new ReturnPath(NewStore()); // nothing remembered: every check needs the token
        _hsm.Unavailable = true;

        Assert.Throws<HsmException>(() => restarted.Verify("tenant-a", made));
        Assert.Throws<HsmException>(() => restarted.For("tenant-a", Bounce, QueueId, "v@example.net"));
        Assert.Null(restarted.Verify("tenant-a", "b+garbage")); // cheap refusals need no token

        _hsm.Unavailable = false;
        Assert.NotNull(restarted.Verify("tenant-a", made));
    }

    [Fact]
    public void A_return_path_costs_an_hsm_mac_per_new_recipient_and_minute_and_none_when_made_or_checked_again()
    {
        var store = NewStore();
        store.Current("tenant-a");
        var rp = new ReturnPath(store);
        int Macs(Action action)
        {
            var before = _hsm.MacCalls;
            action();
            return _hsm.MacCalls - before;
        }

        // Queue ids as the spool makes them now: 12 hex digits of Unix milliseconds, then a sequence.
        string IdAt(TimeSpan offset, int sequence) =>
            $"{(_time.GetUtcNow() + offset).ToUnixTimeMilliseconds():X12}{sequence:X8}";

        var address = "";
        var now = IdAt(TimeSpan.Zero, 1);
        Assert.Equal(2, Macs(() => address = rp.For("tenant-a", Bounce, now, "u@example.net"))); // fingerprint, minute key
        Assert.Equal(0, Macs(() => rp.For("tenant-a", Bounce, now, "U@Example.NET"))); // a retry of the same message
        Assert.Equal(0, Macs(() => rp.For("tenant-a", Bounce, IdAt(TimeSpan.Zero, 2), "u@example.net"))); // known recipient
        Assert.Equal(1, Macs(() => rp.For("tenant-a", Bounce, IdAt(TimeSpan.Zero, 3), "w@example.net"))); // new recipient
        Assert.Equal(1, MinutesHeld(rp));

        // The next minute: one MAC for its key, then none; the keys of the minute before and after stay, no others.
        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(1, Macs(() => rp.For("tenant-a", Bounce, IdAt(TimeSpan.Zero, 4), "u@example.net")));
        Assert.Equal(0, Macs(() => rp.For("tenant-a", Bounce, IdAt(TimeSpan.Zero, 5), "u@example.net")));
        Assert.Equal(2, MinutesHeld(rp));
        _time.Advance(TimeSpan.FromMinutes(2));
        Assert.Equal(1, Macs(() => rp.For("tenant-a", Bounce, IdAt(TimeSpan.Zero, 6), "u@example.net")));
        Assert.Equal(1, MinutesHeld(rp));

        // An older message (a retry days later) gets its minute's key made and dropped: each one costs a MAC.
        Assert.Equal(1, Macs(() => rp.For("tenant-a", Bounce, IdAt(TimeSpan.FromDays(-2), 7), "u@example.net")));
        Assert.Equal(1, Macs(() => rp.For("tenant-a", Bounce, IdAt(TimeSpan.FromDays(-2), 8), "u@example.net")));
        Assert.Equal(1, MinutesHeld(rp));
        Assert.Equal(0, Macs(() => rp.Verify("tenant-a", Local(address))));

        var other = new ReturnPath(store);
        Assert.Equal(1, Macs(() => Assert.NotNull(other.Verify("tenant-a", Local(address)))));
        Assert.Equal(0, Macs(() => other.Verify("tenant-a", Local(address))));
        var tag = other.Verify("tenant-a", Local(address))!;
        Assert.Equal(1, Macs(() => Assert.True(other.IsRecipient(tag, "u@example.net"))));
        Assert.Equal(0, Macs(() => Assert.True(other.IsRecipient(tag, "u@example.net"))));
        Assert.Equal(0, Macs(() => Assert.Null(other.Verify("tenant-a", "b+018f6b2c3d4e0000001a.1234abcd.zaaaaaaaaaaaaaaaa")))); // unknown key id
    }
}
