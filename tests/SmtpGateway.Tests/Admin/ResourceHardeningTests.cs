using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Admin;
using SmtpGateway.Cli;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Identity;
using SmtpGateway.Spool;
using SmtpGateway.Vault;

namespace SmtpGateway.Tests.Admin;

/// <summary>Review 13's findings on the admin API's resources and the CLI that goes through it (#4, #12, #16, #17).</summary>
public sealed class ResourceHardeningTests : IDisposable
{
    readonly string _directory = Directory.CreateTempSubdirectory("smtpgw-hardening-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Theory]
    [InlineData("x\n")]
    [InlineData("relay\n")]
    [InlineData("x\r\n")]
    public void A_credential_name_with_a_trailing_line_feed_is_refused(string name)
    {
        // In .NET, '$' also matches before a final '\n': "x\n" passed and became a second credential that looks like "x".
        Assert.Throws<ArgumentException>(() => CredentialVault.CheckName(name));
        CredentialVault.CheckName(name.TrimEnd());
        Assert.False(GatewayConfigValidator.IsCredentialName(name));
        Assert.True(GatewayConfigValidator.IsCredentialName(name.TrimEnd()));
    }

    [Fact]
    public void The_tenant_id_default_is_reserved_with_a_clear_error()
    {
        var errors = new List<string>();
        TenantSnapshot.Build(new Dictionary<string, TenantConfig> { ["default"] = new() { Domains = ["d.example"] } }, errors);

        var error = Assert.Single(errors);
        Assert.StartsWith("Tenants:default: the tenant id 'default' is reserved", error, StringComparison.Ordinal);
        Assert.False(TenantSnapshot.IsValidTenantId("default"));
        Assert.True(TenantSnapshot.IsValidTenantId("default-2"));
    }

    [Fact]
    public async Task Queue_pages_are_bounded_and_a_message_of_no_tenant_is_no_tenants()
    {
        var root = Path.Combine(_directory, "spool");
        var ids = new List<(string Id, string? Tenant)>();
        using (var spool = new FileSpool(root, fsync: false, TimeProvider.System, NullLogger.Instance))
        {
            foreach (var tenant in new[] { "tenant-a", null, "tenant-b", "tenant-a", null, "tenant-a" })
            {
                var envelope = new SpoolEnvelope(spool.NewId(), tenant, "s@example.net", ["r@example.net"], DateTimeOffset.UtcNow, "192.0.2.1", "relay", false, false);
                await spool.CommitAsync(envelope, new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes("Subject: x\r\n\r\nHi.\r\n")), CancellationToken.None);
                ids.Add((envelope.Id, tenant));
            }

            var own = ids.Where(i => i.Tenant == "tenant-a").Select(i => i.Id).ToList();
            Assert.Equal(own, QueueView.Page(spool, "tenant-a", null, null, 100).Select(i => i.Id));
            Assert.Equal(own[..2], QueueView.Page(spool, "tenant-a", null, null, 2).Select(i => i.Id));
            Assert.Equal(own[1..], QueueView.Page(spool, "tenant-a", null, own[0], 100).Select(i => i.Id));
            Assert.Empty(QueueView.Page(spool, "tenant-a", null, own[^1], 100));
            Assert.Empty(QueueView.Page(spool, "tenant-a", "failed", null, 100));

            // The gateway's own mail (no tenant) shows as "default" in lists, but belongs to no tenant, whatever its name.
            var none = ids.First(i => i.Tenant is null).Id;
            Assert.Equal("default", QueueView.Show(spool, none)!.Message.Tenant);
            Assert.Null(QueueView.OwnerOf(spool, none));
            Assert.Empty(QueueView.Page(spool, "default", null, null, 100));
        }

        // A spool that has not loaded the messages yet (no tenant in memory) reads the files and answers the same.
        using var fresh = new FileSpool(root, fsync: false, TimeProvider.System, NullLogger.Instance);
        Assert.Equal(ids.Where(i => i.Tenant == "tenant-b").Select(i => i.Id), QueueView.Page(fresh, "tenant-b", null, null, 100).Select(i => i.Id));
    }

    [Fact]
    public void The_events_scan_stops_at_its_byte_cap_and_returns_what_it_found()
    {
        var path = Path.Combine(_directory, "events.jsonl");
        static string Line(int i, string tenant) => JsonSerializer.Serialize(new DeliveryEvent
        {
            Time = DateTimeOffset.UnixEpoch.AddSeconds(i), Event = "delivered", Id = $"ID{i:D6}", Tenant = tenant, From = "a@a.example",
            Recipient = $"r{i}@example.net", Reply = "250 2.0.0 Ok", Attempt = 1,
        }, JsonSerializerOptions.Web);

        // tenant-a's one event at the start, then ~1 MB of another tenant's that share the file (reduced file names).
        File.WriteAllLines(path, [Line(0, "tenant-a"), .. Enumerable.Range(1, 5000).Select(i => Line(i, "tenant_a")), Line(5001, "tenant-a")]);

        Assert.Equal(["ID005001", "ID000000"], EventEndpoints.Latest(path, "tenant-a", 100).Select(e => e.Id));
        Assert.Equal(["ID005001"], EventEndpoints.Latest(path, "tenant-a", 100, maxScanBytes: 256 * 1024).Select(e => e.Id));
        Assert.Equal(8 * 1024 * 1024, EventEndpoints.MaxScanBytes);
    }

    [Fact]
    public void Only_a_no_such_tenant_404_is_taken_for_one()
    {
        static AdminApiAnswer Answer(HttpStatusCode status, string detail) =>
            new(status, JsonDocument.Parse(JsonSerializer.Serialize(new { title = "Not Found", detail })).RootElement.Clone());

        Assert.True(Answer(HttpStatusCode.NotFound, AdminResults.NoSuchTenant).IsNoSuchTenant);
        Assert.False(Answer(HttpStatusCode.NotFound, "x@example.net is not suppressed").IsNoSuchTenant);
        Assert.False(Answer(HttpStatusCode.NotFound, "No such message.").IsNoSuchTenant);
        Assert.False(Answer(HttpStatusCode.BadRequest, AdminResults.NoSuchTenant).IsNoSuchTenant);
        Assert.Contains("no tenant 'tenant-c'", AdminApiAnswer.NoSuchTenantError("tenant-c"), StringComparison.Ordinal);
    }

    [Fact]
    public void No_socket_or_a_dead_one_falls_back_and_a_refused_permission_does_not()
    {
        var gateway = new GatewayConfig { DataDirectory = _directory, Admin = new AdminConfig { Enabled = true, SocketPath = "admin/admin.sock" } };

        // ENOENT (no directory, then no socket file): no gateway runs.
        Assert.Null(AdminApiClient.TryConnect(gateway));
        Directory.CreateDirectory(Path.Combine(_directory, "admin"));
        Assert.Null(AdminApiClient.TryConnect(gateway));

        // ECONNREFUSED: a socket file nobody listens on (as one left by a killed gateway; bound, never listening, since
        // .NET removes the file when a bound socket is disposed).
        var path = Path.Combine(_directory, "admin", "admin.sock");
        using (var dead = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            dead.Bind(new UnixDomainSocketEndPoint(path));
            Assert.True(File.Exists(path));
            Assert.Null(AdminApiClient.TryConnect(gateway));
        }

        // EACCES/EPERM (another user's socket): an error, never a silent edit of the files under a running gateway.
        Assert.False(AdminApiClient.FallsBack(SocketError.AccessDenied));
        Assert.True(AdminApiClient.FallsBack(SocketError.ConnectionRefused));
        Assert.True(AdminApiClient.FallsBack(SocketError.AddressNotAvailable));
    }
}
