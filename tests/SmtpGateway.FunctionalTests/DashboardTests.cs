using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Playwright;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 13, dashboard: the real gateway and smtp-sink, mail from both demo tenants, then the page at / in headless Chromium
/// (Debian's chromium, driven by Playwright's bundled driver; no browser is downloaded): the operator key typed into its
/// form, both tenants shown with non-zero counts, and a screenshot kept in TestResults/dashboard.png.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class DashboardTests(GatewayHarness harness, ITestOutputHelper output) : IClassFixture<GatewayHarness>
{
    const string Chromium = "/usr/bin/chromium";
    static readonly string[] Tenants = ["tenant-a", "tenant-b"];
    static readonly Dictionary<string, string> Networks = new() { ["tenant-a"] = "127.0.0.1", ["tenant-b"] = "127.0.0.2" };

    static byte[] Message(string from, string recipient, string subject) => Encoding.ASCII.GetBytes(
        $"From: <{from}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\nMessage-ID: <{Guid.NewGuid():N}@dashboard.functional.test>\r\n\r\nbody\r\n");

    [Fact]
    public Task Page_in_headless_chromium_shows_both_demo_tenants_with_counts_after_traffic() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var sent = new Dictionary<string, int> { ["tenant-a"] = 3, ["tenant-b"] = 2 };
        var recipients = new List<string>();
        foreach (var tenant in Tenants)
        {
            using var smtp = await harness.ConnectRelayFromAsync(Networks[tenant], output, cts.Token);
            var sender = $"app@{tenant}.example";
            for (var i = 0; i < sent[tenant]; i++)
            {
                var recipient = $"dash-{tenant}-{i}-{Guid.NewGuid():N}@example.net";
                var reply = await smtp.SendMailAsync(sender, [recipient], Message(sender, recipient, $"{tenant} #{i}"), cts.Token);
                Assert.Equal(250, reply.Code);
                recipients.Add(recipient);
            }
        }

        // One refused cross-tenant attempt: tenant-a's client claiming a tenant-b sender.
        using (var smtp = await harness.ConnectRelayFromAsync(Networks["tenant-a"], output, cts.Token))
        {
            var refused = await smtp.StepAsync("MAIL FROM:<ceo@tenant-b.example>", output, cts.Token);
            Assert.Equal(5, refused.Code / 100);
        }

        await harness.Sink.WaitAsync(ms => recipients.All(r => ms.Any(m => m.RcptArgs.Contains($"<{r}>"))), TimeSpan.FromSeconds(60), cts.Token);

        // The API first: operator only, and the numbers the page will draw.
        using (var anonymous = harness.AdminClient(null))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/api/v1/dashboard", cts.Token)).StatusCode);
        }

        var tenantKey = await harness.SmtpgwAsync("admin", "key", "create", "--tenant", "tenant-a", "--config", harness.ConfigPath, "--description", "dashboard test");
        Assert.True(tenantKey.ExitCode == 0, tenantKey.ToString());
        using (var tenantClient = harness.AdminClient(tenantKey.StandardOutput.Trim()))
        {
            var refused = await tenantClient.GetAsync("/api/v1/dashboard", cts.Token);
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
        }

        using var operatorClient = harness.AdminClient(harness.OperatorKey);
        // Outcomes are counted when the sink's 250 comes back, a moment after the sink has the message.
        JsonObject data;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            data = JsonNode.Parse(await operatorClient.GetStringAsync("/api/v1/dashboard", cts.Token))!.AsObject();
            if (Tenants.All(t => Total(data, t, "delivered") >= sent[t]) || clock.Elapsed > TimeSpan.FromSeconds(30))
            {
                break;
            }

            await Task.Delay(100, cts.Token);
        }

        output.WriteLine(data.ToJsonString());
        foreach (var tenant in Tenants)
        {
            Assert.Equal(sent[tenant], Total(data, tenant, "delivered"));
        }

        var refusal = Assert.Single(data["crossTenantRefusals"]!.AsArray());
        Assert.Equal("tenant-a", (string?)refusal!["tenant"]);
        Assert.Equal("send-as", (string?)refusal["action"]);
        Assert.Null(refusal["subject"]); // the refused address stays in the audit log, off the page

        // Accepted comes from smtpgw.messages.accepted: under each tenant where the counter carries the tenant label, under
        // "(unknown)" where it does not; either way every 250 is counted once.
        Assert.Equal(sent.Values.Sum(), data["tenants"]!.AsArray().Sum(t => t!["totals"]!["accepted"]!.GetValue<long>()));

        // The page: anonymous, locked to its own origin, no inline script.
        using var page = await operatorClient.GetAsync("/", cts.Token);
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.StartsWith("default-src 'self'", page.Headers.GetValues("Content-Security-Policy").Single(), StringComparison.Ordinal);

        await BrowseAsync(sent);
    });

    static long Total(JsonObject data, string tenant, string counter) =>
        data["tenants"]!.AsArray().Single(t => (string?)t!["tenant"] == tenant)!["totals"]![counter]!.GetValue<long>();

    async Task BrowseAsync(Dictionary<string, int> sent)
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: apt-get install chromium (test.sh does)");
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = Chromium, Headless = true });
        var context = await browser.NewContextAsync(new() { ViewportSize = new() { Width = 1280, Height = 900 } });
        var page = await context.NewPageAsync();

        // A blocked script or stylesheet (a CSP violation, a missing file) shows up as a console error.
        var problems = new List<string>();
        page.Console += (_, message) =>
        {
            if (message.Type == "error")
            {
                problems.Add($"{message.Text} ({message.Location})");
            }
        };
        page.PageError += (_, error) => problems.Add(error);
        var outside = new List<string>();
        var origin = harness.AdminUrl.GetLeftPart(UriPartial.Authority);
        page.Request += (_, request) =>
        {
            if (!request.Url.StartsWith(origin, StringComparison.Ordinal))
            {
                outside.Add(request.Url);
            }
        };

        await page.GotoAsync(harness.AdminUrl.ToString());
        await page.FillAsync("#key", harness.OperatorKey);
        await page.ClickAsync("#open");

        foreach (var tenant in Tenants)
        {
            var delivered = page.Locator($"article[data-tenant='{tenant}'] .total[data-counter='delivered']");
            await Assertions.Expect(delivered).ToHaveTextAsync(sent[tenant].ToString(System.Globalization.CultureInfo.InvariantCulture), new() { Timeout = 15_000 });
            var accepted = await page.Locator($"article[data-tenant='{tenant}'] .total[data-counter='accepted']").TextContentAsync();
            output.WriteLine($"page: {tenant} accepted {accepted}, delivered {await delivered.TextContentAsync()}");
            Assert.Equal(4, await page.Locator($"article[data-tenant='{tenant}'] svg.spark polyline").CountAsync());
        }

        var row = page.Locator("#refusals tbody tr");
        await Assertions.Expect(row).ToHaveCountAsync(1);
        Assert.Equal("tenant-a", await row.Locator("td").Nth(1).TextContentAsync());

        // The key stays in this tab's sessionStorage, never in the page's address or a cookie.
        Assert.Equal(harness.OperatorKey, await page.EvaluateAsync<string>("() => sessionStorage.getItem('smtpgw.operatorKey')"));
        Assert.Empty(await context.CookiesAsync());
        Assert.DoesNotContain(harness.OperatorKey, page.Url, StringComparison.Ordinal);

        var screenshot = Path.Combine(RepoPaths.Root, "TestResults", "dashboard.png");
        Directory.CreateDirectory(Path.GetDirectoryName(screenshot)!);
        await page.ScreenshotAsync(new() { Path = screenshot, FullPage = true });
        output.WriteLine($"screenshot: {screenshot}");

        foreach (var problem in problems)
        {
            output.WriteLine($"browser: {problem}");
        }

        Assert.Empty(problems);
        Assert.Empty(outside);
    }
}
