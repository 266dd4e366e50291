using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 12's destination guard with the real gateway: Gateway:Delivery:AllowPrivateDestinations is off (only the
/// gateway's own smarthost, the sink on 127.0.0.1, allows itself with Smarthost:AllowPrivateDestinations). tenant-b's
/// inbound route is a webhook at http://localhost:PORT/ and tenant-a's a Forward to localhost: names, so the
/// configuration passes, and the system resolver answers 127.0.0.1 when they are used. An HTTP listener and an SMTP
/// sink really listen there; neither may be reached.
/// </summary>
public sealed class GuardHarness : GatewayHarness
{
    HttpListener? _webhook;
    int _requests;

    public int WebhookPort { get; private set; }

    public int WebhookRequests => Volatile.Read(ref _requests);

    protected override async Task CustomizeAsync(JsonObject config, CancellationToken cancellationToken)
    {
        var delivery = (JsonObject)config["Gateway"]!["Delivery"]!;
        delivery["AllowPrivateDestinations"] = false;
        delivery["Smarthost"]!["AllowPrivateDestinations"] = true;

        WebhookPort = FreePort.Next();
        _webhook = new HttpListener();
        _webhook.Prefixes.Add($"http://localhost:{WebhookPort}/");
        _webhook.Prefixes.Add($"http://127.0.0.1:{WebhookPort}/");
        _webhook.Start();
        _ = ServeAsync(_webhook);
        var secretFile = Path.Combine(WorkDirectory, "webhook.secret");
        await File.WriteAllTextAsync(secretFile, "guard-webhook-secret-0123456789\n", cancellationToken);

        var tenants = (JsonObject)config["Tenants"]!;
        tenants["tenant-b"]!["Inbound"] = new JsonObject
        {
            ["Route"] = "Webhook",
            ["Webhook"] = new JsonObject { ["Url"] = $"http://localhost:{WebhookPort}/inbound", ["SecretFile"] = secretFile, ["Timeout"] = "00:00:05" },
        };
        tenants["tenant-a"]!["Inbound"] = new JsonObject
        {
            ["Route"] = "Forward",
            ["Forward"] = new JsonObject { ["Host"] = "localhost", ["Port"] = Sink.Port, ["StartTls"] = "Opportunistic" },
        };
    }

    async Task ServeAsync(HttpListener listener)
    {
        while (listener.IsListening)
        {
            try
            {
                var context = await listener.GetContextAsync();
                Interlocked.Increment(ref _requests);
                context.Response.StatusCode = 204;
                context.Response.Close();
            }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }
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
    }
}

[Collection(GatewayCollection.Name)]
public sealed class DestinationGuardTests(GuardHarness harness, ITestOutputHelper output) : IClassFixture<GuardHarness>
{
    const string NoTenantNetwork = "127.0.0.3";
    static readonly TimeSpan Wait = TimeSpan.FromSeconds(40);

    [Fact]
    public Task Webhook_and_forward_at_refused_address_literals_are_refused_by_check_config() => harness.RunAsync(output, async () =>
    {
        // Control: the harness's config names its destinations (localhost), so it passes; names are checked when used.
        var bad = await harness.CheckChangedConfigAsync(output, "guard-literals.json", root =>
        {
            root["Tenants"]!["tenant-b"]!["Inbound"]!["Webhook"]!["Url"] = $"http://127.0.0.1:{harness.WebhookPort}/inbound?token=xyz";
            root["Tenants"]!["tenant-a"]!["Inbound"]!["Forward"]!["Host"] = "169.254.169.254";
        });
        Assert.NotEqual(0, bad.ExitCode);
        var lines = bad.StandardError.Split('\n');
        Assert.Contains(lines, l => l.Contains("Tenants:tenant-b:Inbound:Webhook:Url: 127.0.0.1 is a loopback address", StringComparison.Ordinal)
            && l.Contains("Gateway:Delivery:AllowPrivateDestinations", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("Tenants:tenant-a:Inbound:Forward:Host: 169.254.169.254 is a metadata address", StringComparison.Ordinal));
        Assert.DoesNotContain("token=xyz", bad.Output, StringComparison.Ordinal);
    });

    [Fact]
    public Task Webhook_and_forward_to_a_name_resolving_to_loopback_are_deferred_at_connect_and_nothing_is_sent() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var ids = new Dictionary<string, string>();
        foreach (var tenant in new[] { "tenant-a", "tenant-b" })
        {
            var marker = Guid.NewGuid().ToString("N");
            var recipient = $"support-{marker}@{tenant}.example";
            using var smtp = await harness.ConnectRelayFromAsync(NoTenantNetwork, output, cts.Token, "guard.functional.test");
            var reply = await smtp.SendMailAsync("customer@example.org", [recipient], Message(recipient, marker), cts.Token);
            output.WriteLine($"final reply: {reply}");
            Assert.Equal(250, reply.Code);
            ids[tenant] = reply.Lines[0].Split(' ')[^1];
        }

        var webhook = await harness.WaitForEventsAsync("tenant-b", es => es.Any(e => e.Id == ids["tenant-b"] && e.Event == "deferred"), Wait, cts.Token);
        var deferred = webhook.First(e => e.Id == ids["tenant-b"] && e.Event == "deferred");
        Assert.Equal("451 4.4.3 localhost resolves only to refused non-public addresses (loopback)", deferred.Reply);
        Assert.Equal(0, harness.WebhookRequests);

        var forward = await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == ids["tenant-a"] && e.Event == "deferred"), Wait, cts.Token);
        Assert.Equal("451 4.4.3 localhost resolves only to refused non-public addresses (loopback)",
            forward.First(e => e.Id == ids["tenant-a"] && e.Event == "deferred").Reply);
        Assert.DoesNotContain(harness.Sink.Messages(), m => m.RcptArgs.Any(r => r.Contains(ids["tenant-a"], StringComparison.Ordinal) || r.Contains("@tenant-a.example", StringComparison.Ordinal)));

        Assert.Contains("Destination guard: webhook for tenant tenant-b: localhost resolves to", harness.Diagnostics(), StringComparison.Ordinal);
        Assert.Contains("Destination guard: forward for tenant tenant-a: localhost resolves to", harness.Diagnostics(), StringComparison.Ordinal);
    });

    static byte[] Message(string to, string marker) => Encoding.ASCII.GetBytes(
        "From: <customer@example.org>\r\n" +
        $"To: <{to}>\r\n" +
        $"Subject: destination guard {marker}\r\n" +
        $"Message-ID: <{marker}@customer.example.org>\r\n" +
        "Date: Sat, 28 Nov 2026 10:00:01 +0000\r\n" +
        "\r\n" +
        "Hello.\r\n");
}
