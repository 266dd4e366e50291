using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 7 with real peers: tenant-a's mail goes out through a private Postfix that bounces it, so its bounce(8) daemon
/// writes a real DSN and relays it back to the gateway (from 127.0.0.3, nobody's network); tenant-b's mail goes to
/// smtp-sink; tenant-b's inbound route is an HTTP webhook served by this fixture.
/// </summary>
public sealed class EnvelopeHarness : GatewayHarness
{
    public const string BouncedDomain = "bounce.test";
    public const string WebhookSecret = "functional-webhook-secret-0123456789";

    PostfixInstance? _postfix;
    HttpListener? _webhook;
    readonly List<WebhookRequest> _requests = [];

    internal PostfixInstance Postfix => _postfix ?? throw new InvalidOperationException("not started");

    public int WebhookPort { get; private set; }

    internal IReadOnlyList<WebhookRequest> WebhookRequests
    {
        get
        {
            lock (_requests)
            {
                return [.. _requests];
            }
        }
    }

    protected override async Task CustomizeAsync(JsonObject config, CancellationToken cancellationToken)
    {
        _postfix = await PostfixInstance.StartAsync(new PostfixInstanceOptions
        {
            RelayPort = RelayPort,
            RelayDomains = ["bounces.tenant-a.example"],
            BouncedDomains = [BouncedDomain],
            BounceStatus = "5.1.1",
            BounceText = "mailbox unavailable",

            // The DSN must reach the gateway as inbound mail: from an address no tenant's network contains.
            MainCf = new Dictionary<string, string> { ["smtp_bind_address"] = "127.0.0.3" },
        }, cancellationToken);

        WebhookPort = FreePort.Next();
        _webhook = new HttpListener();
        _webhook.Prefixes.Add($"http://127.0.0.1:{WebhookPort}/");
        _webhook.Start();
        _ = ServeWebhookAsync(_webhook);
        var secretFile = Path.Combine(WorkDirectory, "webhook.secret");
        await File.WriteAllTextAsync(secretFile, WebhookSecret + "\n", cancellationToken);

        var tenants = (JsonObject)config["Tenants"]!;
        var a = (JsonObject)tenants["tenant-a"]!;
        a["Egress"] = new JsonObject { ["Smarthost"] = new JsonObject { ["Host"] = "127.0.0.1", ["Port"] = Postfix.Port } };
        a["Reputation"] = new JsonObject { ["MaxBounceRate"] = 0.5, ["MinimumVolume"] = 1000 };
        var b = (JsonObject)tenants["tenant-b"]!;
        b["Inbound"] = new JsonObject
        {
            ["Route"] = "Webhook",
            ["Webhook"] = new JsonObject { ["Url"] = $"http://127.0.0.1:{WebhookPort}/inbound?k=1", ["SecretFile"] = secretFile, ["Timeout"] = "00:00:10" },
        };
    }

    async Task ServeWebhookAsync(HttpListener listener)
    {
        while (listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await listener.GetContextAsync();
            }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }

            using var body = new MemoryStream();
            await context.Request.InputStream.CopyToAsync(body);
            var headers = context.Request.Headers.AllKeys.Where(k => k is not null).ToDictionary(k => k!, k => context.Request.Headers[k] ?? "", StringComparer.OrdinalIgnoreCase);
            lock (_requests)
            {
                _requests.Add(new WebhookRequest(context.Request.HttpMethod, context.Request.Url?.PathAndQuery ?? "", context.Request.ContentType, headers, body.ToArray()));
            }

            context.Response.StatusCode = 204;
            context.Response.Close();
        }
    }

    protected override void DisposePeers()
    {
        base.DisposePeers();
        try
        {
            _webhook?.Stop();
            _webhook?.Close();
        }
        catch (ObjectDisposedException)
        {
        }

        _postfix?.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    protected override IEnumerable<(string Name, string Output)> PeerOutputs() =>
        _postfix is null ? base.PeerOutputs() : base.PeerOutputs().Append(("postfix", _postfix.Diagnostics()));
}

internal sealed record WebhookRequest(string Method, string PathAndQuery, string? ContentType, IReadOnlyDictionary<string, string> Headers, byte[] Body);

[Collection(GatewayCollection.Name)]
public sealed class EnvelopeIsolationTests(EnvelopeHarness harness, ITestOutputHelper output) : IClassFixture<EnvelopeHarness>
{
    const string NoTenantNetwork = "127.0.0.3";
    const string TenantANetwork = "127.0.0.1";
    const string TenantBNetwork = "127.0.0.2";
    static readonly TimeSpan Wait = TimeSpan.FromSeconds(40);
    static readonly Regex VerpShape = new(@"^<b\+[0-9a-f]{20}\.[0-9a-f]{8}\.[a-z0-9][a-z2-7]{16}@bounces\.tenant-b\.example>", RegexOptions.CultureInvariant);

    [Fact]
    public Task Return_path_is_the_tenants_VERP_address_and_spoofed_headers_are_removed() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        var marker = Guid.NewGuid().ToString("N");
        var recipient = $"spoof-{marker}@example.net";
        using var smtp = await ConnectFromAsync(TenantBNetwork, cts.Token);
        var content = Encoding.ASCII.GetBytes(
            "From: App <app@tenant-b.example>\r\n" +
            $"To: <{recipient}>\r\n" +
            "X-Tenant: tenant-a\r\n" +
            "X-Tenant-Id : tenant-a\r\n" +
            "Return-Path: <postmaster@tenant-a.example>\r\n" +
            "Bcc: hidden@example.org\r\n" +
            $"Subject: spoof {marker}\r\n" +
            "\r\n" +
            "X-Tenant: tenant-a (body text is not a header)\r\n");
        var reply = await smtp.SendMailAsync("app@tenant-b.example", [recipient], content, cts.Token);
        output.WriteLine($"final reply: {reply}");
        Assert.Equal(250, reply.Code);

        var messages = await harness.Sink.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{recipient}>")), Wait, cts.Token);
        var message = Assert.Single(messages, m => m.RcptArgs.Contains($"<{recipient}>"));
        output.WriteLine($"MAIL FROM args: {message.MailArgs}\n{message.Content}");

        // The reverse-path is tenant-b's own VERP address (the header "X-Tenant: tenant-a" changed nothing)...
        Assert.Matches(VerpShape, message.MailArgs);
        var header = message.Content[..message.Content.IndexOf("\n\n", StringComparison.Ordinal)];
        Assert.DoesNotContain("X-Tenant", header, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Return-Path", header, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Bcc", header, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("tenant-a", header, StringComparison.OrdinalIgnoreCase);

        // ...a Message-ID was added (the client sent none), and the body is untouched.
        Assert.Matches(@"^<[0-9A-F]{20}\.[0-9a-f]{16}@tenant-b\.example>$", message.Header("Message-ID") ?? "");
        Assert.Contains("X-Tenant: tenant-a (body text is not a header)", message.Content, StringComparison.Ordinal);

        // The event log keeps the original sender and names the return path used.
        var delivered = await EventAsync("tenant-b", e => e["event"]?.GetValue<string>() == "delivered" && e["recipient"]?.GetValue<string>() == recipient, cts.Token);
        Assert.Equal("app@tenant-b.example", delivered["from"]!.GetValue<string>());
        Assert.Equal(message.MailArgs.Split(' ')[0], $"<{delivered["returnPath"]!.GetValue<string>()}>");
    });

    [Fact]
    public Task A_forged_or_guessed_return_path_is_refused_at_RCPT() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var smtp = await ConnectFromAsync(NoTenantNetwork, cts.Token);
        Assert.Equal(250, (await Step(smtp, "MAIL FROM:<>", cts.Token)).Code);
        foreach (var forged in new[]
                 {
                     "b+01a222a9aa8d62da87bb.0badbeef.aaaaaaaaaaaaaaaaa@bounces.tenant-a.example",
                     "b+anything@bounces.tenant-a.example",
                     "bounces@bounces.tenant-a.example",
                 })
        {
            var refused = await Step(smtp, $"RCPT TO:<{forged}>", cts.Token);
            Assert.Equal(550, refused.Code);
            Assert.StartsWith("5.1.1 ", refused.Lines[0], StringComparison.Ordinal);
        }

        var unknown = await Step(smtp, "RCPT TO:<x@no-such-tenant.example>", cts.Token);
        Assert.Equal(554, unknown.Code);
        Assert.StartsWith("5.7.1 ", unknown.Lines[0], StringComparison.Ordinal);
    });

    [Fact]
    public Task A_real_Postfix_DSN_is_attributed_and_suppresses_the_recipient_for_the_sending_tenant_only() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var marker = Guid.NewGuid().ToString("N");
        var gone = $"gone-{marker}@{EnvelopeHarness.BouncedDomain}";

        // tenant-a's mail goes to Postfix (its smarthost), which accepts and then bounces it with a DSN to the VERP return path.
        using (var a = await ConnectFromAsync(TenantANetwork, cts.Token))
        {
            var reply = await a.SendMailAsync("news@tenant-a.example", [gone], Message("news@tenant-a.example", gone, marker), cts.Token);
            output.WriteLine($"tenant-a final reply: {reply}");
            Assert.Equal(250, reply.Code);
        }

        var bounced = await EventAsync("tenant-a", e => e["event"]?.GetValue<string>() == "bounced" && e["source"]?.GetValue<string>() == "report"
                                                         && e["recipient"]?.GetValue<string>() == gone, cts.Token);
        output.WriteLine("event: " + bounced.ToJsonString());
        Assert.StartsWith("5.1.1", bounced["reply"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.True(bounced["suppressed"]?.GetValue<bool>());
        var log = harness.Postfix.Log;
        output.WriteLine(log);
        Assert.Contains("sender non-delivery notification", log, StringComparison.Ordinal);

        // The original message named in the event is the one tenant-a sent.
        var sent = await EventAsync("tenant-a", e => e["event"]?.GetValue<string>() == "delivered" && e["recipient"]?.GetValue<string>() == gone, cts.Token);
        Assert.Equal(sent["id"]!.GetValue<string>(), bounced["id"]!.GetValue<string>());

        // Now tenant-a may not mail that address; tenant-b still may (and its message arrives at smtp-sink).
        using (var a = await ConnectFromAsync(TenantANetwork, cts.Token))
        {
            Assert.Equal(250, (await Step(a, "MAIL FROM:<news@tenant-a.example>", cts.Token)).Code);
            var refused = await Step(a, $"RCPT TO:<{gone}>", cts.Token);
            Assert.Equal(550, refused.Code);
            Assert.StartsWith("5.7.1 ", refused.Lines[0], StringComparison.Ordinal);
            Assert.Contains("suppression", refused.Text, StringComparison.OrdinalIgnoreCase);
        }

        await EventAsync("tenant-a", e => e["event"]?.GetValue<string>() == "suppressed" && e["recipient"]?.GetValue<string>() == gone, cts.Token);

        using (var b = await ConnectFromAsync(TenantBNetwork, cts.Token))
        {
            var reply = await b.SendMailAsync("app@tenant-b.example", [gone], Message("app@tenant-b.example", gone, marker), cts.Token);
            Assert.Equal(250, reply.Code);
        }

        await harness.Sink.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{gone}>")), Wait, cts.Token);

        var list = await harness.SmtpgwAsync("suppression", "list", "--config", harness.ConfigPath, "--tenant", "tenant-a", "--json");
        output.WriteLine(list.ToString());
        Assert.Equal(0, list.ExitCode);
        Assert.Contains(gone, list.StandardOutput, StringComparison.Ordinal);
        var listB = await harness.SmtpgwAsync("suppression", "list", "--config", harness.ConfigPath, "--tenant", "tenant-b", "--json");
        Assert.DoesNotContain(gone, listB.StandardOutput, StringComparison.Ordinal);

        // The operator lifts it; a running gateway sees that within about a second.
        var removed = await harness.SmtpgwAsync("suppression", "remove", "--config", harness.ConfigPath, "--tenant", "tenant-a", "--address", gone);
        Assert.Equal(0, removed.ExitCode);
        var clock = Stopwatch.StartNew();
        while (true)
        {
            using var a = await ConnectFromAsync(TenantANetwork, cts.Token);
            Assert.Equal(250, (await Step(a, "MAIL FROM:<news@tenant-a.example>", cts.Token)).Code);
            var rcpt = await Step(a, $"RCPT TO:<{gone}>", cts.Token);
            if (rcpt.Code == 250)
            {
                break;
            }

            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"still refused {clock.Elapsed} after `suppression remove`: {rcpt}");
            await Task.Delay(200, cts.Token);
        }
    });

    [Fact]
    public Task An_ARF_complaint_sent_to_the_return_path_is_attributed_and_suppresses() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        var marker = Guid.NewGuid().ToString("N");
        var complainer = $"angry-{marker}@example.net";

        // tenant-b's message reaches smtp-sink; its reverse-path is what a feedback loop answers to.
        using (var b = await ConnectFromAsync(TenantBNetwork, cts.Token))
        {
            var reply = await b.SendMailAsync("app@tenant-b.example", [complainer], Message("app@tenant-b.example", complainer, marker), cts.Token);
            Assert.Equal(250, reply.Code);
        }

        var sent = Assert.Single(await harness.Sink.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{complainer}>")), Wait, cts.Token),
            m => m.RcptArgs.Contains($"<{complainer}>"));
        var returnPath = Regex.Match(sent.MailArgs, "^<([^>]+)>").Groups[1].Value;
        output.WriteLine("return path: " + returnPath);

        // RFC 5965 section 2: multipart/report; report-type=feedback-report, with the original message's header.
        var original = sent.Content[..sent.Content.IndexOf("\n\n", StringComparison.Ordinal)].Replace("\n", "\r\n", StringComparison.Ordinal);
        var arf = Encoding.ASCII.GetBytes(
            "From: Feedback Loop <fbl@isp.example.net>\r\n" +
            $"To: <{returnPath}>\r\n" +
            "Subject: FW: complaint\r\n" +
            "MIME-Version: 1.0\r\n" +
            $"Message-ID: <arf-{marker}@isp.example.net>\r\n" +
            "Content-Type: multipart/report; report-type=feedback-report; boundary=\"arf\"\r\n" +
            "\r\n" +
            "--arf\r\n" +
            "Content-Type: text/plain\r\n" +
            "\r\n" +
            "This is an email abuse report for an email message received from IP 127.0.0.1.\r\n" +
            "--arf\r\n" +
            "Content-Type: message/feedback-report\r\n" +
            "\r\n" +
            "Feedback-Type: abuse\r\n" +
            "User-Agent: FunctionalTest-FBL/1.0\r\n" +
            "Version: 1\r\n" +
            $"Original-Mail-From: <{returnPath}>\r\n" +
            $"Original-Rcpt-To: <{complainer}>\r\n" +
            "Reported-Domain: tenant-b.example\r\n" +
            "\r\n" +
            "--arf\r\n" +
            "Content-Type: text/rfc822-headers\r\n" +
            "\r\n" +
            original + "\r\n" +
            "--arf--\r\n");
        using (var isp = await ConnectFromAsync(NoTenantNetwork, cts.Token))
        {
            var reply = await isp.SendMailAsync("fbl@isp.example.net", [returnPath], arf, cts.Token);
            output.WriteLine($"report final reply: {reply}");
            Assert.Equal(250, reply.Code);
        }

        var complained = await EventAsync("tenant-b", e => e["event"]?.GetValue<string>() == "complained" && e["recipient"]?.GetValue<string>() == complainer, cts.Token);
        output.WriteLine("event: " + complained.ToJsonString());
        Assert.Equal("abuse", complained["feedbackType"]!.GetValue<string>());
        Assert.Equal("report", complained["source"]!.GetValue<string>());
        Assert.True(complained["suppressed"]?.GetValue<bool>());

        using var b2 = await ConnectFromAsync(TenantBNetwork, cts.Token);
        Assert.Equal(250, (await Step(b2, "MAIL FROM:<app@tenant-b.example>", cts.Token)).Code);
        Assert.Equal(550, (await Step(b2, $"RCPT TO:<{complainer}>", cts.Token)).Code);
    });

    [Fact]
    public Task Inbound_mail_for_a_webhook_tenant_is_posted_with_a_verifiable_signature() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var marker = Guid.NewGuid().ToString("N");
        var recipient = $"support-{marker}@tenant-b.example";
        var content = Message("customer@example.org", recipient, marker);
        string queueId;
        using (var smtp = await ConnectFromAsync(NoTenantNetwork, cts.Token))
        {
            var reply = await smtp.SendMailAsync("customer@example.org", [recipient], content, cts.Token);
            output.WriteLine($"final reply: {reply}");
            Assert.Equal(250, reply.Code);
            queueId = reply.Lines[0].Split(' ')[^1];
        }

        var clock = Stopwatch.StartNew();
        WebhookRequest? request;
        while ((request = harness.WebhookRequests.FirstOrDefault(r => r.Headers.TryGetValue("X-Smtpgw-Queue-Id", out var id) && id == queueId)) is null)
        {
            Assert.True(clock.Elapsed < Wait, "the webhook was never called");
            await Task.Delay(100, cts.Token);
        }

        Assert.Equal("POST", request.Method);
        Assert.Equal("/inbound?k=1", request.PathAndQuery);
        Assert.Equal("message/rfc822", request.ContentType);
        Assert.Equal("tenant-b", request.Headers["X-Smtpgw-Tenant"]);
        Assert.Contains(recipient, Uri.UnescapeDataString(request.Headers["X-Smtpgw-Rcpt-To"]), StringComparison.Ordinal);

        // The body is the message as received (our Received on top), byte for byte.
        var body = Encoding.ASCII.GetString(request.Body);
        Assert.StartsWith("Received: ", body, StringComparison.Ordinal);
        Assert.EndsWith(Encoding.ASCII.GetString(content), body, StringComparison.Ordinal);

        // The signature verifies with the tenant's secret, computed independently of the gateway's code.
        var timestamp = request.Headers["X-Smtpgw-Timestamp"];
        var signed = Encoding.UTF8.GetBytes($"{timestamp}.{queueId}.").Concat(request.Body).ToArray();
        var expected = "v1=" + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(EnvelopeHarness.WebhookSecret), signed));
        Assert.Equal(expected, request.Headers["X-Smtpgw-Signature"]);
        Assert.True(Math.Abs(DateTimeOffset.UtcNow.ToUnixTimeSeconds() - long.Parse(timestamp, System.Globalization.CultureInfo.InvariantCulture)) < 120);

        // The secret is never written to the gateway's output.
        Assert.DoesNotContain(EnvelopeHarness.WebhookSecret, harness.Diagnostics(), StringComparison.Ordinal);
    });

    [Fact]
    public Task Return_path_key_rotation_on_a_running_gateway_keeps_old_tags_valid() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        async Task<string> SendAsync(string marker)
        {
            var recipient = $"rot-{marker}@example.net";
            using (var b = await ConnectFromAsync(TenantBNetwork, cts.Token))
            {
                Assert.Equal(250, (await b.SendMailAsync("app@tenant-b.example", [recipient], Message("app@tenant-b.example", recipient, marker), cts.Token)).Code);
            }

            var sent = Assert.Single(await harness.Sink.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{recipient}>")), Wait, cts.Token),
                m => m.RcptArgs.Contains($"<{recipient}>"));
            return Regex.Match(sent.MailArgs, "^<([^>]+)>").Groups[1].Value;
        }

        var before = await SendAsync(Guid.NewGuid().ToString("N"));
        var rotated = await harness.SmtpgwAsync("verp", "rotate-key", "--config", harness.ConfigPath, "--tenant", "tenant-b", "--grace", "1d");
        output.WriteLine(rotated.ToString());
        Assert.Equal(0, rotated.ExitCode);
        var newKey = Regex.Match(rotated.StandardOutput, "now use key '(.)'").Groups[1].Value;
        Assert.NotEqual(before.Split('.')[2][0].ToString(), newKey);

        // The running gateway picks the new key up within about a second.
        var clock = Stopwatch.StartNew();
        string after;
        while ((after = await SendAsync(Guid.NewGuid().ToString("N"))).Split('.')[2][0].ToString() != newKey)
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"still signing with the old key: {after}");
            await Task.Delay(300, cts.Token);
        }

        // Both the old and the new return path are still valid recipients for a bounce.
        using var isp = await ConnectFromAsync(NoTenantNetwork, cts.Token);
        Assert.Equal(250, (await Step(isp, "MAIL FROM:<>", cts.Token)).Code);
        Assert.Equal(250, (await Step(isp, $"RCPT TO:<{before}>", cts.Token)).Code);
        Assert.Equal(250, (await Step(isp, $"RCPT TO:<{after}>", cts.Token)).Code);
        Assert.Equal(250, (await Step(isp, "RSET", cts.Token)).Code);
    });

    [Fact]
    public Task Queue_paused_and_resume_answer_for_a_tenant_that_is_not_paused() => harness.RunAsync(output, async () =>
    {
        var paused = await harness.SmtpgwAsync("queue", "paused", "--config", harness.ConfigPath);
        output.WriteLine(paused.ToString());
        Assert.Equal(0, paused.ExitCode);
        Assert.Contains("no tenant is paused", paused.StandardError, StringComparison.Ordinal);
        var resume = await harness.SmtpgwAsync("queue", "resume", "--config", harness.ConfigPath, "--tenant", "tenant-a");
        Assert.Equal(1, resume.ExitCode);
        Assert.Contains("tenant-a is not paused", resume.StandardError, StringComparison.Ordinal);
        var unknown = await harness.SmtpgwAsync("suppression", "list", "--config", harness.ConfigPath, "--tenant", "nobody");
        Assert.Equal(2, unknown.ExitCode);
        Assert.Contains("unknown tenant 'nobody'", unknown.StandardError, StringComparison.Ordinal);
    });

    async Task<JsonObject> EventAsync(string tenant, Func<JsonObject, bool> match, CancellationToken cancellationToken)
    {
        var path = Path.Combine(harness.DataDirectory, "events", tenant + ".jsonl");
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (File.Exists(path))
            {
                foreach (var line in await File.ReadAllLinesAsync(path, cancellationToken))
                {
                    if (line.Length > 0 && JsonNode.Parse(line) is JsonObject e && match(e))
                    {
                        return e;
                    }
                }
            }

            if (clock.Elapsed > Wait)
            {
                throw new TimeoutException($"no matching event in {path} within {Wait}:\n{(File.Exists(path) ? await File.ReadAllTextAsync(path, cancellationToken) : "(no file)")}");
            }

            await Task.Delay(100, cancellationToken);
        }
    }

    Task<RawSmtpClient> ConnectFromAsync(string source, CancellationToken cancellationToken) =>
        harness.ConnectRelayFromAsync(source, output, cancellationToken, "envelope.functional.test");

    Task<SmtpReply> Step(RawSmtpClient smtp, string command, CancellationToken cancellationToken) => smtp.StepAsync(command, output, cancellationToken);

    static byte[] Message(string from, string to, string marker) => Encoding.ASCII.GetBytes(
        $"From: <{from}>\r\n" +
        $"To: <{to}>\r\n" +
        $"Subject: envelope isolation {marker}\r\n" +
        $"Message-ID: <{marker}@app.functional.test>\r\n" +
        "Date: Sat, 28 Nov 2026 10:00:01 +0000\r\n" +
        "\r\n" +
        "Hello.\r\n");
}
