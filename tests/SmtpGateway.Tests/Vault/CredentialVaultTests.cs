using System.Diagnostics.Metrics;
using System.Text;
using System.Text.Json.Nodes;
using SmtpGateway.Audit;
using SmtpGateway.Diagnostics;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Vault;

namespace SmtpGateway.Tests.Vault;

public sealed class CredentialVaultTests : IDisposable
{
    const string Password = "Upstream-P4ss-7f3a9c";
    readonly VaultTestKit _kit = new();

    CredentialVault Vault => _kit.Vault;

    public void Dispose() => _kit.Dispose();

    static NewSecret PasswordSecret(string password = Password, string user = "relay@a.example") => NewSecret.Password(user, VaultTestKit.Bytes(password));

    async Task<string> OpenText(UpstreamCredentialVersion version, string? queueId = "Q1")
    {
        using var secret = await Vault.OpenAsync(version, CredentialVault.PurposeSmtpAuth, queueId, CancellationToken.None);
        return Encoding.UTF8.GetString(secret.Secret);
    }

    [Fact]
    public async Task A_password_round_trips_and_every_decryption_is_audited()
    {
        var stored = Vault.Set("tenant-a", "smarthost", PasswordSecret());

        var usable = Assert.Single(Vault.Usable("tenant-a", "smarthost"));
        Assert.Equal((1, UpstreamCredentialKind.Password, "relay@a.example", null), (usable.Version, usable.Kind, usable.UserName, usable.RetiresAt));
        Assert.Equal(stored, usable);
        Assert.Equal(Password, await OpenText(usable, "Q-42"));

        var decrypt = Assert.Single(_kit.Events(AuditActions.VaultDecrypt));
        Assert.Equal(("ok", "tenant-a", "smarthost#v1", "smtp-auth", "Q-42"), (decrypt.Result, decrypt.Tenant, decrypt.Subject, decrypt.Reason, decrypt.QueueId));
        Assert.Single(_kit.Events(AuditActions.VaultSet));
        Assert.Empty(Vault.Usable("tenant-a", "other"));
        Assert.Empty(Vault.Usable("tenant-b", "smarthost"));
    }

    [Fact]
    public async Task The_secret_buffer_is_zeroed_on_dispose()
    {
        var version = Vault.Set("tenant-a", "smarthost", PasswordSecret());
        var secret = await Vault.OpenAsync(version, CredentialVault.PurposeSmtpAuth, null, CancellationToken.None);
        // The captured primary-constructor buffer: the very array the vault decrypted into.
        var buffer = (byte[])typeof(UpstreamSecret).GetFields(System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)
            .Single(f => f.FieldType == typeof(byte[])).GetValue(secret)!;
        secret.Dispose();
        Assert.All(buffer, b => Assert.Equal(0, b));
        Assert.Throws<ObjectDisposedException>(() => secret.Secret.Length);
    }

    [Fact]
    public void Set_refuses_an_existing_name_and_rotate_refuses_a_missing_one()
    {
        Vault.Set("tenant-a", "smarthost", PasswordSecret());
        var ex = Assert.Throws<InvalidOperationException>(() => Vault.Set("tenant-a", "smarthost", PasswordSecret("other")));
        Assert.Contains("rotate", ex.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => Vault.Rotate("tenant-a", "missing", PasswordSecret()));
        Assert.Throws<ArgumentException>(() => Vault.Set("tenant-a", "bad\0name", PasswordSecret()));
        Assert.Throws<ArgumentException>(() => Vault.Set("../etc", "smarthost", PasswordSecret()));
    }

    [Fact]
    public void List_shows_versions_and_never_secrets()
    {
        Vault.Set("tenant-a", "smarthost", PasswordSecret());
        Vault.Set("tenant-a", "oauth", NewSecret.RefreshToken("me@a.example", VaultTestKit.Bytes("refresh-7c1d"), VaultTestKit.Bytes("client-sec-99"), "https://login.example/token", "client-1"));

        var listing = Vault.List("tenant-a");

        Assert.Equal(["oauth", "smarthost"], listing.Select(l => l.Version.Name));
        Assert.Equal(("refresh-token", "https://login.example/token", "client-1"), (listing[0].Grant, listing[0].TokenEndpoint, listing[0].ClientId));
        var printed = string.Join("\n", listing.Select(l => l.ToString()));
        foreach (var secret in new[] { Password, "refresh-7c1d", "client-sec-99" })
        {
            Assert.DoesNotContain(secret, printed, StringComparison.Ordinal);
        }

        // Listing decrypts nothing.
        Assert.Empty(_kit.Events(AuditActions.VaultDecrypt));
    }

    [Fact]
    public void The_file_holds_no_secret_bytes_and_is_private()
    {
        Vault.Set("tenant-a", "smarthost", PasswordSecret());
        Vault.Set("tenant-a", "token", NewSecret.AccessToken("me@a.example", VaultTestKit.Bytes("ya29.access-token-xyz")));

        var path = Vault.PathFor("tenant-a");
        var bytes = File.ReadAllBytes(path);
        foreach (var secret in new[] { Password, "ya29.access-token-xyz" })
        {
            Assert.Equal(-1, bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(secret)));
            Assert.Equal(-1, bytes.AsSpan().IndexOf(Encoding.Unicode.GetBytes(secret)));
            Assert.Equal(-1, bytes.AsSpan().IndexOf(Encoding.ASCII.GetBytes(Convert.ToBase64String(Encoding.UTF8.GetBytes(secret)))));
        }

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.GetDirectoryName(path)!));
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(path)!, "*.tmp"));
        // The data key is sealed by the KEK in the tenant's token, under the label the spec names.
        Assert.True(_kit.Keys.HasKey("tenant-a", "smtpgw-vault-kek-1"));
        Assert.Equal("smtpgw-vault-kek-1", (string?)JsonNode.Parse(bytes)!["dataKey"]!["kek"]);
    }

    [Fact]
    public async Task A_record_copied_into_another_tenants_file_is_refused_and_audited()
    {
        Vault.Set("tenant-a", "smarthost", PasswordSecret());
        var b = Vault.Set("tenant-b", "smarthost", PasswordSecret("b-password"));

        // Tenant A's record replaces tenant B's, name and version alike: B's data key with B's associated data must reject it.
        var fileA = JsonNode.Parse(File.ReadAllText(Vault.PathFor("tenant-a")))!;
        var fileB = JsonNode.Parse(File.ReadAllText(Vault.PathFor("tenant-b")))!;
        fileB["credentials"]![0]!["versions"]![0]!["ciphertext"] = (string?)fileA["credentials"]![0]!["versions"]![0]!["ciphertext"];
        File.WriteAllText(Vault.PathFor("tenant-b"), fileB.ToJsonString());

        var ex = await Assert.ThrowsAsync<UpstreamCredentialException>(() => OpenText(b));
        Assert.False(ex.Transient);
        Assert.DoesNotContain(Password, ex.ToString(), StringComparison.Ordinal);
        var refused = Assert.Single(_kit.Events(AuditActions.VaultDecrypt), e => e.Result == "refused");
        Assert.Equal(("tenant-b", "smarthost#v1", "Q1"), (refused.Tenant, refused.Subject, refused.QueueId));
    }

    [Fact]
    public async Task A_whole_file_copied_to_another_tenant_is_refused()
    {
        Vault.Set("tenant-a", "smarthost", PasswordSecret());
        Vault.Set("tenant-b", "other", PasswordSecret("b-password"));
        File.Copy(Vault.PathFor("tenant-a"), Vault.PathFor("tenant-b"), overwrite: true);
        // The gateway would believe tenant B now has "smarthost"; decrypting it must still fail (B's KEK, B's associated data).
        var version = Assert.Single(_kit.NewVault().Usable("tenant-b", "smarthost"));

        await Assert.ThrowsAsync<UpstreamCredentialException>(() => OpenText(version));

        Assert.Contains(_kit.Events(AuditActions.VaultDecrypt), e => e is { Result: "refused", Tenant: "tenant-b" });
    }

    [Fact]
    public async Task A_tampered_record_is_refused()
    {
        var version = Vault.Set("tenant-a", "smarthost", PasswordSecret());
        var file = JsonNode.Parse(File.ReadAllText(Vault.PathFor("tenant-a")))!;
        var record = file["credentials"]![0]!["versions"]![0]!;
        var sealedBytes = Convert.FromBase64String((string)record["ciphertext"]!);
        sealedBytes[14] ^= 1;
        record["ciphertext"] = Convert.ToBase64String(sealedBytes);
        File.WriteAllText(Vault.PathFor("tenant-a"), file.ToJsonString());

        var ex = await Assert.ThrowsAsync<UpstreamCredentialException>(() => OpenText(version));

        Assert.False(ex.Transient);
        Assert.Single(_kit.Events(AuditActions.VaultDecrypt), e => e.Result == "refused");
    }

    [Theory]
    [InlineData("refresh-to-attacker")]
    [InlineData("user")]
    [InlineData("unretire")]
    public async Task Editing_a_records_clear_fields_makes_it_undecryptable(string edit)
    {
        // Whoever can write the vault file (but has no PIN) must not be able to redirect a password to their own token
        // endpoint, change the account it is used for, or keep a rotated-out version alive.
        var first = Vault.Set("tenant-a", "smarthost", PasswordSecret());
        Vault.Rotate("tenant-a", "smarthost", PasswordSecret(), TimeSpan.FromMinutes(10));
        var file = JsonNode.Parse(File.ReadAllText(Vault.PathFor("tenant-a")))!;
        var record = file["credentials"]![0]!["versions"]![0]!;
        Assert.Equal(first.Version, (int)record["version"]!);
        switch (edit)
        {
            case "refresh-to-attacker":
                record["kind"] = "OAuth2";
                record["grant"] = "RefreshToken";
                record["tokenEndpoint"] = "https://attacker.example/token";
                record["clientId"] = "x";
                break;
            case "user":
                record["userName"] = "someone-else@tenant-a.example";
                break;
            default:
                record.AsObject().Remove("retiresAt");
                break;
        }

        File.WriteAllText(Vault.PathFor("tenant-a"), file.ToJsonString());
        var tampered = Vault.Usable("tenant-a", "smarthost").Single(v => v.Version == first.Version);

        await Assert.ThrowsAsync<UpstreamCredentialException>(async () => (await Vault.OpenAsync(tampered, "smtp-auth", "Q1", CancellationToken.None)).Dispose());

        Assert.Equal(0, _kit.Endpoint.Calls);
        Assert.Contains(_kit.Events(AuditActions.VaultDecrypt), e => e is { Result: "refused", QueueId: "Q1" });
    }

    [Theory]
    [InlineData("""{"credentials":[null]}""")]
    [InlineData("""{"credentials":[{"name":"x","versions":[null]}]}""")]
    [InlineData("""{"credentials":[{"name":"x","versions":[{"version":0,"kind":"Password","userName":"u","created":"2026-01-01T00:00:00Z","ciphertext":"AA=="}]}]}""")]
    public void A_damaged_file_is_refused_as_damaged_and_the_sweep_survives_it(string json)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Vault.PathFor("tenant-a"))!);
        File.WriteAllText(Vault.PathFor("tenant-a"), json);

        Assert.Throws<UpstreamCredentialException>(() => Vault.Usable("tenant-a", "x"));
        Vault.Sweep(); // logs the damaged file; must not throw (it would stop the host)
    }

    [Fact]
    public async Task An_unavailable_hsm_is_a_transient_error_not_a_refusal()
    {
        var version = Vault.Set("tenant-a", "smarthost", PasswordSecret());
        _kit.Keys.Unavailable = true;

        var ex = await Assert.ThrowsAsync<UpstreamCredentialException>(() => OpenText(version));

        Assert.True(ex.Transient);
        Assert.Single(_kit.Events(AuditActions.VaultDecrypt), e => e.Result == "error");
    }

    [Fact]
    public async Task Rotation_keeps_the_old_version_for_the_grace_window_then_destroys_it()
    {
        var v1 = Vault.Set("tenant-a", "smarthost", PasswordSecret("old-password"));
        _kit.Clock.Advance(TimeSpan.FromMinutes(1));
        var v2 = Vault.Rotate("tenant-a", "smarthost", PasswordSecret("new-password"), TimeSpan.FromMinutes(10));

        Assert.Equal([2, 1], Vault.Usable("tenant-a", "smarthost").Select(v => v.Version));
        Assert.Equal(_kit.Clock.GetUtcNow() + TimeSpan.FromMinutes(10), Vault.Usable("tenant-a", "smarthost")[1].RetiresAt);
        Assert.Equal("old-password", await OpenText(Vault.Usable("tenant-a", "smarthost")[1]));
        Assert.Equal("new-password", await OpenText(v2));

        _kit.Clock.Advance(TimeSpan.FromMinutes(10));

        Assert.Equal([2], Vault.Usable("tenant-a", "smarthost").Select(v => v.Version));
        await Assert.ThrowsAsync<UpstreamCredentialException>(() => OpenText(v1));
        Assert.Equal(1, Vault.Sweep());
        var versions = JsonNode.Parse(File.ReadAllText(Vault.PathFor("tenant-a")))!["credentials"]![0]!["versions"]!.AsArray();
        Assert.Equal([2], versions.Select(v => (int)v!["version"]!));
        Assert.Equal(0, Vault.Sweep());
    }

    [Fact]
    public void The_next_write_destroys_versions_past_their_window()
    {
        Vault.Set("tenant-a", "smarthost", PasswordSecret());
        Vault.Rotate("tenant-a", "smarthost", PasswordSecret("second"), TimeSpan.FromMinutes(5));
        _kit.Clock.Advance(TimeSpan.FromMinutes(6));

        Vault.Set("tenant-a", "another", PasswordSecret());

        Assert.Equal([2], VersionsOnDisk("smarthost"));
        Assert.Equal(0, Vault.Sweep());
    }

    [Fact]
    public async Task The_sweeper_destroys_retired_versions_on_its_timer()
    {
        Vault.Set("tenant-a", "smarthost", PasswordSecret());
        Vault.Rotate("tenant-a", "smarthost", PasswordSecret("second"), TimeSpan.FromMinutes(3));
        using var sweeper = new VaultSweeper(Vault, _kit.Clock) { Interval = TimeSpan.FromMinutes(1) };
        await sweeper.StartAsync(CancellationToken.None);

        for (var i = 0; i < 4; i++)
        {
            _kit.Clock.Advance(TimeSpan.FromMinutes(1));
        }

        // The sweeper's timer fired on the fake clock; its callback runs on the thread pool.
        await Poll.UntilAsync(() => VersionsOnDisk("smarthost").Count == 1);

        await sweeper.StopAsync(CancellationToken.None);
        Assert.Equal([2], VersionsOnDisk("smarthost"));
    }

    List<int> VersionsOnDisk(string name) =>
        [.. JsonNode.Parse(File.ReadAllText(Vault.PathFor("tenant-a")))!["credentials"]!.AsArray()
            .Single(c => (string?)c!["name"] == name)!["versions"]!.AsArray().Select(v => (int)v!["version"]!)];

    [Fact]
    public void Delete_removes_one_version_or_all()
    {
        Vault.Set("tenant-a", "smarthost", PasswordSecret());
        Vault.Rotate("tenant-a", "smarthost", PasswordSecret("second"));

        Assert.Equal(1, Vault.Delete("tenant-a", "smarthost", 2));
        Assert.Equal([1], Vault.Usable("tenant-a", "smarthost").Select(v => v.Version));
        Assert.Equal(0, Vault.Delete("tenant-a", "smarthost", 7));
        Assert.Equal(1, Vault.Delete("tenant-a", "smarthost"));
        Assert.Empty(Vault.Usable("tenant-a", "smarthost"));
        Assert.Equal(0, Vault.Delete("tenant-a", "smarthost"));
        Assert.Equal(["smarthost#v2", "smarthost (all versions)"], _kit.Events(AuditActions.VaultDelete).Select(e => e.Subject));
        // Deleted for good: the name can be set afresh, but never with a number it used before (pool keys, associated data).
        Assert.Equal(3, Vault.Set("tenant-a", "smarthost", PasswordSecret()).Version);
        Vault.Delete("tenant-a", "smarthost", 3);
        Assert.Equal(4, Vault.Set("tenant-a", "smarthost", PasswordSecret()).Version);
        Assert.Equal(5, Vault.Rotate("tenant-a", "smarthost", PasswordSecret()).Version);
    }

    [Fact]
    public void A_write_by_another_process_reaches_the_running_gateway()
    {
        var gateway = _kit.NewVault();
        Assert.Empty(gateway.Usable("tenant-a", "smarthost"));

        using var cli = _kit.NewVault();
        cli.Set("tenant-a", "smarthost", PasswordSecret());
        _kit.Clock.Advance(TimeSpan.FromSeconds(2));
        Assert.Single(gateway.Usable("tenant-a", "smarthost"));

        cli.Rotate("tenant-a", "smarthost", PasswordSecret("second"));
        _kit.Clock.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal([2, 1], gateway.Usable("tenant-a", "smarthost").Select(v => v.Version));
        gateway.Dispose();
    }

    [Fact]
    public void An_upstream_refusal_is_audited_and_left_to_delivery_to_count()
    {
        var version = Vault.Set("tenant-refused", "smarthost", PasswordSecret());

        var counted = UpstreamAuthFailures.Count("tenant-refused", () => Vault.Refused(version, "Q9", "535 5.7.8 Authentication credentials invalid\r\n"));

        var audit = Assert.Single(_kit.Events(AuditActions.UpstreamAuth));
        Assert.Equal(("refused", "tenant-refused", "smarthost#v1", "Q9"), (audit.Result, audit.Tenant, audit.Subject, audit.QueueId));
        Assert.Equal("535 5.7.8 Authentication credentials invalid", audit.Reason);
        // Delivery's UpstreamAuthenticator counts the 535 where it happens: one refusal, one count.
        Assert.Equal(0, counted);
    }
}

/// <summary>Measurements of smtpgw.delivery.upstream_auth_failures labelled with one tenant (and nothing else) while an action runs.</summary>
internal static class UpstreamAuthFailures
{
    public static long Count(string tenant, Action action) => CountAsync(tenant, () =>
    {
        action();
        return Task.CompletedTask;
    }).GetAwaiter().GetResult();

    public static async Task<long> CountAsync(string tenant, Func<Task> action)
    {
        long total = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == Telemetry.MeterName && instrument.Name == Telemetry.DeliveryUpstreamAuthFailures)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            // Tests use tenant ids of their own, so parallel delivery tests do not add to the count.
            if (tags.ToArray() is [{ Key: "tenant" } only] && (string?)only.Value == tenant)
            {
                Interlocked.Add(ref total, value);
            }
        });
        listener.Start();
        await action();
        return Interlocked.Read(ref total);
    }
}
