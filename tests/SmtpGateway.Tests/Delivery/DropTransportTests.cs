using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Delivery;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Spool;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Delivery;

public sealed class DropTransportTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly ManualTimeProvider _time = new();
    readonly FileSpool _spool;

    public DropTransportTests() => _spool = NewSpool(_dir.Combine("spool"), _time);

    public void Dispose()
    {
        _spool.Dispose();
        _dir.Dispose();
    }

    string DropRoot => _dir.Combine("drop");

    async Task<SpooledMessage> SpoolAsync(byte[] bytes, string? tenant)
    {
        var envelope = NewEnvelope(_spool, _time, ["a@example.net", "b@example.net"], tenant: tenant);
        await _spool.CommitAsync(envelope, Segmented(bytes), CancellationToken.None);
        return (await _spool.LoadAsync(envelope.Id, CancellationToken.None))!;
    }

    [Fact]
    public async Task Writes_exact_bytes_to_default_tenant_folder()
    {
        var transport = new DropTransport(DropRoot, fsync: true, NullLogger.Instance);
        var bytes = Encoding.UTF8.GetBytes("Subject: \u00fcber\r\n\r\n.dot\r\n\u65e5\u672c\r\n");
        var message = await SpoolAsync(bytes, tenant: null);

        var results = await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));
        Assert.Equal(2, results.Count);
        var path = Path.Combine(DropRoot, "default", message.Envelope.Id + ".eml");
        Assert.Equal(bytes, await File.ReadAllBytesAsync(path));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(DropRoot, ".tmp")));
    }

    [Fact]
    public async Task Repeated_delivery_overwrites_the_same_file()
    {
        var transport = new DropTransport(DropRoot, fsync: false, NullLogger.Instance);
        var message = await SpoolAsync(SampleMessage(), tenant: "tenant-a");
        await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);
        await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);
        Assert.Single(Directory.EnumerateFiles(Path.Combine(DropRoot, "tenant-a")));
    }

    [Theory]
    [InlineData("../escape")]
    [InlineData("../../etc")]
    [InlineData("/etc/passwd")]
    [InlineData("..")]
    [InlineData(".")]
    [InlineData(".tmp")]
    [InlineData("a/../../b")]
    [InlineData("tenant\0nul")]
    [InlineData("C:\\windows")]
    public async Task Tenant_id_cannot_leave_the_drop_directory(string tenant)
    {
        var transport = new DropTransport(DropRoot, fsync: false, NullLogger.Instance);
        var message = await SpoolAsync(SampleMessage(), tenant);

        var results = await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));
        var written = Directory.EnumerateFiles(_dir.Path, "*.eml", SearchOption.AllDirectories).Single();
        var folder = Path.GetDirectoryName(written)!;
        Assert.Equal(Path.GetFullPath(DropRoot), Path.GetDirectoryName(folder));
        Assert.False(Path.GetFileName(folder).StartsWith('.'));
        Assert.NotEqual("default", Path.GetFileName(folder));
    }

    [Fact]
    public void Different_tenants_never_share_a_folder()
    {
        string[] tenants = ["a/b", "a_b", "a.b", "A_B", "a b", "default", "x"];
        var names = tenants.Select(DropTransport.TenantDirectoryName).ToArray();
        Assert.Equal(names.Length, names.Distinct(StringComparer.Ordinal).Count());
        Assert.Equal("a_b", DropTransport.TenantDirectoryName("a_b"));
        Assert.Equal("default", DropTransport.TenantDirectoryName(null));
    }

    [Fact]
    public async Task Unwritable_drop_directory_defers()
    {
        await File.WriteAllTextAsync(DropRoot, "a file where the drop directory should be");
        var transport = new DropTransport(DropRoot, fsync: false, NullLogger.Instance);
        var message = await SpoolAsync(SampleMessage(), tenant: null);

        var results = await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Deferred, r.Outcome));
        Assert.All(results, r => Assert.StartsWith("451 4.3.0", r.Reply));
    }

    [Fact]
    public async Task Drop_directories_removed_after_a_delivery_are_made_again()
    {
        var transport = new DropTransport(DropRoot, fsync: true, NullLogger.Instance);
        var first = await SpoolAsync(SampleMessage(), tenant: "tenant-a");
        await transport.DeliverAsync(first, first.Envelope.Recipients, CancellationToken.None);

        // An operator empties the drop directory while the gateway runs: the remembered directories are gone.
        Directory.Delete(DropRoot, recursive: true);
        var second = await SpoolAsync(SampleMessage("again"), tenant: "tenant-a");
        var results = await transport.DeliverAsync(second, second.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));
        Assert.True(File.Exists(Path.Combine(DropRoot, "tenant-a", second.Envelope.Id + ".eml")));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(DropRoot, ".tmp")));
    }
}
