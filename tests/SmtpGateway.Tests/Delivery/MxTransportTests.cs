using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Spool;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Delivery;

/// <summary>An MX table instead of DNS.</summary>
internal sealed class FixedResolver(Dictionary<string, MxRoute> routes) : IMxResolver
{
    public int Queries { get; private set; }

    public Task<MxRoute> ResolveAsync(string domain, CancellationToken cancellationToken)
    {
        Queries++;
        return Task.FromResult(routes.TryGetValue(domain, out var route) ? route : MxRoute.Fail(550, $"5.4.4 Domain {domain} does not exist (NXDOMAIN)"));
    }
}

/// <summary>MX routing, TLS policy, tenant egress and pool limits against the in-process test server.</summary>
public sealed class MxTransportTests : IAsyncLifetime
{
    readonly TempDirectory _dir = new();
    readonly TestSmtpServer _server = new();
    FileSpool _spool = null!;

    public Task InitializeAsync()
    {
        _spool = NewSpool(_dir.Combine("spool"), TimeProvider.System, fsync: false);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        _spool.Dispose();
        await _server.DisposeAsync();
        _dir.Dispose();
    }

    static MxHost Host(string name, int preference, string address) => new(name, preference, [IPAddress.Parse(address)]);

    MxTransport NewTransport(IMxResolver resolver, Action<GatewayConfig>? configure = null, Dictionary<string, TenantConfig>? tenants = null)
    {
        var config = new GatewayConfig { ServerName = "gw.test", Delivery = { Mode = DeliveryMode.Mx, AllowPrivateDestinations = true } };
        config.Delivery.Mx.Port = _server.Port;
        config.Delivery.Mx.ConnectTimeout = TimeSpan.FromSeconds(5);
        configure?.Invoke(config);
        var egress = EgressDirectoryTests.NewDirectory(config.ServerName, config.Delivery.Tls, tenants ?? []);
        return new MxTransport(config, resolver, egress, TimeProvider.System, NullLogger.Instance);
    }

    async Task<SpooledMessage> SpoolAsync(string[] recipients, string? tenant = null, string mailFrom = "sender@tenant-a.example")
    {
        var envelope = NewEnvelope(_spool, TimeProvider.System, recipients, mailFrom, tenant);
        await _spool.CommitAsync(envelope, Segmented(SampleMessage(), 1000), CancellationToken.None);
        return (await _spool.LoadAsync(envelope.Id, CancellationToken.None))!;
    }

    [Fact]
    public async Task Unreachable_first_MX_falls_back_to_the_next_in_the_same_attempt()
    {
        // 127.0.0.2 has nothing on the server's port: refused at once.
        var resolver = new FixedResolver(new() { ["example.net"] = new MxRoute([Host("mx1.example.net", 10, "127.0.0.2"), Host("mx2.example.net", 20, "127.0.0.1")]) });
        await using var transport = NewTransport(resolver);
        var message = await SpoolAsync(["a@example.net"]);

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        Assert.Equal($"mx2.example.net[127.0.0.1]:{_server.Port}", result.RemoteHost);
        Assert.Single(_server.Messages);
    }

    [Fact]
    public async Task Route_failures_become_the_recipients_replies()
    {
        var resolver = new FixedResolver(new()
        {
            ["nullmx.example"] = MxRoute.Fail(556, "5.1.10 Domain nullmx.example does not accept mail (null MX, RFC 7505)"),
            ["slowdns.example"] = MxRoute.Fail(451, "4.4.3 DNS lookup of MX for slowdns.example failed (timeout)"),
            ["example.net"] = new MxRoute([Host("mx.example.net", 10, "127.0.0.1")]),
        });
        await using var transport = NewTransport(resolver);
        var message = await SpoolAsync(["x@nullmx.example", "y@slowdns.example", "z@example.net", "w@nosuch.example"]);

        var results = await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.Equal([DeliveryOutcome.Bounced, DeliveryOutcome.Deferred, DeliveryOutcome.Delivered, DeliveryOutcome.Bounced], results.Select(r => r.Outcome));
        Assert.StartsWith("556 5.1.10", results[0].Reply);
        Assert.StartsWith("451 4.4.3", results[1].Reply);
        Assert.StartsWith("550 5.4.4", results[3].Reply);
        Assert.Equal(["z@example.net"], Assert.Single(_server.Messages).Recipients);
    }

    [Fact]
    public async Task Dropped_session_retries_the_whole_transaction_at_the_next_MX()
    {
        _server.DropOnMail = n => n == 1;
        var resolver = new FixedResolver(new() { ["example.net"] = new MxRoute([Host("mx1.example.net", 10, "127.0.0.1"), Host("mx2.example.net", 20, "127.0.0.1")]) });

        // Both MX names point at the same server: the first session drops at MAIL, the second (a new connection) takes it.
        await using var transport = NewTransport(resolver);
        var message = await SpoolAsync(["a@example.net", "b@example.net"]);

        var results = await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));
        Assert.All(results, r => Assert.StartsWith("mx2.example.net", r.RemoteHost));
        Assert.Equal(["a@example.net", "b@example.net"], Assert.Single(_server.Messages).Recipients);
        Assert.Equal(2, _server.Connections);
    }

    [Fact]
    public async Task Tenant_egress_sets_EHLO_and_source_address_and_tenants_never_share_a_connection()
    {
        var resolver = new FixedResolver(new() { ["example.net"] = new MxRoute([Host("mx.example.net", 10, "127.0.0.1")]) });
        var tenants = new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Egress = new EgressConfig { HeloName = "out-a.example", SourceAddress = "127.0.0.1" } },
            ["tenant-b"] = new() { Egress = new EgressConfig { HeloName = "out-b.example", SourceAddress = "127.0.0.1" } },
        };
        await using var transport = NewTransport(resolver, tenants: tenants);

        foreach (var tenant in new[] { "tenant-a", "tenant-b", "tenant-a", "tenant-b" })
        {
            var message = await SpoolAsync(["r@example.net"], tenant);
            Assert.Equal(DeliveryOutcome.Delivered, Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None)).Outcome);
        }

        Assert.Equal(2, _server.Connections);
        Assert.Equal(1, _server.Commands.Count(c => c == "EHLO out-a.example"));
        Assert.Equal(1, _server.Commands.Count(c => c == "EHLO out-b.example"));
        Assert.Equal([2, 2], _server.Messages.GroupBy(m => m.Connection).Select(g => g.Count()));
    }

    [Fact]
    public async Task Tenant_smarthost_takes_all_of_its_mail_instead_of_MX()
    {
        var resolver = new FixedResolver([]);
        var tenants = new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Egress = new EgressConfig { Smarthost = new TenantSmarthostConfig { Host = "127.0.0.1", Port = _server.Port } } },
        };
        await using var transport = NewTransport(resolver, tenants: tenants);
        var message = await SpoolAsync(["a@one.example", "b@two.example"], "tenant-a");

        var results = await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));
        Assert.Equal(0, resolver.Queries);
        Assert.Equal(["a@one.example", "b@two.example"], Assert.Single(_server.Messages).Recipients);
    }

    [Fact]
    public async Task Tenant_smarthost_on_a_private_address_is_refused_at_validation_and_at_connect_and_nothing_is_sent()
    {
        var resolver = new FixedResolver([]);
        var tenants = new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Egress = new EgressConfig { Smarthost = new TenantSmarthostConfig { Host = "127.0.0.1", Port = _server.Port } } },
        };
        var errors = new List<string>();
        DestinationRanges.CheckTenants(tenants, new DeliveryConfig { Mode = DeliveryMode.Mx }, errors);
        Assert.StartsWith("Tenants:tenant-a:Egress:Smarthost:Host: 127.0.0.1 is a loopback address", Assert.Single(errors), StringComparison.Ordinal);

        await using var transport = NewTransport(resolver, c => c.Delivery.AllowPrivateDestinations = false, tenants);
        var message = await SpoolAsync(["a@one.example"], "tenant-a");

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        Assert.Equal("451 4.4.3 127.0.0.1 resolves only to refused non-public addresses (loopback)", result.Reply);
        Assert.Empty(_server.Messages);
        Assert.Equal(0, _server.Connections);
    }

    [Fact]
    public async Task Required_TLS_without_STARTTLS_defers_with_4_7_10_and_sends_nothing()
    {
        var resolver = new FixedResolver(new() { ["example.net"] = new MxRoute([Host("mx.example.net", 10, "127.0.0.1")]) });
        await using var transport = NewTransport(resolver, c => c.Delivery.Tls.Domains["example.net"] = TlsPolicy.Required);
        var message = await SpoolAsync(["a@example.net"]);

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        Assert.StartsWith("451 4.7.10 ", result.Reply);
        Assert.Empty(_server.Messages);
        Assert.DoesNotContain(_server.Commands, c => c.StartsWith("MAIL", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Opportunistic_TLS_records_version_and_cipher()
    {
        using var certificate = Certificate("CN=whatever.test", "whatever.test");
        _server.StartTlsCertificate = certificate;
        var resolver = new FixedResolver(new() { ["example.net"] = new MxRoute([Host("mx.example.net", 10, "127.0.0.1")]) });
        await using var transport = NewTransport(resolver);
        var message = await SpoolAsync(["a@example.net"]);

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        Assert.Matches(@"^TLSv1\.[23] TLS_", result.Tls);
    }

    [Theory]
    [InlineData(TlsPolicy.Opportunistic, DeliveryOutcome.Delivered)]
    [InlineData(TlsPolicy.Required, DeliveryOutcome.Deferred)]
    public async Task Failed_handshake_falls_back_to_plaintext_only_under_the_opportunistic_policy(TlsPolicy policy, DeliveryOutcome expected)
    {
        _server.BreakStartTls = true;
        var resolver = new FixedResolver(new() { ["example.net"] = new MxRoute([Host("mx.example.net", 10, "127.0.0.1")]) });
        await using var transport = NewTransport(resolver, c => c.Delivery.Tls.Default = policy);
        var message = await SpoolAsync(["a@example.net"]);

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(expected, result.Outcome);
        if (expected == DeliveryOutcome.Delivered)
        {
            Assert.Null(result.Tls);
            Assert.Equal(2, _server.Connections); // the broken TLS session, then a plaintext one
        }
        else
        {
            Assert.StartsWith("451 4.7.5 ", result.Reply);
            Assert.Empty(_server.Messages);
            Assert.Equal(1, _server.Connections);
        }
    }

    [Fact]
    public async Task Verify_policy_accepts_a_certificate_for_the_MX_name_from_a_trusted_anchor()
    {
        using var certificate = Certificate("CN=mx.example.net", "mx.example.net");
        _server.StartTlsCertificate = certificate;
        var anchors = _dir.Combine("anchors.pem");
        await File.WriteAllTextAsync(anchors, certificate.ExportCertificatePem());
        var resolver = new FixedResolver(new() { ["example.net"] = new MxRoute([Host("mx.example.net", 10, "127.0.0.1")]) });
        await using var transport = NewTransport(resolver, c =>
        {
            c.Delivery.Tls.Default = TlsPolicy.Verify;
            c.Delivery.Tls.TrustAnchorsPath = anchors;
        });
        var message = await SpoolAsync(["a@example.net"]);

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        Assert.NotNull(result.Tls);
    }

    [Theory]
    [InlineData("mx.other.test", true)]     // trusted, but for another name
    [InlineData("mx.example.net", false)]   // right name, untrusted issuer
    public async Task Verify_policy_defers_with_4_7_5_and_never_falls_back_to_plaintext(string certificateName, bool trusted)
    {
        using var certificate = Certificate("CN=" + certificateName, certificateName);
        _server.StartTlsCertificate = certificate;
        var anchors = _dir.Combine("anchors.pem");
        await File.WriteAllTextAsync(anchors, certificate.ExportCertificatePem());
        var resolver = new FixedResolver(new() { ["example.net"] = new MxRoute([Host("mx.example.net", 10, "127.0.0.1")]) });
        await using var transport = NewTransport(resolver, c =>
        {
            c.Delivery.Tls.Domains["example.net"] = TlsPolicy.Verify;
            c.Delivery.Tls.TrustAnchorsPath = trusted ? anchors : null;
        });
        var message = await SpoolAsync(["a@example.net"]);

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        Assert.StartsWith("451 4.7.5 ", result.Reply);
        Assert.Empty(_server.Messages);
        Assert.Equal(1, _server.Connections); // no second, plaintext session
    }

    [Fact]
    public async Task Tenant_cap_bounds_concurrent_connections_of_one_tenant()
    {
        _server.HoldDataUntilConcurrent = 2;
        var resolver = new FixedResolver(new()
        {
            ["one.example"] = new MxRoute([Host("mx.one.example", 10, "127.0.0.1")]),
            ["two.example"] = new MxRoute([Host("mx.two.example", 10, "127.0.0.1")]),
        });
        await using var transport = NewTransport(resolver, c => c.Delivery.MaxConnectionsPerTenant = 2);
        var messages = new List<SpooledMessage>();
        for (var i = 0; i < 12; i++)
        {
            messages.Add(await SpoolAsync([i % 2 == 0 ? $"r{i}@one.example" : $"r{i}@two.example"], "tenant-a"));
        }

        var results = await Task.WhenAll(messages.Select(m => Task.Run(() => transport.DeliverAsync(m, m.Envelope.Recipients, CancellationToken.None))));

        Assert.All(results.SelectMany(r => r), r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));
        Assert.Equal(2, _server.MaxConcurrentConnections);
    }

    [Fact]
    public async Task A_host_that_keeps_failing_is_skipped_until_its_backoff_ends()
    {
        await using var transport = await DeadHostTransportAsync(failuresBeforeBackoff: 2);

        var replies = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            var message = await SpoolAsync(["a@example.net"]);
            replies.Add(Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None)).Reply);
        }

        Assert.StartsWith("451 4.4.1 Cannot connect", replies[0]);
        Assert.StartsWith("451 4.4.1 Cannot connect", replies[1]);
        Assert.StartsWith("451 4.4.1 mx.example.net:", replies[2]);
        Assert.Contains("not tried", replies[2]);
    }

    [Fact]
    public async Task A_host_backed_off_for_one_tenant_is_still_tried_for_another()
    {
        await using var transport = await DeadHostTransportAsync(failuresBeforeBackoff: 1);

        async Task<string> AttemptAsync(string tenant)
        {
            var message = await SpoolAsync(["a@example.net"], tenant);
            return Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None)).Reply;
        }

        Assert.StartsWith("451 4.4.1 Cannot connect", await AttemptAsync("tenant-a"));
        Assert.Contains("not tried", await AttemptAsync("tenant-a"));

        // tenant-b's own attempt goes to the host (and fails on its own), it is not skipped for tenant-a's failure.
        Assert.StartsWith("451 4.4.1 Cannot connect", await AttemptAsync("tenant-b"));
        Assert.Contains("not tried", await AttemptAsync("tenant-b"));
    }

    /// <summary>MX routing for example.net to mx.example.net (127.0.0.1), where nothing listens (the test server is stopped); backoff of 5 minutes.</summary>
    async Task<MxTransport> DeadHostTransportAsync(int failuresBeforeBackoff)
    {
        var port = _server.Port;
        await _server.DisposeAsync();
        var resolver = new FixedResolver(new() { ["example.net"] = new MxRoute([Host("mx.example.net", 10, "127.0.0.1")]) });
        return NewTransport(resolver, c =>
        {
            c.Delivery.Mx.Port = port;
            c.Delivery.Backoff = new DestinationBackoffConfig
            {
                FailuresBeforeBackoff = failuresBeforeBackoff, InitialDelay = TimeSpan.FromMinutes(5), MaxDelay = TimeSpan.FromMinutes(5),
            };
        });
    }

    static X509Certificate2 Certificate(string subject, string dnsName)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName(dnsName);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var ephemeral = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(1));
        return X509CertificateLoader.LoadPkcs12(ephemeral.Export(X509ContentType.Pfx), null);
    }
}
