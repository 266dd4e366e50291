using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using SmtpGateway.Identity;

namespace SmtpGateway.Tests.Identity;

public sealed class TenantDirectoryReloadTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("smtpgw-reload");

    string Write(string tenantsJson)
    {
        var path = Path.Combine(_dir.FullName, "gateway.json");
        File.WriteAllText(path + ".tmp", $$"""{ "Tenants": {{tenantsJson}} }""");
        File.Move(path + ".tmp", path, overwrite: true);
        return path;
    }

    [Fact]
    public async Task A_valid_edit_swaps_the_snapshot_and_an_invalid_one_keeps_the_last_good()
    {
        var path = Write("""{ "a": { "Domains": ["a.example"] } }""");
        var configuration = new ConfigurationBuilder().AddJsonFile(path, optional: false, reloadOnChange: true).Build();
        using var directory = new TenantDirectoryService(configuration, NullLoggerFactory.Instance);
        var sessionSnapshot = directory.Current;
        Assert.Equal(["a"], sessionSnapshot.Tenants.Keys);

        var reloaded = new TaskCompletionSource<TenantSnapshot>(TaskCreationOptions.RunContinuationsAsynchronously);
        directory.Reloaded += s => reloaded.TrySetResult(s);
        Write("""{ "a": { "Domains": ["a.example"] }, "c": { "Domains": ["c.example"] } }""");
        var next = await reloaded.Task.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.Equal(["a", "c"], next.Tenants.Keys.Order());
        Assert.Same(next, directory.Current);
        Assert.Equal(["a"], sessionSnapshot.Tenants.Keys); // a session keeps the snapshot it began with

        // Two tenants claiming one domain: refused, the last good snapshot stays.
        var second = new TaskCompletionSource<TenantSnapshot>(TaskCreationOptions.RunContinuationsAsynchronously);
        var rejected = new TaskCompletionSource<IReadOnlyList<string>>(TaskCreationOptions.RunContinuationsAsynchronously);
        directory.Reloaded += s => second.TrySetResult(s);
        directory.ReloadRejected += e => rejected.TrySetResult(e);
        Write("""{ "a": { "Domains": ["a.example"] }, "c": { "Domains": ["A.example."] } }""");
        var errors = await rejected.Task.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.Contains(errors, e => e.Contains("a.example", StringComparison.OrdinalIgnoreCase));
        Assert.False(second.Task.IsCompleted);
        Assert.Same(next, directory.Current);
    }

    [Fact]
    public void An_invalid_directory_at_start_refuses_to_start_with_every_error()
    {
        var path = Write("""{ "a": { "Domains": ["x.example"], "Networks": ["10.0.0.0/8"], "AllowWideNetworks": true }, "b": { "Domains": ["x.example"], "Networks": ["10.1.0.0/16"] } }""");
        var configuration = new ConfigurationBuilder().AddJsonFile(path).Build();
        var ex = Assert.Throws<OptionsValidationException>(() => new TenantDirectoryService(configuration, NullLoggerFactory.Instance));
        Assert.Contains(ex.Failures, f => f.StartsWith("Tenants:b:Domains:0:", StringComparison.Ordinal));
        Assert.Contains(ex.Failures, f => f.StartsWith("Tenants:b:Networks:0:", StringComparison.Ordinal));
    }

    public void Dispose() => _dir.Delete(recursive: true);
}
