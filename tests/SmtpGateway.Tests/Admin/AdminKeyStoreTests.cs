using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Admin;

namespace SmtpGateway.Tests.Admin;

public sealed class AdminKeyStoreTests : IDisposable
{
    readonly string _data = Directory.CreateTempSubdirectory("adminkeys").FullName;
    readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));

    public void Dispose() => Directory.Delete(_data, recursive: true);

    [Fact]
    public void A_created_key_verifies_to_its_scope_and_only_its_hash_is_stored()
    {
        var store = new AdminKeyStore(_data, _time);
        var op = store.Create(null, "ops");
        var tenant = store.Create("tenant-a", null);

        Assert.Equal(new AdminPrincipal(op.Record.Id, null), store.Verify(op.Key));
        Assert.Equal(new AdminPrincipal(tenant.Record.Id, "tenant-a"), store.Verify(tenant.Key));
        Assert.True(store.Verify(op.Key)!.IsOperator);
        Assert.False(store.Verify(tenant.Key)!.CanSee("tenant-b"));

        var file = File.ReadAllText(store.FilePath);
        Assert.DoesNotContain(op.Key, file, StringComparison.Ordinal);
        Assert.DoesNotContain(op.Key[^43..], file, StringComparison.Ordinal);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(store.FilePath));
        Assert.DoesNotContain(op.Key, op.ToString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("sgw_")]
    [InlineData("sgw_short_x")]
    [InlineData("Bearer sgw_000000000000_x")]
    [InlineData("sgw_000000000000_unknown-id")]
    public void Malformed_or_unknown_keys_verify_to_nobody(string? bearer) =>
        Assert.Null(new AdminKeyStore(_data, _time).Verify(bearer));

    [Fact]
    public void A_wrong_secret_for_a_real_id_and_an_overlong_value_are_refused()
    {
        var store = new AdminKeyStore(_data, _time);
        var key = store.Create(null, null).Key;
        Assert.Null(store.Verify(key[..^1] + (key[^1] == 'A' ? 'B' : 'A')));
        Assert.Null(store.Verify(key + new string('x', AdminKeyStore.MaxKeyLength)));
    }

    [Fact]
    public void A_revoked_key_is_refused_by_another_store_instance_reading_the_same_file()
    {
        // The CLI revokes, the running gateway (another instance) must see it on its next check.
        var gateway = new AdminKeyStore(_data, _time);
        var cli = new AdminKeyStore(_data, _time);
        var created = cli.Create("tenant-a", null);
        Assert.NotNull(gateway.Verify(created.Key));

        _time.Advance(TimeSpan.FromMinutes(1));
        var revoked = cli.Revoke(created.Record.Id);
        Assert.Equal(_time.GetUtcNow(), revoked!.Revoked);
        Assert.Null(gateway.Verify(created.Key));
        Assert.Null(cli.Revoke("000000000000"));
    }

    [Fact]
    public void A_key_file_others_can_read_is_not_trusted()
    {
        var store = new AdminKeyStore(_data, _time);
        var key = store.Create(null, null).Key;
        File.SetUnixFileMode(store.FilePath, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
        var fresh = new AdminKeyStore(_data, _time);
        Assert.Throws<InvalidDataException>(() => fresh.Verify(key));
    }

    [Fact]
    public void Descriptions_with_control_characters_are_refused() =>
        Assert.Throws<FormatException>(() => new AdminKeyStore(_data, _time).Create(null, "a\r\nb"));
}
