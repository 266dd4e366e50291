using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Delivery;
using SmtpGateway.Vault;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Vault;

/// <summary>
/// The real vault behind Delivery's outbound AUTH (the Delivery tests use a fake): rotation with a grace window falls
/// back to the old secret, and a record that is not the tenant's defers the mail (4.7.0) instead of bouncing it.
/// </summary>
public sealed class VaultDeliveryTests : IAsyncLifetime
{
    const string Tenant = "tenant-a";
    readonly VaultTestKit _kit = new();
    readonly TestSmtpServer _server = new() { AuthMechanisms = ["PLAIN"] };
    X509Certificate2 _certificate = null!;
    FileSpool _spool = null!;
    string _anchors = "";

    public async Task InitializeAsync()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=127.0.0.1", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        using (var selfSigned = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(1)))
        {
            _certificate = X509CertificateLoader.LoadPkcs12(selfSigned.Export(X509ContentType.Pfx), null);
        }

        _server.StartTlsCertificate = _certificate;
        _anchors = Path.Combine(_kit.DataDirectory, "anchors.pem");
        await File.WriteAllTextAsync(_anchors, _certificate.ExportCertificatePem());
        _spool = NewSpool(Path.Combine(_kit.DataDirectory, "spool"), TimeProvider.System, fsync: false);
    }

    public async Task DisposeAsync()
    {
        _spool.Dispose();
        await _server.DisposeAsync();
        _certificate.Dispose();
        _kit.Dispose();
    }

    async Task<RecipientResult> Deliver()
    {
        var gateway = new GatewayConfig { ServerName = "gw.test", Delivery = { Mode = DeliveryMode.Smarthost, AllowPrivateDestinations = true } };
        gateway.Delivery.Tls.TrustAnchorsPath = _anchors;
        var smarthost = new TenantSmarthostConfig { Host = "127.0.0.1", Port = _server.Port, Credential = "relay" };
        var tenants = new Dictionary<string, TenantConfig> { [Tenant] = new() { Egress = new EgressConfig { Smarthost = smarthost } } };
        await using var transport = new SmarthostTransport(gateway, EgressDirectoryTests.NewDirectory(gateway.ServerName, gateway.Delivery.Tls, tenants),
            _kit.Clock, NullLogger.Instance, _kit.Vault);
        var envelope = NewEnvelope(_spool, TimeProvider.System, ["rcpt@example.net"], "sender@tenant-a.example", Tenant);
        await _spool.CommitAsync(envelope, Segmented(SampleMessage(), 1000), CancellationToken.None);
        var message = (await _spool.LoadAsync(envelope.Id, CancellationToken.None))!;
        return Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));
    }

    [Fact]
    public async Task A_refused_new_version_falls_back_to_the_old_one_until_the_grace_window_ends()
    {
        _server.AuthReply = (_, responses) => Encoding.UTF8.GetString(responses[0]).EndsWith("\0old-password", StringComparison.Ordinal)
            ? "235 2.7.0 Authentication successful"
            : "535 5.7.8 Authentication credentials invalid";
        _kit.Vault.Set(Tenant, "relay", NewSecret.Password("relay@tenant-a.example", "old-password"u8.ToArray()));
        _kit.Vault.Rotate(Tenant, "relay", NewSecret.Password("relay@tenant-a.example", "typo-password"u8.ToArray()), TimeSpan.FromMinutes(10));

        Assert.Equal(DeliveryOutcome.Delivered, (await Deliver()).Outcome);
        Assert.Equal(("refused", "relay#v2"), _kit.Events(AuditActions.UpstreamAuth).Select(e => (e.Result, e.Subject)).Single());
        Assert.Equal(["relay#v2", "relay#v1"], _kit.Events(AuditActions.VaultDecrypt).Where(e => e.Reason == "smtp-auth").Select(e => e.Subject));

        // Past the window the old version is gone from the file, and the refused new one alone defers the mail.
        _kit.Clock.Advance(TimeSpan.FromMinutes(11));
        Assert.Equal(1, _kit.Vault.Sweep());
        var late = await Deliver();
        Assert.Equal(DeliveryOutcome.Deferred, late.Outcome);
        Assert.StartsWith("454 4.7.0", late.Reply, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_record_moved_from_another_tenant_defers_and_is_audited()
    {
        _kit.Vault.Set("tenant-b", "relay", NewSecret.Password("relay@tenant-b.example", "b-password"u8.ToArray()));
        _kit.Vault.Set(Tenant, "relay", NewSecret.Password("relay@tenant-a.example", "a-password"u8.ToArray()));
        var fileA = JsonNode.Parse(File.ReadAllText(_kit.Vault.PathFor(Tenant)))!;
        var fileB = JsonNode.Parse(File.ReadAllText(_kit.Vault.PathFor("tenant-b")))!;
        fileA["credentials"]![0]!["versions"]![0]!["ciphertext"] = (string?)fileB["credentials"]![0]!["versions"]![0]!["ciphertext"];
        File.WriteAllText(_kit.Vault.PathFor(Tenant), fileA.ToJsonString());

        var result = await Deliver();

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        Assert.StartsWith("454 4.7.0", result.Reply, StringComparison.Ordinal);
        Assert.Empty(_server.AuthExchanges);
        var refused = Assert.Single(_kit.Events(AuditActions.VaultDecrypt));
        Assert.Equal(("refused", Tenant, "relay#v1", "smtp-auth"), (refused.Result, refused.Tenant, refused.Subject, refused.Reason));
        Assert.NotNull(refused.QueueId);
    }
}
