using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Signing;

namespace SmtpGateway.Tests.Signing;

/// <summary>
/// The gateway's selector store looks at the file's timestamp at most once per refresh interval (not per message);
/// a change saved through the store itself is seen by the very next lookup.
/// </summary>
public sealed class DkimKeyStoreRefreshTests : IDisposable
{
    const string Tenant = "tenant-a";
    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-dkimstore");
    readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 12, 5, 12, 0, 0, TimeSpan.Zero));

    static DkimSelector Selector(string name, SelectorState state) =>
        new("tenant-a.example", name, DkimAlgorithm.Ed25519, state, "label-" + name, "pk", DateTimeOffset.UnixEpoch, null);

    string FilePath => Path.Combine(_data.FullName, "dkim", Tenant + ".json");

    [Fact]
    public void Edit_by_another_process_is_seen_after_the_interval_not_before()
    {
        var store = new DkimKeyStore(_data.FullName, _clock);
        Assert.Empty(store.Selectors(Tenant));

        // Another process (the CLI on the data directory) writes the file.
        new DkimKeyStore(_data.FullName).Save(Tenant, [Selector("s1", SelectorState.Active)]);
        Assert.Empty(store.Selectors(Tenant));

        _clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal("s1", Assert.Single(store.Selectors(Tenant)).Selector);
    }

    [Fact]
    public void Save_through_the_store_is_seen_by_the_next_lookup()
    {
        var store = new DkimKeyStore(_data.FullName, _clock);
        store.Save(Tenant, [Selector("s1", SelectorState.Active)]);
        Assert.Equal("s1", Assert.Single(store.Selectors(Tenant)).Selector);

        store.Save(Tenant, [Selector("s1", SelectorState.Retiring), Selector("s2", SelectorState.Active)]);
        Assert.Equal("s2", Assert.Single(store.ActiveFor(Tenant, "tenant-a.example")).Selector);
    }

    [Fact]
    public void Broken_file_fails_closed_on_every_lookup()
    {
        var store = new DkimKeyStore(_data.FullName, _clock);
        Directory.CreateDirectory(Path.GetDirectoryName(FilePath)!);
        File.WriteAllText(FilePath, "{not json");
        Assert.Throws<SigningException>(() => store.Selectors(Tenant));
        Assert.Throws<SigningException>(() => store.Selectors(Tenant));
    }

    [Fact]
    public void Without_a_clock_every_lookup_looks_at_the_file()
    {
        var store = new DkimKeyStore(_data.FullName);
        Assert.Empty(store.Selectors(Tenant));
        new DkimKeyStore(_data.FullName).Save(Tenant, [Selector("s1", SelectorState.Active)]);
        Assert.Single(store.Selectors(Tenant));
    }

    public void Dispose() => _data.Delete(recursive: true);
}
