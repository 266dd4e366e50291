using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Envelope;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Envelope;

/// <summary>Issue #7 VERP return paths: shape, verification, tenant binding, key files and rotation.</summary>
public sealed partial class ReturnPathTests : IDisposable
{
    const string Bounce = "bounces.tenant-a.example";

    /// <summary>A queue id as FileSpool writes it: 12 + 8 upper-case hex digits.</summary>
    const string QueueId = "018F6B2C3D4E0000001A";

    const string Base32Alphabet = "abcdefghijklmnopqrstuvwxyz234567";

    readonly TempDirectory _dir = new();
    readonly FakeTimeProvider _time = new(new DateTimeOffset(2030, 1, 1, 12, 0, 0, TimeSpan.Zero));

    /// <summary>The tenants' tokens of the deployment under _dir; another data directory gets tokens of its own.</summary>
    readonly InMemoryTenantKeys _hsm = new();

    public void Dispose() => _dir.Dispose();

    VerpKeyStore NewStore(string? dataDirectory = null, TimeSpan? refresh = null) =>
        new(dataDirectory ?? _dir.Path, _time, dataDirectory is null ? _hsm : new InMemoryTenantKeys()) { RefreshInterval = refresh ?? TimeSpan.FromSeconds(1) };

    string KeyFile(string tenant, string? dataDirectory = null) => Path.Combine(dataDirectory ?? _dir.Path, "verp", tenant + ".json");

    static string Local(string address) => address[..address.LastIndexOf('@')];

    [GeneratedRegex(@"^b\+(?<id>[0-9a-f]{20})\.(?<hash>[0-9a-f]{8})\.(?<key>[a-z0-9])(?<mac>[a-z2-7]{16})@bounces\.tenant-a\.example\z", RegexOptions.CultureInvariant)]
    private static partial Regex LowerCaseShape();

    [Fact]
    public void For_makes_a_lower_case_tag_with_queue_id_hash_key_and_mac_under_64_octets()
    {
        var rp = new ReturnPath(NewStore());

        var address = rp.For("tenant-a", Bounce, QueueId, "u@example.net");

        var match = LowerCaseShape().Match(address);
        Assert.True(match.Success, address);
        Assert.Equal(QueueId.ToLowerInvariant(), match.Groups["id"].Value);
        Assert.Equal("a", match.Groups["key"].Value); // the first key of a tenant
        Assert.True(rp.IsRecipient(rp.Verify("tenant-a", Local(address))!, "u@example.net"));
        Assert.True(Encoding.ASCII.GetByteCount(Local(address)) <= 64, $"local part of {address} is over RFC 5321's 64 octets");

        // Deterministic for the same inputs (the MAC has no randomness), different per recipient and per message.
        Assert.Equal(address, rp.For("tenant-a", Bounce, QueueId, "u@example.net"));
        Assert.NotEqual(address, rp.For("tenant-a", Bounce, QueueId, "v@example.net"));
        Assert.NotEqual(address, rp.For("tenant-a", Bounce, "018F6B2C3D4E0000001B", "u@example.net"));
    }

    [Fact]
    public void Verify_accepts_the_tag_also_upper_cased_and_returns_the_spool_queue_id_and_hash()
    {
        var rp = new ReturnPath(NewStore());
        var local = Local(rp.For("tenant-a", Bounce, QueueId, "u@example.net"));

        var tag = rp.Verify("tenant-a", local);
        var upper = rp.Verify("tenant-a", local.ToUpperInvariant());

        Assert.NotNull(tag);
        Assert.Equal(("tenant-a", QueueId, 'a'), (tag.Tenant, tag.QueueId, tag.KeyId));
        Assert.Equal(local.Split('.')[1], tag.RecipientHash);
        Assert.Equal(tag, upper);
    }

    [Theory]
    [InlineData("u@example.net", "u@example.net", true)]
    [InlineData("u@example.net", "U@EXAMPLE.NET", true)]
    [InlineData("u@example.net", "<u@Example.Net>", true)]
    [InlineData("u@example.net", " u@example.net ", true)]
    [InlineData("u@bücher.example", "u@xn--bcher-kva.example", true)]
    [InlineData("u@xn--bcher-kva.example", "U@BÜCHER.example", true)]
    [InlineData("u@example.net", "v@example.net", false)]
    [InlineData("u@example.net", "u@example.org", false)]
    [InlineData("u@example.net", "u@example.net.evil.example", false)]
    [InlineData("u@example.net", "uu@example.net", false)]
    [InlineData("u@bücher.example", "u@bucher.example", false)]
    public void IsRecipient_matches_the_recipient_case_insensitively_and_nothing_else(string recipient, string candidate, bool expected)
    {
        var rp = new ReturnPath(NewStore());
        var tag = rp.Verify("tenant-a", Local(rp.For("tenant-a", Bounce, QueueId, recipient)));

        Assert.NotNull(tag);
        Assert.Equal(expected, rp.IsRecipient(tag, candidate));
    }

    [Fact]
    public void The_recipient_fingerprint_is_keyed_per_tenant_so_it_cannot_be_matched_offline()
    {
        // The same recipient and queue id under two tenants (two keys) gets two unrelated fingerprints: without the key,
        // nobody can search for an address of their own whose fingerprint equals a victim's.
        var rp = new ReturnPath(NewStore());
        var a = Local(rp.For("tenant-a", Bounce, QueueId, "ceo@bigcorp.example")).Split('.')[1];
        var b = Local(rp.For("tenant-b", "bounces.tenant-b.example", QueueId, "ceo@bigcorp.example")).Split('.')[1];
        Assert.NotEqual(a, b);
        Assert.NotEqual(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes("ceo@bigcorp.example")))[..8], a);
    }

    [Fact]
    public void Concurrent_rotations_by_separate_processes_lose_no_key()
    {
        // Each store stands for another process (the CLI run twice at once, the gateway making a first key): the key file's
        // read-modify-write is under a cross-process lock, so every rotation's key survives. Rounds of four rotations
        // released together by a barrier, on fresh tenants, make the race likely if the lock were missing.
        for (var round = 0; round < 25; round++)
        {
            var tenant = $"tenant-{round}";
            NewStore().Current(tenant);
            using var barrier = new Barrier(4);
            var made = new char[4];
            var threads = Enumerable.Range(0, 4).Select(i => new Thread(() =>
            {
                var store = NewStore();
                barrier.SignalAndWait();
                made[i] = store.Rotate(tenant, TimeSpan.FromDays(1)).Id;
            })).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());

            var file = System.Text.Json.JsonDocument.Parse(File.ReadAllText(KeyFile(tenant)));
            var ids = file.RootElement.GetProperty("keys").EnumerateArray().Select(k => k.GetProperty("id").GetString()![0]).ToList();
            Assert.True(ids.Count == 5, $"round {round}: {ids.Count} keys after four rotations ({string.Join(",", ids)}; made {string.Join(",", made)})");
            Assert.All(made, id => Assert.Contains(id, ids));
        }
    }

    [Fact]
    public void Every_single_flipped_character_of_the_tag_is_refused()
    {
        var rp = new ReturnPath(NewStore());
        var local = Local(rp.For("tenant-a", Bounce, QueueId, "u@example.net"));
        var macStart = local.Length - 16;

        for (var i = 2; i < local.Length; i++)
        {
            if (local[i] == '.')
            {
                continue;
            }

            // A different character of the same alphabet, so the shape stays valid and only the MAC check can refuse it.
            var alphabet = i >= macStart ? Base32Alphabet : i == macStart - 1 ? "abcdefghijklmnopqrstuvwxyz0123456789" : "0123456789abcdef";
            var replacement = alphabet[(alphabet.IndexOf(local[i], StringComparison.Ordinal) + 1) % alphabet.Length];
            var forged = string.Concat(local.AsSpan(0, i), replacement.ToString(), local.AsSpan(i + 1));
            Assert.Null(rp.Verify("tenant-a", forged));
        }
    }

    [Fact]
    public void A_tag_from_minutes_ahead_of_the_clock_is_refused_without_an_hsm_call()
    {
        var rp = new ReturnPath(NewStore());
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var genuine = Local(rp.For("tenant-a", Bounce, $"{now:X12}00000001", "u@example.net"));
        var hash = genuine.Split('.')[1];
        var before = _hsm.MacCalls;

        Assert.Null(rp.Verify("tenant-a", $"b+{now + (6 * 60_000):x12}00000002.{hash}.aaaaaaaaaaaaaaaaa"));
        Assert.Equal(before, _hsm.MacCalls);

        // A few minutes ahead (another member's clock) is still checked.
        Assert.Null(rp.Verify("tenant-a", $"b+{now + (4 * 60_000):x12}00000003.{hash}.aaaaaaaaaaaaaaaaa"));
        Assert.Equal(before + 2, _hsm.MacCalls);
        Assert.NotNull(rp.Verify("tenant-a", genuine));
    }

    [Fact]
    public void Forged_tags_naming_many_minutes_are_refused_at_a_bounded_cost_and_leave_genuine_ones_valid()
    {
        var rp = new ReturnPath(NewStore());
        var genuine = Local(rp.For("tenant-a", Bounce, QueueId, "u@example.net"));
        var hash = genuine.Split('.')[1];

        // Each forged tag names another minute: its minute key is made (one HSM MAC), then the version 1 MAC (one more).
        const int Forgeries = 3_000;
        var before = _hsm.MacCalls;
        for (var i = 0; i < Forgeries; i++)
        {
            var id = $"{0x018F6B2C3D4EL + ((i + 1) * 60_000L):x12}{i:x8}";
            Assert.Null(rp.Verify("tenant-a", $"b+{id}.{hash}.aaaaaaaaaaaaaaaaa"));
        }

        Assert.Equal(2 * Forgeries, _hsm.MacCalls - before);
        Assert.NotNull(rp.Verify("tenant-a", genuine));
        Assert.NotNull(new ReturnPath(NewStore()).Verify("tenant-a", genuine));
    }

    [Fact]
    public void Another_tenants_name_with_the_same_tag_is_refused_even_with_the_same_key()
    {
        // The tenant is bound in the MAC input, not only by key choice: tenant-c's token given tenant-a's very key
        // material (both imported from legacy files with the same secret) still refuses tenant-a's tags.
        var secret = Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));
        VerpKeyMigrationTests.WriteLegacyFile(KeyFile("tenant-a"), ('a', secret, _time.GetUtcNow()));
        VerpKeyMigrationTests.WriteLegacyFile(KeyFile("tenant-c"), ('a', secret, _time.GetUtcNow()));
        var store = NewStore();
        var rp = new ReturnPath(store);
        var local = Local(rp.For("tenant-a", Bounce, QueueId, "u@example.net"));

        Assert.Null(rp.Verify("tenant-b", local)); // tenant-b's own (new) key
        Assert.Equal(store.Current("tenant-a").KeyLabel, store.Current("tenant-c").KeyLabel);
        Assert.Null(rp.Verify("tenant-c", local));
        Assert.NotNull(rp.Verify("tenant-a", local));
    }

    [Fact]
    public void A_tag_made_with_another_key_store_file_is_refused()
    {
        using var other = new TempDirectory();
        var mine = new ReturnPath(NewStore());
        var theirs = new ReturnPath(NewStore(other.Path));

        var local = Local(theirs.For("tenant-a", Bounce, QueueId, "u@example.net"));

        Assert.Null(mine.Verify("tenant-a", local));
        Assert.NotNull(theirs.Verify("tenant-a", local));
    }

    [Fact]
    public void Unknown_key_id_is_refused()
    {
        var rp = new ReturnPath(NewStore());
        var local = Local(rp.For("tenant-a", Bounce, QueueId, "u@example.net"));
        var keyAt = local.Length - 17;
        Assert.Equal('a', local[keyAt]);

        foreach (var id in "bz9")
        {
            Assert.Null(rp.Verify("tenant-a", string.Concat(local.AsSpan(0, keyAt), id.ToString(), local.AsSpan(keyAt + 1))));
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("b+")]
    [InlineData("b+garbage")]
    [InlineData("postmaster")]
    [InlineData("b+018f6b2c3d4e0000001a")]
    [InlineData("b+018f6b2c3d4e0000001a.1234abcd.a")]
    [InlineData("b+018f6b2c3d4e0000001a.1234abcd.aaaaaaaaaaaaaaaaa")] // MAC one character too long
    [InlineData("b+018f6b2c3d4e0000001a.1234abcd.aaaaaaaaaaaaaaa")] // one too short
    [InlineData("b+018f6b2c3d4e0000001a.1234abcd.aaaaaaaaaaaaaaa1")] // '1' is not base32
    [InlineData("\"b+x\"")]
    public void Garbage_is_refused(string local)
    {
        var rp = new ReturnPath(NewStore());
        Assert.Null(rp.Verify("tenant-a", local));
    }

    [Fact]
    public void Overlong_local_parts_are_refused_without_matching()
    {
        var rp = new ReturnPath(NewStore());
        var local = Local(rp.For("tenant-a", Bounce, QueueId, "u@example.net"));

        Assert.Null(rp.Verify("tenant-a", local + new string('a', 64)));
        Assert.Null(rp.Verify("tenant-a", new string('x', 100_000) + local));
        Assert.Null(rp.Verify("tenant-a", local + "." + local));
    }

    [Theory]
    [InlineData("\n")]
    [InlineData("\r\n")]
    [InlineData(" ")]
    [InlineData("\0")]
    public void A_valid_tag_with_trailing_bytes_is_refused(string suffix)
    {
        var rp = new ReturnPath(NewStore());
        var local = Local(rp.For("tenant-a", Bounce, QueueId, "u@example.net"));

        Assert.True(rp.Verify("tenant-a", local + suffix) is null,
            $"Verify accepted the tag followed by {Uri.EscapeDataString(suffix)}: the tag regex ends in '$', which .NET also matches before a final newline (use \\z)");
    }

    [Fact]
    public void Key_file_is_created_on_first_use_with_mode_0600()
    {
        var rp = new ReturnPath(NewStore());
        Assert.False(File.Exists(KeyFile("tenant-a")));

        rp.For("tenant-a", Bounce, QueueId, "u@example.net");

        Assert.True(File.Exists(KeyFile("tenant-a")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(KeyFile("tenant-a")));
        Assert.False(File.Exists(KeyFile("tenant-b"))); // only the tenant that was used
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(KeyFile("tenant-a"))!, "*.tmp"));
    }

    [Fact]
    public void Tenants_get_their_own_keys_in_their_own_tokens()
    {
        var store = NewStore();
        var a = store.Current("tenant-a");
        store.Current("tenant-b");

        Assert.True(_hsm.HasKey("tenant-a", a.KeyLabel));
        Assert.True(_hsm.HasKey("tenant-b", a.KeyLabel)); // the same label, but in tenant-b's own token: another key
        Assert.NotEqual(store.Mac("tenant-a", a, "x"u8), store.Mac("tenant-b", a, "x"u8));
        Assert.Equal(a, NewStore().Current("tenant-a")); // persisted: a restart keeps verifying old tags
    }

    [Fact]
    public void After_rotation_new_tags_use_the_new_key_and_old_tags_verify_until_the_grace_period_ends()
    {
        var store = NewStore();
        var rp = new ReturnPath(store);
        var old = Local(rp.For("tenant-a", Bounce, QueueId, "u@example.net"));
        _time.Advance(TimeSpan.FromMinutes(5));

        var rotated = store.Rotate("tenant-a", TimeSpan.FromDays(7));

        Assert.Equal('b', rotated.Id);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(KeyFile("tenant-a")));
        var fresh = Local(rp.For("tenant-a", Bounce, QueueId, "u@example.net"));
        Assert.Equal('b', fresh[^17]);
        Assert.NotEqual(old, fresh);
        Assert.NotNull(rp.Verify("tenant-a", old));
        Assert.NotNull(rp.Verify("tenant-a", fresh));

        _time.Advance(TimeSpan.FromDays(7) - TimeSpan.FromSeconds(1));
        Assert.NotNull(rp.Verify("tenant-a", old));

        _time.Advance(TimeSpan.FromSeconds(2));
        Assert.Null(rp.Verify("tenant-a", old));
        Assert.NotNull(rp.Verify("tenant-a", fresh));
        Assert.Equal('b', store.Current("tenant-a").Id);
    }

    [Fact]
    public void Rotation_by_a_second_instance_reaches_the_first_within_its_refresh_interval()
    {
        var refresh = TimeSpan.FromMilliseconds(100);
        var gateway = new ReturnPath(NewStore(refresh: refresh));
        var old = Local(gateway.For("tenant-a", Bounce, QueueId, "u@example.net"));
        _time.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(old[^17], Local(gateway.For("tenant-a", Bounce, QueueId, "u@example.net"))[^17]); // re-checked now: unchanged

        // The CLI: its own instance over the same data directory; grace zero retires the old key at once.
        var cli = NewStore();
        var rotated = cli.Rotate("tenant-a", TimeSpan.Zero);
        var cliTag = Local(new ReturnPath(cli).For("tenant-a", Bounce, QueueId, "u@example.net"));
        Assert.NotEqual(old[^17], rotated.Id);

        // Not before the refresh interval: the gateway still makes tags with the key it has cached.
        _time.Advance(refresh - TimeSpan.FromMilliseconds(1));
        Assert.Equal(old[^17], Local(gateway.For("tenant-a", Bounce, QueueId, "u@example.net"))[^17]);

        // At the interval it looks at the file again and picks up the rotation.
        _time.Advance(TimeSpan.FromMilliseconds(1));
        var current = Local(gateway.For("tenant-a", Bounce, QueueId, "u@example.net"));
        Assert.Equal(rotated.Id, current[^17]);
        Assert.Equal(cliTag, current);
        Assert.NotNull(gateway.Verify("tenant-a", cliTag));
        Assert.Null(gateway.Verify("tenant-a", old)); // retired with no grace
    }

    [Fact]
    public void A_legacy_key_is_read_without_its_material_and_its_secret_only_as_bytes()
    {
        // The record only learns that a legacy key has a secret; the value is read as bytes for migration, never a string.
        const string Secret = "c2VjcmV0LWtleS1tYXRlcmlhbC0zMi1ieXRlcyEhIQ==";
        var path = Path.Combine(Path.GetTempPath(), $"verp-legacy-{Guid.NewGuid():N}.json");
        // One secret JSON-escaped as some writers do ('+' as \u002B), one plain, one key without a secret.
        File.WriteAllText(path, $$"""{"keys":[{"id":"a","created":"2026-01-01T00:00:00+00:00","secret":"{{Secret}}"},{"id":"b","created":"2026-01-02T00:00:00+00:00"},{"id":"c","created":"2026-01-03T00:00:00+00:00","secret":"AAEC\u002B/8="}]}""");
        try
        {
            var file = System.Text.Json.JsonSerializer.Deserialize(File.ReadAllBytes(path), VerpJsonContext.Default.VerpKeyFile)!;
            Assert.NotNull(file.Keys[0].LegacySecret);
            Assert.Null(file.Keys[1].LegacySecret);
            var key = file.Keys[0];
            var texts = new[] { key.ToString(), $"{key}", string.Format(System.Globalization.CultureInfo.InvariantCulture, "{0}", key), file.ToString() };
            foreach (var text in texts)
            {
                Assert.DoesNotContain(Secret, text, StringComparison.Ordinal);
            }

            Assert.Contains("Id = a", texts[0], StringComparison.Ordinal);

            var secrets = SmtpGateway.Hsm.LegacyMacKey.ReadSecrets(path);
            Assert.Equal(3, secrets.Count);
            Assert.Equal(Convert.FromBase64String(Secret), secrets[0]);
            Assert.Null(secrets[1]);
            Assert.Equal(new byte[] { 0, 1, 2, 0xfb, 0xff }, secrets[2]);
            SmtpGateway.Hsm.LegacyMacKey.ZeroAll(secrets);
            Assert.All(secrets[0]!, b => Assert.Equal(0, b));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
