using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Delivery.Inbound;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Spool;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Delivery.Inbound;

public sealed class InboundRouterTests : IDisposable
{
    const string Tenant = "tenant-a";
    const string Secret = "s3cret-webhook-key-0123456789";

    readonly TempDirectory _dir = new();
    readonly FileSpool _spool;
    readonly HttpClient _http = new(new SocketsHttpHandler { AllowAutoRedirect = false }) { Timeout = Timeout.InfiniteTimeSpan };
    readonly CapturingLogger _logger = new();

    public InboundRouterTests() => _spool = NewSpool(_dir.Combine("spool"), TimeProvider.System, fsync: false);

    public void Dispose()
    {
        _http.Dispose();
        _spool.Dispose();
        _dir.Dispose();
    }

    string DataDirectory => _dir.Combine("data");

    InboundRouter NewRouter(InboundRouteConfig? route, TimeProvider? time = null, HttpClient? http = null, DestinationPolicy? destinations = null)
    {
        var routes = new Dictionary<string, InboundRouteConfig>(StringComparer.Ordinal);
        if (route is not null)
        {
            routes[Tenant] = route;
        }

        return new InboundRouter(routes, DataDirectory, http ?? _http, time ?? TimeProvider.System, _logger, destinations ?? DestinationPolicy.AllowAll(_logger));
    }

    async Task<SpooledMessage> SpoolAsync(byte[] bytes, string[]? recipients = null, string mailFrom = "someone@outside.example", string? tenant = Tenant)
    {
        var envelope = NewEnvelope(_spool, TimeProvider.System, recipients ?? ["info@tenant-a.example", "sales@tenant-a.example"], mailFrom, tenant) with { Inbound = true };
        await _spool.CommitAsync(envelope, Segmented(bytes, 1000), CancellationToken.None);
        return (await _spool.LoadAsync(envelope.Id, CancellationToken.None))!;
    }

    /// <summary>8-bit text, a lone dot line and a dot-led line, folded header, trailing white space: nothing may be "fixed".</summary>
    static byte[] TrickyMessage() => Encoding.UTF8.GetBytes(
        "Received: from mx.outside.example ([192.0.2.1])\r\n" +
        "\tby gw.test with ESMTP id 1;  Tue, 1 Jan 2030 12:00:00 +0000\r\n" +
        "From: J\u00f6rg <someone@outside.example>\r\n" +
        "To: info@tenant-a.example\r\n" +
        "Subject : Re: Gr\u00fc\u00dfe   \r\n" +
        "X-Folded: first\r\n   second\r\n" +
        "\r\n" +
        "\u00dcber den Wolken\r\n" +
        ".\r\n" +
        "..two dots\r\n" +
        "trailing   \r\n");

    static InboundRouteConfig WebhookRoute(string url, TimeSpan? timeout = null, string? secretFile = null, string? variable = null) => new()
    {
        Route = InboundRouteKind.Webhook,
        Webhook = new InboundWebhookConfig { Url = url, SecretFile = secretFile, SecretEnvironmentVariable = variable, Timeout = timeout ?? TimeSpan.FromSeconds(10) },
    };

    string WriteSecretFile(string content = "  " + Secret + "\n")
    {
        var path = _dir.Combine("webhook.secret");
        File.WriteAllText(path, content);
        return path;
    }

    static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    // ---------------------------------------------------------------- Drop

    [Fact]
    public async Task Drop_writes_return_path_and_the_exact_bytes_to_the_default_directory()
    {
        var router = NewRouter(route: null);
        var bytes = TrickyMessage();
        var message = await SpoolAsync(bytes);

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.Equal(message.Envelope.Recipients, results.Select(r => r.Recipient));
        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));
        var path = Path.Combine(DataDirectory, "inbound", Tenant, message.Envelope.Id + ".eml");
        var written = await File.ReadAllBytesAsync(path);
        Assert.Equal([.. Encoding.ASCII.GetBytes("Return-Path: <someone@outside.example>\r\n"), .. bytes], written);
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(DataDirectory, "inbound", Tenant, ".tmp")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
    }

    [Fact]
    public async Task Drop_keeps_the_null_sender_and_uses_a_relative_directory_under_the_data_directory()
    {
        var router = NewRouter(new InboundRouteConfig { DropDirectory = "mail/a" });
        var bytes = SampleMessage();
        var message = await SpoolAsync(bytes, ["info@tenant-a.example"], mailFrom: "");

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.Equal(DeliveryOutcome.Delivered, Assert.Single(results).Outcome);
        var written = await File.ReadAllBytesAsync(Path.Combine(DataDirectory, "mail", "a", message.Envelope.Id + ".eml"));
        Assert.Equal([.. Encoding.ASCII.GetBytes("Return-Path: <>\r\n"), .. bytes], written);
    }

    [Fact]
    public async Task Drop_repeated_attempt_overwrites_the_same_file()
    {
        var router = NewRouter(route: null);
        var message = await SpoolAsync(SampleMessage());
        await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);
        await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);
        Assert.Single(Directory.EnumerateFiles(Path.Combine(DataDirectory, "inbound", Tenant)));
    }

    [Fact]
    public async Task Drop_into_an_unwritable_place_is_deferred()
    {
        var blocker = _dir.Combine("not-a-directory");
        await File.WriteAllTextAsync(blocker, "x");
        var router = NewRouter(new InboundRouteConfig { DropDirectory = blocker });
        var message = await SpoolAsync(SampleMessage());

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r =>
        {
            Assert.Equal(DeliveryOutcome.Deferred, r.Outcome);
            Assert.StartsWith("451 4.3.0", r.Reply, StringComparison.Ordinal);
        });
    }

    // ---------------------------------------------------------------- Webhook

    [Fact]
    public async Task Webhook_receives_exact_bytes_envelope_headers_and_a_verifiable_signature()
    {
        await using var receiver = new WebhookReceiver();
        var route = WebhookRoute(receiver.Url + "hooks/inbound?token=abc", secretFile: WriteSecretFile());
        var router = NewRouter(route);
        var bytes = TrickyMessage();
        var message = await SpoolAsync(bytes, ["info@tenant-a.example", "\"odd,name\"@tenant-a.example"], mailFrom: "someone@outside.example");
        var before = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r =>
        {
            Assert.Equal(DeliveryOutcome.Delivered, r.Outcome);
            Assert.Equal("250 2.0.0 Webhook answered 204", r.Reply);
        });
        var request = Assert.Single(receiver.Requests);
        Assert.Equal("POST", request.Method);
        Assert.Equal("/hooks/inbound?token=abc", request.PathAndQuery);
        Assert.Equal(bytes, request.Body);
        Assert.Equal("message/rfc822", request.Headers["Content-Type"]);
        Assert.Equal(Tenant, request.Headers[InboundRouter.TenantHeader]);
        Assert.Equal(message.Envelope.Id, request.Headers[InboundRouter.QueueIdHeader]);
        Assert.Equal("someone@outside.example", request.Headers[InboundRouter.MailFromHeader]);
        var rcpt = request.Headers[InboundRouter.RcptToHeader]!;
        Assert.Equal("info@tenant-a.example,\"odd%2Cname\"@tenant-a.example", rcpt);
        Assert.Equal(message.Envelope.Recipients, rcpt.Split(',').Select(Uri.UnescapeDataString));

        var timestamp = request.Headers[InboundRouter.TimestampHeader]!;
        var seconds = long.Parse(timestamp, CultureInfo.InvariantCulture);
        Assert.InRange(seconds, before, DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        var signature = request.Headers[InboundRouter.SignatureHeader]!;
        Assert.Matches("^v1=[0-9a-f]{64}$", signature);

        var key = Encoding.UTF8.GetBytes(Secret);
        Assert.True(InboundWebhookSignature.Verify(key, timestamp, message.Envelope.Id, request.Body, signature));
        Assert.Equal(signature, InboundWebhookSignature.Compute(key, timestamp, message.Envelope.Id, request.Body));

        // Changed body, timestamp, queue id or key: refused.
        var tampered = request.Body.ToArray();
        tampered[^3] ^= 0x20;
        Assert.False(InboundWebhookSignature.Verify(key, timestamp, message.Envelope.Id, tampered, signature));
        Assert.False(InboundWebhookSignature.Verify(key, (seconds + 1).ToString(CultureInfo.InvariantCulture), message.Envelope.Id, request.Body, signature));
        Assert.False(InboundWebhookSignature.Verify(key, timestamp, "other-id", request.Body, signature));
        Assert.False(InboundWebhookSignature.Verify(Encoding.UTF8.GetBytes(Secret + "x"), timestamp, message.Envelope.Id, request.Body, signature));
        Assert.False(InboundWebhookSignature.Verify(key, timestamp, message.Envelope.Id, request.Body, signature[..^2]));
        Assert.False(InboundWebhookSignature.Verify(key, timestamp, message.Envelope.Id, request.Body, null));
        Assert.False(InboundWebhookSignature.Verify(key, timestamp, message.Envelope.Id, request.Body, "v2=" + signature[3..]));

        AssertSecretNeverLogged();
        Assert.DoesNotContain(_logger.Lines, l => l.Contains("token=abc", StringComparison.Ordinal));
    }

    [Fact]
    public void Signature_construction_is_the_documented_one()
    {
        // HMAC-SHA256("key", "1700000000.Q1.body"), computed independently.
        var expected = "v1=" + Convert.ToHexStringLower(System.Security.Cryptography.HMACSHA256.HashData("key"u8, "1700000000.Q1.body"u8));
        Assert.Equal(expected, InboundWebhookSignature.Compute("key"u8.ToArray(), "1700000000", "Q1", "body"u8));
        Assert.True(InboundWebhookSignature.Verify("key"u8.ToArray(), "1700000000", "Q1", "body"u8, expected.ToUpperInvariant().Replace("V1=", "v1=", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Webhook_null_sender_and_environment_secret_win_over_the_file()
    {
        var variable = "SMTPGW_TEST_INBOUND_SECRET_" + Guid.NewGuid().ToString("N");
        Environment.SetEnvironmentVariable(variable, " from-env ");
        try
        {
            await using var receiver = new WebhookReceiver();
            var router = NewRouter(WebhookRoute(receiver.Url, secretFile: WriteSecretFile(), variable: variable));
            var message = await SpoolAsync(SampleMessage(), ["info@tenant-a.example"], mailFrom: "");

            var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

            Assert.Equal(DeliveryOutcome.Delivered, Assert.Single(results).Outcome);
            var request = Assert.Single(receiver.Requests);
            Assert.Equal("<>", request.Headers[InboundRouter.MailFromHeader]);
            Assert.True(InboundWebhookSignature.Verify("from-env"u8.ToArray(), request.Headers[InboundRouter.TimestampHeader]!, message.Envelope.Id, request.Body, request.Headers[InboundRouter.SignatureHeader]));
            Assert.DoesNotContain(_logger.Lines, l => l.Contains("from-env", StringComparison.Ordinal));
        }
        finally
        {
            Environment.SetEnvironmentVariable(variable, null);
        }
    }

    [Theory]
    [InlineData(500, null)]
    [InlineData(503, null)]
    [InlineData(429, null)]
    [InlineData(408, null)]
    [InlineData(404, "refused")]
    [InlineData(401, "refused")]
    [InlineData(302, "redirect")]
    [InlineData(307, "redirect")]
    public async Task Webhook_non_2xx_is_deferred(int status, string? warning)
    {
        await using var receiver = new WebhookReceiver { Status = status };
        var router = NewRouter(WebhookRoute(receiver.Url, secretFile: WriteSecretFile()));
        var message = await SpoolAsync(SampleMessage());

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.Equal(2, results.Count);
        Assert.All(results, r =>
        {
            Assert.Equal(DeliveryOutcome.Deferred, r.Outcome);
            Assert.Equal($"451 4.4.1 Webhook answered {status}", r.Reply);
        });
        Assert.Single(receiver.Requests);
        var warnings = _logger.Entries.Where(e => e.Level == LogLevel.Warning).Select(e => e.Message).ToArray();
        if (warning is null)
        {
            Assert.Empty(warnings);
        }
        else
        {
            Assert.Contains(warnings, w => w.Contains(warning, StringComparison.Ordinal));
        }

        AssertSecretNeverLogged();
    }

    [Fact]
    public async Task Webhook_timeout_is_deferred()
    {
        // The timeout runs on the router's clock: the receiver holds the request unanswered, and the test moves the fake
        // clock past the 300 ms limit once the request has arrived.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var receiver = new WebhookReceiver { Hold = true };
        var router = NewRouter(WebhookRoute(receiver.Url, timeout: TimeSpan.FromMilliseconds(300), secretFile: WriteSecretFile()), clock);
        var message = await SpoolAsync(SampleMessage());

        var delivery = router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);
        await receiver.Arrived.WaitAsync(TimeSpan.FromSeconds(10));

        clock.Advance(TimeSpan.FromMilliseconds(299));
        Assert.False(delivery.IsCompleted);
        clock.Advance(TimeSpan.FromMilliseconds(1));
        var results = await delivery.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.All(results, r =>
        {
            Assert.Equal(DeliveryOutcome.Deferred, r.Outcome);
            Assert.StartsWith("451 4.4.1 Webhook did not answer within 0.3s", r.Reply, StringComparison.Ordinal);
        });
    }

    [Fact]
    public async Task Webhook_connection_refused_is_deferred()
    {
        var router = NewRouter(WebhookRoute($"http://127.0.0.1:{FreePort()}/hook", secretFile: WriteSecretFile()));
        var message = await SpoolAsync(SampleMessage());

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r =>
        {
            Assert.Equal(DeliveryOutcome.Deferred, r.Outcome);
            Assert.StartsWith("451 4.4.1 Webhook unreachable", r.Reply, StringComparison.Ordinal);
        });
    }

    [Fact]
    public async Task Webhook_without_a_secret_is_deferred_without_a_request()
    {
        await using var receiver = new WebhookReceiver();
        var router = NewRouter(WebhookRoute(receiver.Url, secretFile: _dir.Combine("missing.secret")));
        var message = await SpoolAsync(SampleMessage());

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r => Assert.Equal("451 4.3.5 Inbound webhook secret unavailable", r.Reply));
        Assert.Empty(receiver.Requests);
    }

    [Fact]
    public async Task Webhook_cancellation_throws()
    {
        await using var receiver = new WebhookReceiver { Hold = true };
        var router = NewRouter(WebhookRoute(receiver.Url, secretFile: WriteSecretFile()));
        var message = await SpoolAsync(SampleMessage());
        using var cancel = new CancellationTokenSource();

        var delivery = router.DeliverAsync(message, message.Envelope.Recipients, cancel.Token);
        await receiver.Arrived.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(delivery.IsCompleted);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => delivery);
    }

    [Fact]
    public void Header_values_cannot_carry_line_breaks()
    {
        Assert.Equal("a%0D%0AX-Evil:%201@b.example", InboundRouter.EncodeHeaderValue("a\r\nX-Evil: 1@b.example"));
        Assert.Equal("j%C3%B6rg@b.example", InboundRouter.EncodeHeaderValue("j\u00f6rg@b.example"));
        Assert.Equal("plain.user+tag@b.example", InboundRouter.EncodeHeaderValue("plain.user+tag@b.example"));
        Assert.Equal("100%25@b.example", InboundRouter.EncodeHeaderValue("100%@b.example"));
    }

    // ---------------------------------------------------------------- Forward

    [Fact]
    public async Task Forward_relays_exact_bytes_with_per_recipient_outcomes()
    {
        await using var server = new TestSmtpServer
        {
            RcptReply = r => r.StartsWith("nobody@", StringComparison.Ordinal) ? "550 5.1.1 No such user"
                : r.StartsWith("later@", StringComparison.Ordinal) ? "450 4.2.1 Mailbox busy" : "250 2.1.5 Ok",
        };
        var router = NewRouter(new InboundRouteConfig
        {
            Route = InboundRouteKind.Forward,
            Forward = new InboundForwardConfig { Host = "127.0.0.1", Port = server.Port, HeloName = "gw.test", StartTls = TlsPolicy.Opportunistic },
        });
        var bytes = TrickyMessage();
        var message = await SpoolAsync(bytes, ["info@tenant-a.example", "nobody@tenant-a.example", "later@tenant-a.example"], mailFrom: "someone@outside.example");

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.Equal(message.Envelope.Recipients, results.Select(r => r.Recipient));
        Assert.Equal(DeliveryOutcome.Delivered, results[0].Outcome);
        Assert.Equal(DeliveryOutcome.Bounced, results[1].Outcome);
        Assert.Equal("550 5.1.1 No such user", results[1].Reply);
        Assert.Equal(DeliveryOutcome.Deferred, results[2].Outcome);
        Assert.StartsWith("450 4.2.1", results[2].Reply, StringComparison.Ordinal);
        Assert.Equal($"127.0.0.1[127.0.0.1]:{server.Port}", results[0].RemoteHost);

        var received = Assert.Single(server.Messages);
        Assert.Equal("someone@outside.example", received.MailFrom);
        Assert.Equal(["info@tenant-a.example"], received.Recipients);
        Assert.Equal(bytes, received.Data);
        Assert.Contains("EHLO gw.test", server.Commands);
        Assert.DoesNotContain(server.Commands, c => c.StartsWith("AUTH", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public async Task Forward_keeps_the_null_sender()
    {
        await using var server = new TestSmtpServer();
        var router = NewRouter(new InboundRouteConfig { Route = InboundRouteKind.Forward, Forward = { Host = "127.0.0.1", Port = server.Port, StartTls = TlsPolicy.Opportunistic } });
        var message = await SpoolAsync(SampleMessage(), ["info@tenant-a.example"], mailFrom: "");

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.Equal(DeliveryOutcome.Delivered, Assert.Single(results).Outcome);
        Assert.Equal("", Assert.Single(server.Messages).MailFrom);
        Assert.Contains(server.Commands, c => c.StartsWith("MAIL FROM:<>", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Forward_connection_refused_is_deferred_with_4_4_1()
    {
        var router = NewRouter(new InboundRouteConfig { Route = InboundRouteKind.Forward, Forward = { Host = "127.0.0.1", Port = FreePort() } });
        var message = await SpoolAsync(SampleMessage());

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.Equal(2, results.Count);
        Assert.All(results, r =>
        {
            Assert.Equal(DeliveryOutcome.Deferred, r.Outcome);
            Assert.StartsWith("451 4.4.1", r.Reply, StringComparison.Ordinal);
        });
    }

    [Fact]
    public async Task Forward_greeting_timeout_is_deferred_with_4_4_1()
    {
        // Accepts the connection but never greets.
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var router = NewRouter(new InboundRouteConfig
        {
            Route = InboundRouteKind.Forward,
            Forward = { Host = "127.0.0.1", Port = ((IPEndPoint)silent.LocalEndpoint).Port, ConnectTimeout = TimeSpan.FromMilliseconds(300) },
        });
        var message = await SpoolAsync(SampleMessage());

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r =>
        {
            Assert.Equal(DeliveryOutcome.Deferred, r.Outcome);
            Assert.StartsWith("451 4.4.1", r.Reply, StringComparison.Ordinal);
        });
    }

    [Theory]
    [InlineData(TlsPolicy.Required)]
    [InlineData(null)] // the default is Verify: TLS required with certificate verification
    public async Task Forward_with_required_tls_to_a_plaintext_server_is_deferred_never_sent(TlsPolicy? policy)
    {
        await using var server = new TestSmtpServer();
        var forward = new InboundForwardConfig { Host = "127.0.0.1", Port = server.Port };
        if (policy is { } explicitPolicy)
        {
            forward.StartTls = explicitPolicy;
        }

        Assert.Equal(TlsPolicy.Verify, new InboundForwardConfig().StartTls);
        var router = NewRouter(new InboundRouteConfig { Route = InboundRouteKind.Forward, Forward = forward });
        var message = await SpoolAsync(SampleMessage());

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r =>
        {
            Assert.Equal(DeliveryOutcome.Deferred, r.Outcome);
            Assert.StartsWith("451 4.7.10", r.Reply, StringComparison.Ordinal);
        });
        Assert.Empty(server.Messages);
    }

    // ---------------------------------------------------------------- Destination guard (issue 12)

    [Theory]
    [InlineData("http://127.0.0.1:8080/hook?token=abc", "127.0.0.1", "loopback")]
    [InlineData("https://169.254.169.254/latest/meta-data/?token=abc", "169.254.169.254", "metadata")]
    [InlineData("https://[::ffff:10.1.2.3]/hook?token=abc", "::ffff:10.1.2.3", "private")]
    [InlineData("https://[64:ff9b::a9fe:a9fe]/hook?token=abc", "64:ff9b::a9fe:a9fe", "metadata")]
    public void Webhook_to_a_refused_address_literal_is_a_configuration_error(string url, string literal, string range)
    {
        var tenants = new Dictionary<string, TenantConfig> { [Tenant] = new() { Inbound = WebhookRoute(url, variable: "PATH") } };
        var errors = new List<string>();

        DestinationRanges.CheckTenants(tenants, new DeliveryConfig(), errors);

        var error = Assert.Single(errors);
        Assert.StartsWith($"Tenants:tenant-a:Inbound:Webhook:Url: {literal} is a {range} address, which the destination guard refuses", error, StringComparison.Ordinal);
        Assert.Contains("set Gateway:Delivery:AllowPrivateDestinations to true", error, StringComparison.Ordinal);
        Assert.DoesNotContain("token", error, StringComparison.Ordinal);

        errors.Clear();
        DestinationRanges.CheckTenants(tenants, new DeliveryConfig { AllowPrivateDestinations = true }, errors);
        Assert.Empty(errors);
    }

    [Theory]
    [InlineData("127.0.0.1", "loopback")]
    [InlineData("169.254.169.254", "metadata")]
    [InlineData("::1", "loopback")]
    [InlineData("::ffff:127.0.0.1", "loopback")]
    [InlineData("64:ff9b::7f00:1", "loopback")]
    public async Task Webhook_name_whose_answer_changes_to_a_refused_address_after_validation_is_refused_at_connect(string answer, string range)
    {
        await using var receiver = new WebhookReceiver(anyHost: true);
        var url = $"http://hook.tenant-a.test:{new Uri(receiver.Url).Port}/hook";
        var route = WebhookRoute(url, secretFile: WriteSecretFile());

        // At validation the name is accepted (a name is checked when it is used) and answers a public address...
        var dns = new ChangingResolver(IPAddress.Parse("93.184.216.34"));
        var errors = new List<string>();
        DestinationRanges.CheckTenants(new Dictionary<string, TenantConfig> { [Tenant] = new() { Inbound = route } }, new DeliveryConfig(), errors);
        Assert.Empty(errors);

        // ...then the answer changes (DNS rebinding) to an address where something is listening.
        dns.Answer = [IPAddress.Parse(answer)];
        var policy = new DestinationPolicy(false, _logger, resolver: dns.ResolveAsync);
        using var http = InboundRouter.CreateWebhookClient(policy);
        var router = NewRouter(route, http: http, destinations: policy);
        var message = await SpoolAsync(SampleMessage());

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r =>
        {
            Assert.Equal(DeliveryOutcome.Deferred, r.Outcome);
            Assert.Equal($"451 4.4.3 hook.tenant-a.test resolves only to refused non-public addresses ({range})", r.Reply);
        });
        Assert.Empty(receiver.Requests);
        Assert.Equal(1, dns.Questions);
        Assert.Contains(_logger.Lines, l => l.Contains($"Destination guard: webhook for tenant {Tenant}: hook.tenant-a.test resolves to {IPAddress.Parse(answer)} ({range})", StringComparison.Ordinal));
        AssertSecretNeverLogged();
    }

    [Fact]
    public async Task Webhook_connects_to_the_address_it_checked_once_and_keeps_the_name_for_the_Host_header()
    {
        await using var receiver = new WebhookReceiver(anyHost: true);
        var port = new Uri(receiver.Url).Port;

        // hook.tenant-a.test exists only in this resolver: reaching the receiver proves the socket went to the checked address.
        var dns = new ChangingResolver(IPAddress.Loopback);
        var policy = new DestinationPolicy(true, _logger, resolver: dns.ResolveAsync);
        using var http = InboundRouter.CreateWebhookClient(policy);
        var router = NewRouter(WebhookRoute($"http://hook.tenant-a.test:{port}/hook", secretFile: WriteSecretFile()), http: http, destinations: policy);
        var message = await SpoolAsync(SampleMessage());

        var results = await router.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));
        var request = Assert.Single(receiver.Requests);
        Assert.Equal($"hook.tenant-a.test:{port}", request.Headers["Host"]);
        Assert.Equal(1, dns.Questions);
    }

    [Fact]
    public async Task Forward_to_a_private_address_is_refused_at_validation_and_at_connect_and_nothing_is_sent()
    {
        await using var server = new TestSmtpServer();
        var literal = new InboundRouteConfig { Route = InboundRouteKind.Forward, Forward = { Host = "127.0.0.1", Port = server.Port, StartTls = TlsPolicy.Opportunistic } };
        var named = new InboundRouteConfig { Route = InboundRouteKind.Forward, Forward = { Host = "mail.tenant-a.test", Port = server.Port, StartTls = TlsPolicy.Opportunistic } };
        var errors = new List<string>();
        DestinationRanges.CheckTenants(new Dictionary<string, TenantConfig> { [Tenant] = new() { Inbound = literal }, ["tenant-b"] = new() { Inbound = named } },
            new DeliveryConfig(), errors);
        Assert.StartsWith("Tenants:tenant-a:Inbound:Forward:Host: 127.0.0.1 is a loopback address", Assert.Single(errors), StringComparison.Ordinal);

        var dns = new ChangingResolver(IPAddress.Parse("10.0.0.25"), IPAddress.Loopback);
        var policy = new DestinationPolicy(false, _logger, resolver: dns.ResolveAsync);
        foreach (var (route, host, range) in new[] { (literal, "127.0.0.1", "loopback"), (named, "mail.tenant-a.test", "private") })
        {
            var message = await SpoolAsync(SampleMessage());
            var results = await NewRouter(route, destinations: policy).DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

            Assert.All(results, r =>
            {
                Assert.Equal(DeliveryOutcome.Deferred, r.Outcome);
                Assert.Equal($"451 4.4.3 {host} resolves only to refused non-public addresses ({range})", r.Reply);
            });
        }

        Assert.Equal(0, server.Connections);
        Assert.Equal(1, dns.Questions);
    }

    /// <summary>A resolver whose answer the test changes between validation and delivery, counting the questions.</summary>
    sealed class ChangingResolver(params IPAddress[] answer)
    {
        int _questions;

        public IPAddress[] Answer { get; set; } = answer;

        public int Questions => Volatile.Read(ref _questions);

        public Task<IPAddress[]> ResolveAsync(string host, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _questions);
            return Task.FromResult(Answer);
        }
    }

    // ---------------------------------------------------------------- Validate

    [Fact]
    public void Validate_reports_each_missing_forward_field_with_its_path()
    {
        var errors = new List<string>();
        new InboundRouteConfig { Route = InboundRouteKind.Forward, Forward = { Host = " ", Port = 0, HeloName = "not a name", ConnectTimeout = TimeSpan.Zero } }
            .Validate("Tenants:tenant-a:Inbound", errors, checkFiles: false);

        Assert.Contains(errors, e => e.StartsWith("Tenants:tenant-a:Inbound:Forward:Host: ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:tenant-a:Inbound:Forward:Port: ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:tenant-a:Inbound:Forward:HeloName: ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:tenant-a:Inbound:Forward:ConnectTimeout: ", StringComparison.Ordinal));
        Assert.Equal(4, errors.Count);

        errors.Clear();
        new InboundRouteConfig { Route = InboundRouteKind.Forward, Forward = { Host = "mail.tenant-a.example", Port = 65536 } }.Validate("P", errors, checkFiles: false);
        Assert.Equal(["P:Forward:Port: 65536 is out of range 1-65535."], errors);
    }

    [Fact]
    public void Validate_reports_each_missing_webhook_field_with_its_path()
    {
        var errors = new List<string>();
        new InboundRouteConfig { Route = InboundRouteKind.Webhook, Webhook = { Timeout = TimeSpan.Zero } }.Validate("Tenants:tenant-a:Inbound", errors, checkFiles: true);

        Assert.Contains(errors, e => e.StartsWith("Tenants:tenant-a:Inbound:Webhook:Url: required", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:tenant-a:Inbound:Webhook:SecretFile: a secret is required", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:tenant-a:Inbound:Webhook:Timeout: ", StringComparison.Ordinal));
        Assert.Equal(3, errors.Count);
    }

    [Theory]
    [InlineData("relative/hook")]
    [InlineData("ftp://example.net/hook")]
    [InlineData("mailto:x@example.net")]
    [InlineData("https://user:pw@example.net/hook")]
    public void Validate_refuses_a_webhook_url_that_is_not_absolute_http(string url)
    {
        var errors = new List<string>();
        new InboundRouteConfig { Route = InboundRouteKind.Webhook, Webhook = { Url = url, SecretEnvironmentVariable = "X" } }.Validate("T", errors, checkFiles: false);
        var error = Assert.Single(errors);
        Assert.StartsWith("T:Webhook:Url: ", error, StringComparison.Ordinal);
        Assert.DoesNotContain("pw", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_checks_the_secret_file_only_when_asked()
    {
        var missing = _dir.Combine("nope.secret");
        var config = new InboundRouteConfig { Route = InboundRouteKind.Webhook, Webhook = { Url = "https://hooks.tenant-a.example/in", SecretFile = missing } };

        var errors = new List<string>();
        config.Validate("T", errors, checkFiles: false);
        Assert.Empty(errors);

        config.Validate("T", errors, checkFiles: true);
        Assert.Equal([$"T:Webhook:SecretFile: '{missing}' does not exist."], errors);

        errors.Clear();
        config.Webhook.SecretFile = WriteSecretFile();
        config.Validate("T", errors, checkFiles: true);
        Assert.Empty(errors);
    }

    [Fact]
    public void Validate_accepts_the_default_and_ignores_dormant_sections()
    {
        var errors = new List<string>();
        new InboundRouteConfig().Validate("T", errors, checkFiles: true);
        new InboundRouteConfig { Route = InboundRouteKind.Webhook, Webhook = { Url = "http://127.0.0.1:8080/x", SecretEnvironmentVariable = "PATH" }, Forward = { Port = 0 } }
            .Validate("T", errors, checkFiles: true);
        Assert.Empty(errors);

        new InboundRouteConfig { Route = (InboundRouteKind)42 }.Validate("T", errors, checkFiles: false);
        Assert.Equal(["T:Route: must be one of Drop, Forward, Webhook."], errors);
    }

    void AssertSecretNeverLogged() =>
        Assert.DoesNotContain(_logger.Lines, l => l.Contains(Secret, StringComparison.Ordinal));

    // ---------------------------------------------------------------- helpers

    /// <summary>An HTTP endpoint on a free loopback port (System.Net.HttpListener) recording each request.</summary>
    sealed class WebhookReceiver : IAsyncDisposable
    {
        readonly HttpListener _listener = new();
        readonly CancellationTokenSource _stop = new();
        readonly Task _loop;

        /// <param name="anyHost">Accept any Host header (a name only the test's resolver knows), not only 127.0.0.1.</param>
        public WebhookReceiver(bool anyHost = false)
        {
            for (var attempt = 0; ; attempt++)
            {
                var port = FreePort();
                Url = $"http://127.0.0.1:{port}/";
                _listener.Prefixes.Clear();
                _listener.Prefixes.Add(anyHost ? $"http://*:{port}/" : Url);
                try
                {
                    _listener.Start();
                    break;
                }
                catch (HttpListenerException) when (attempt < 5)
                {
                }
            }

            _loop = Task.Run(LoopAsync);
        }

        public string Url { get; private set; } = "";

        public int Status { get; init; } = 204;

        /// <summary>Holds every request unanswered until the receiver is disposed (a webhook that never answers).</summary>
        public bool Hold { get; init; }

        public ConcurrentQueue<ReceivedRequest> Requests { get; } = new();

        /// <summary>Completes when the first request has arrived (its body read): the moment to move a fake clock or cancel.</summary>
        public Task Arrived => _arrived.Task;

        readonly TaskCompletionSource _arrived = new(TaskCreationOptions.RunContinuationsAsynchronously);

        async Task LoopAsync()
        {
            while (!_stop.IsCancellationRequested)
            {
                HttpListenerContext context;
                try
                {
                    context = await _listener.GetContextAsync();
                }
                catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
                {
                    return;
                }

                _ = Task.Run(() => HandleAsync(context));
            }
        }

        async Task HandleAsync(HttpListenerContext context)
        {
            try
            {
                using var body = new MemoryStream();
                await context.Request.InputStream.CopyToAsync(body);
                var headers = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
                foreach (var name in context.Request.Headers.AllKeys)
                {
                    headers[name!] = context.Request.Headers[name];
                }

                Requests.Enqueue(new ReceivedRequest(context.Request.HttpMethod, context.Request.Url!.PathAndQuery, headers, body.ToArray()));
                _arrived.TrySetResult();
                if (Hold)
                {
                    var released = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    await using (_stop.Token.Register(() => released.TrySetResult()))
                    {
                        await released.Task;
                    }

                    return;
                }

                context.Response.StatusCode = Status;
                if (Status is >= 300 and < 400)
                {
                    context.Response.RedirectLocation = "http://192.0.2.1/elsewhere";
                }

                context.Response.Close();
            }
            catch (Exception e) when (e is HttpListenerException or IOException or OperationCanceledException or ObjectDisposedException or InvalidOperationException)
            {
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Close();
            await _loop;
            _stop.Dispose();
        }
    }

    sealed record ReceivedRequest(string Method, string PathAndQuery, IReadOnlyDictionary<string, string?> Headers, byte[] Body);
}
