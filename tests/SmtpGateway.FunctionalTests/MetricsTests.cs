using System.Text;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 13: <c>/metrics</c> on the admin endpoint of the real gateway process, scraped before and after real traffic from
/// two tenants (tenant-a with an AUTH token on the implicit-TLS listener, tenant-b by client network on the relay
/// listener): counters and histogram counts move by exactly what was sent, under the right tenant label, and nothing the
/// client chose (EHLO name, addresses, AUTH user name, header From) becomes a label value. tenant-a signs with an
/// Ed25519 key made for the test and tries one cross-tenant MAIL FROM.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class MetricsTests(GatewayHarness harness, ITestOutputHelper output) : IClassFixture<GatewayHarness>
{
    const string TenantA = "tenant-a";
    const string TenantB = "tenant-b";
    const string TenantBNetwork = "127.0.0.2";

    static byte[] Message(string from, string recipient, string subject) => Encoding.ASCII.GetBytes(
        $"From: <{from}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\nMessage-ID: <{Guid.NewGuid():N}@metrics.functional.test>\r\n\r\nbody\r\n");

    [Fact]
    public Task Counters_and_histograms_move_by_the_traffic_sent_with_tenant_labels_and_no_client_input() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using var http = harness.AdminClient(harness.OperatorKey);
        var token = await harness.TryMintTokenAsync(TenantA, output) ?? throw new InvalidOperationException("no token verb");
        // tenant-a signs (an Ed25519 key in its token); tenant-b stays unsigned.
        var keygen = await harness.SmtpgwAsync(["dkim", "keygen", "--tenant", TenantA, "--domain", "tenant-a.example", "--selector", "metrics1", "--alg", "ed25519", "--config", harness.ConfigPath]);
        Assert.True(keygen.ExitCode == 0, keygen.ToString());

        // Every value the client chooses carries this marker; none may reach the page.
        var marker = $"hostile{Guid.NewGuid():N}";
        var before = await PrometheusScrape.GetAsync(http, cts.Token);

        // tenant-a: one failed AUTH (a user name of the client's choosing), then a session with its token: 3 messages.
        using (var bad = await ConnectSubmissionsAsync($"{marker}.ehlo.example", cts.Token))
        {
            Assert.Equal(535, (await bad.AuthPlainAsync($"{marker}-user", "sgw1.not-a-token", cts.Token)).Code);
        }

        var recipientsA = Enumerable.Range(0, 3).Select(i => $"{marker}-a{i}@example.net").ToArray();
        using (var a = await ConnectSubmissionsAsync($"{marker}.ehlo.example", cts.Token))
        {
            Assert.Equal(235, (await a.AuthPlainAsync(TenantA, token, cts.Token)).Code);
            Assert.Equal(550, (await a.StepAsync($"MAIL FROM:<{marker}@attacker.example>", output, cts.Token)).Code);
            // Another tenant's domain: a cross-tenant refusal, counted for the tenant that tried.
            Assert.Equal(550, (await a.StepAsync("MAIL FROM:<app@tenant-b.example>", output, cts.Token)).Code);
            foreach (var recipient in recipientsA)
            {
                var reply = await a.SendMailAsync("app@tenant-a.example", [recipient], Message("app@tenant-a.example", recipient, marker), cts.Token);
                output.WriteLine($"tenant-a: {reply}");
                Assert.Equal(250, reply.Code);
            }
        }

        // tenant-b: 2 messages, and one refused at end of DATA for a header From it does not own.
        var recipientsB = Enumerable.Range(0, 2).Select(i => $"{marker}-b{i}@example.net").ToArray();
        using (var b = await harness.ConnectRelayFromAsync(TenantBNetwork, output, cts.Token, ehlo: $"{marker}.relay.example"))
        {
            foreach (var recipient in recipientsB)
            {
                var reply = await b.SendMailAsync("app@tenant-b.example", [recipient], Message("app@tenant-b.example", recipient, marker), cts.Token);
                output.WriteLine($"tenant-b: {reply}");
                Assert.Equal(250, reply.Code);
            }

            var refused = await b.SendMailAsync("app@tenant-b.example", [$"{marker}-b9@example.net"],
                Message($"{marker}@attacker.example", $"{marker}-b9@example.net", marker), cts.Token);
            output.WriteLine($"tenant-b refused: {refused}");
            Assert.Equal(550, refused.Code);
        }

        // Delivered to the sink, and the queue empty again for both tenants.
        var after = await ScrapeUntilAsync(http, s =>
            s.Value("smtpgw_delivery_outcomes_total", ("tenant", TenantA), ("outcome", "delivered")) - before.Value("smtpgw_delivery_outcomes_total", ("tenant", TenantA), ("outcome", "delivered")) >= 3
            && s.Value("smtpgw_delivery_outcomes_total", ("tenant", TenantB), ("outcome", "delivered")) - before.Value("smtpgw_delivery_outcomes_total", ("tenant", TenantB), ("outcome", "delivered")) >= 2
            && s.Value("smtpgw_queue_depth", ("tenant", TenantA)) == 0 && s.Value("smtpgw_queue_depth", ("tenant", TenantB)) == 0,
            cts.Token);
        output.WriteLine(after.Text);

        double Delta(string name, params (string, string)[] labels) => after.Value(name, labels) - before.Value(name, labels);

        Assert.Equal(3, Delta("smtpgw_messages_accepted_total", ("listener", "submissions"), ("tenant", TenantA)));
        Assert.Equal(2, Delta("smtpgw_messages_accepted_total", ("listener", "relay"), ("tenant", TenantB)));
        Assert.Equal(0, Delta("smtpgw_messages_accepted_total", ("tenant", "default")));
        Assert.Equal(1, Delta("smtpgw_messages_rejected_total", ("listener", "relay"), ("tenant", TenantB), ("reason", "sender_not_authorized")));
        Assert.Equal(0, Delta("smtpgw_messages_rejected_total", ("tenant", TenantA)));

        Assert.Equal(3, Delta("smtpgw_messages_accept_latency_seconds_count", ("tenant", TenantA)));
        Assert.Equal(2, Delta("smtpgw_messages_accept_latency_seconds_count", ("tenant", TenantB)));
        Assert.True(Delta("smtpgw_messages_accept_latency_seconds_sum", ("tenant", TenantA)) > 0);
        // Explicit ms-scale buckets (InstrumentAdvice), not the SDK's default 0, 5, 10, 25... seconds.
        Assert.True(after.Has("smtpgw_messages_accept_latency_seconds_bucket", ("tenant", TenantA), ("le", "0.001")));
        Assert.Equal(3, Delta("smtpgw_messages_accept_latency_seconds_bucket", ("tenant", TenantA), ("le", "+Inf")));

        Assert.Equal(3, Delta("smtpgw_delivery_outcomes_total", ("tenant", TenantA), ("outcome", "delivered")));
        Assert.Equal(2, Delta("smtpgw_delivery_outcomes_total", ("tenant", TenantB), ("outcome", "delivered")));
        Assert.Equal(3, Delta("smtpgw_delivery_queue_latency_seconds_count", ("tenant", TenantA)));
        Assert.Equal(2, Delta("smtpgw_delivery_queue_latency_seconds_count", ("tenant", TenantB)));
        Assert.True(after.Has("smtpgw_delivery_queue_latency_seconds_bucket", ("tenant", TenantA), ("le", "3600")));

        Assert.Equal(3, Delta("smtpgw_dkim_signatures_total", ("tenant", TenantA), ("algorithm", "ed25519")));
        Assert.Equal(0, Delta("smtpgw_dkim_signatures_total", ("tenant", TenantB)));
        Assert.Equal(1, Delta("smtpgw_audit_cross_tenant_refusals_total", ("tenant", TenantA)));
        Assert.Equal(0, Delta("smtpgw_audit_cross_tenant_refusals_total", ("tenant", TenantB)));

        Assert.Equal(2, Delta("smtpgw_sessions_opened_total", ("listener", "submissions")));
        Assert.Equal(1, Delta("smtpgw_sessions_opened_total", ("listener", "relay")));
        Assert.Equal(1, Delta("smtpgw_auth_failures_total", ("listener", "submissions"), ("reason", "invalid_credentials")));
        Assert.Equal(1, Delta("smtpgw_auth_failures_total"));
        Assert.True(after.Has("smtpgw_queue_depth", ("tenant", TenantA), ("state", "queued")));

        // Nothing the client chose is on the page, and every family is named once (Prometheus refuses a page otherwise).
        Assert.DoesNotContain(marker, after.Text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("attacker", after.Text, StringComparison.OrdinalIgnoreCase);
        Assert.All(after.Samples.Where(s => s.Name.StartsWith("smtpgw_", StringComparison.Ordinal)), s =>
            Assert.All(s.Labels, l => Assert.Matches("^[A-Za-z0-9_.+-]*$", l.Value)));
        Assert.Empty(after.Types.GroupBy(t => t).Where(g => g.Count() > 1).Select(g => g.Key));
    });

    [Fact]
    public Task Metrics_need_an_operator_key_and_are_in_prometheus_text_format() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        // Every series has a tenant label: anonymous callers and tenant keys must not list the tenants (Gateway:Admin:AnonymousMetrics is off).
        using (var anonymous = harness.AdminClient(null))
        {
            Assert.Equal(System.Net.HttpStatusCode.Unauthorized, (await anonymous.GetAsync(new Uri("metrics", UriKind.Relative), cts.Token)).StatusCode);
        }

        var tenantKey = await harness.SmtpgwAsync("admin", "key", "create", "--tenant", TenantA, "--config", harness.ConfigPath);
        Assert.True(tenantKey.ExitCode == 0, tenantKey.ToString());
        using (var tenant = harness.AdminClient(tenantKey.StandardOutput.Trim()))
        {
            using var refused = await tenant.GetAsync(new Uri("metrics", UriKind.Relative), cts.Token);
            Assert.Equal(System.Net.HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.DoesNotContain("tenant-b", await refused.Content.ReadAsStringAsync(cts.Token), StringComparison.Ordinal);
        }

        using var http = harness.AdminClient(harness.OperatorKey);
        using var response = await http.GetAsync(new Uri("metrics", UriKind.Relative), cts.Token);
        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType, StringComparison.Ordinal);
        var scrape = PrometheusScrape.Parse(await response.Content.ReadAsStringAsync(cts.Token));
        Assert.Contains("smtpgw_sessions_active", scrape.Types);

        // The runtime's meter beside the gateway's (issue 15: perf/bench.sh reads bytes allocated per message here), with
        // closed label sets only: the exception count carries no exception type name.
        Assert.True(scrape.Value("dotnet_gc_heap_total_allocated_bytes_total") > 0, "no dotnet_gc_heap_total_allocated_bytes_total on the page");
        Assert.Contains("dotnet_gc_collections_total", scrape.Types);
        Assert.All(scrape.Samples.Where(s => s.Name.StartsWith("dotnet_", StringComparison.Ordinal)), s =>
            Assert.All(s.Labels.Keys, key => Assert.Contains(key, new[] { "otel_scope_name", "otel_scope_version", "gc_heap_generation", "cpu_mode" })));
    });

    async Task<RawSmtpClient> ConnectSubmissionsAsync(string ehlo, CancellationToken cancellationToken)
    {
        var client = await RawSmtpClient.ConnectAsync("127.0.0.1", harness.SubmissionsPort, TimeSpan.FromSeconds(10), cancellationToken, implicitTls: true);
        try
        {
            Assert.Equal(220, client.Banner.Code);
            Assert.Equal(250, (await client.StepAsync($"EHLO {ehlo}", output, cancellationToken)).Code);
            return client;
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    async Task<PrometheusScrape> ScrapeUntilAsync(HttpClient http, Func<PrometheusScrape, bool> done, CancellationToken cancellationToken)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            var scrape = await PrometheusScrape.GetAsync(http, cancellationToken);
            if (done(scrape))
            {
                return scrape;
            }

            if (clock.Elapsed > TimeSpan.FromSeconds(60))
            {
                output.WriteLine(scrape.Text);
                throw new TimeoutException("the scrape did not show the delivered traffic within 60 s");
            }

            await Task.Delay(200, cancellationToken);
        }
    }
}
