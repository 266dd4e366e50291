using System.Net;
using System.Text.Json;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>Issue #13: the admin endpoint of a live gateway — keys, the authorisation matrix, the audit trail, throttling.</summary>
[Collection(GatewayCollection.Name)]
public sealed class AdminApiTests(GatewayHarness harness, ITestOutputHelper output) : IClassFixture<GatewayHarness>
{
    [Fact]
    public Task Tenants_follow_the_authorisation_matrix_and_every_call_is_audited() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var matrix = await AdminMatrix.CreateAsync(harness, args => harness.SmtpgwAsync([.. args, "--config", harness.ConfigPath]));
        var shown = await matrix.AssertAsync(HttpMethod.Get, "/api/v1/tenants/{tenant}", cancellationToken: cts.Token);
        Assert.Equal("tenant-a", JsonDocument.Parse(shown).RootElement.GetProperty("id").GetString());

        // The list is filtered, not refused: tenant-b's key sees tenant-b alone, the operator both.
        using var b = harness.AdminClient(matrix.TenantBKey);
        var listB = JsonDocument.Parse(await b.GetStringAsync("api/v1/tenants", cts.Token)).RootElement;
        Assert.Equal(["tenant-b"], listB.EnumerateArray().Select(t => t.GetProperty("id").GetString()));
        using var op = harness.AdminClient(harness.OperatorKey);
        var listAll = JsonDocument.Parse(await op.GetStringAsync("api/v1/tenants", cts.Token)).RootElement;
        Assert.Equal(["tenant-a", "tenant-b"], listAll.EnumerateArray().Select(t => t.GetProperty("id").GetString()));

        // Audit: one event per call with the key id and the route template (never the raw path or the key).
        // The audit writer batches its fsyncs: poll for the line rather than expect it at once. tenant-b's key on tenant-a is
        // a cross-tenant probe, recorded for the tenant that made it (as on the SMTP side); on an absent tenant it is not,
        // and the absent name (client input) is never written as a tenant.
        var events = await EventPoll.UntilAsync(harness.Audit.Records, events => events.Any(e => e.Action == "admin" && e.Result == "refused" && e.CrossTenant
            && e.Tenant == "tenant-b" && e.Subject == "GET /api/v1/tenants/{tenant}" && e.TokenId is { Length: 12 } && e.Reason!.Contains("tenant-a", StringComparison.Ordinal)),
            () => !harness.IsRunning, events => $"no cross-tenant admin audit event among {events.Count}", TimeSpan.FromSeconds(10), cts.Token);
        Assert.DoesNotContain(events, e => e.Action == "admin" && (e.Tenant == "no-such-tenant" || (e.Reason?.Contains("no-such-tenant", StringComparison.Ordinal) ?? false)));
        Assert.Contains(events, e => e.Action == "admin" && e.Result == "refused" && !e.CrossTenant && e.Tenant == "tenant-b");
        Assert.DoesNotContain(matrix.TenantBKey, harness.Audit.Text(), StringComparison.Ordinal);
    });

    [Fact]
    public Task A_revoked_key_is_refused_on_its_next_request_and_a_flood_of_bad_keys_ends_in_429() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        var created = await harness.SmtpgwAsync("admin", "key", "create", "--tenant", "tenant-a", "--config", harness.ConfigPath);
        Assert.True(created.ExitCode == 0, created.ToString());
        var key = created.StandardOutput.Trim();
        using var client = harness.AdminClient(key);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("api/v1/tenants/tenant-a", cts.Token)).StatusCode);

        var list = await harness.SmtpgwAsync("admin", "key", "list", "--json", "--config", harness.ConfigPath);
        var id = JsonDocument.Parse(list.StandardOutput).RootElement.EnumerateArray().Single(k => key.Contains(k.GetProperty("id").GetString()!, StringComparison.Ordinal))
            .GetProperty("id").GetString()!;
        Assert.DoesNotContain(key, list.Output, StringComparison.Ordinal);
        var revoked = await harness.SmtpgwAsync("admin", "key", "revoke", id, "--config", harness.ConfigPath);
        Assert.True(revoked.ExitCode == 0, revoked.ToString());
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.GetAsync("api/v1/tenants/tenant-a", cts.Token)).StatusCode);

        // Bad keys from one address: answered 401 (later ones delayed), then 429 at once once the block threshold is reached
        // (Gateway:Admin:BadKeyFailuresBeforeBlock, 20 by default). A valid key from that same address still gets in: the
        // block slows guessing, it must not let a guesser behind the same NAT or proxy lock the operator out.
        using var guesser = AdminClientFrom("sgw_000000000000_guess");
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 22; i++)
        {
            statuses.Add((await guesser.GetAsync("api/v1/tenants", cts.Token)).StatusCode);
        }

        output.WriteLine(string.Join(' ', statuses.Select(s => (int)s)));
        Assert.Equal(HttpStatusCode.Unauthorized, statuses[0]);
        Assert.Equal(HttpStatusCode.TooManyRequests, statuses[^1]);
        using var blocked = await guesser.GetAsync("api/v1/tenants", cts.Token);
        Assert.Equal(HttpStatusCode.TooManyRequests, blocked.StatusCode);
        Assert.NotNull(blocked.Headers.RetryAfter);
        using var good = AdminClientFrom(harness.OperatorKey);
        Assert.Equal(HttpStatusCode.OK, (await good.GetAsync("api/v1/tenants", cts.Token)).StatusCode);
    });

    [Fact]
    public Task The_key_check_ignores_the_case_of_the_path_as_routing_does() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var anonymous = harness.AdminClient(null);
        foreach (var path in new[] { "API/v1/tenants", "Api/v1/tenants/tenant-a", "api/V1/Tenants", "API/v1/dashboard", "METRICS" })
        {
            using var response = await anonymous.GetAsync(path, cts.Token);
            Assert.True(response.StatusCode == HttpStatusCode.Unauthorized, $"{path} without a key: {(int)response.StatusCode}");
        }

        using var op = harness.AdminClient(harness.OperatorKey);
        Assert.Equal(HttpStatusCode.OK, (await op.GetAsync("API/v1/tenants", cts.Token)).StatusCode);

        // The OpenAPI document (anonymous) tells generated clients to send the key as a bearer.
        var document = JsonDocument.Parse(await anonymous.GetStringAsync("openapi.json", cts.Token)).RootElement;
        var scheme = document.GetProperty("components").GetProperty("securitySchemes").GetProperty("adminKey");
        Assert.Equal(("http", "bearer"), (scheme.GetProperty("type").GetString(), scheme.GetProperty("scheme").GetString()));
        Assert.True(document.GetProperty("security")[0].TryGetProperty("adminKey", out _));
    });

    HttpClient AdminClientFrom(string key)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (context, ct) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                socket.Bind(new IPEndPoint(IPAddress.Parse("127.0.0.9"), 0));
                await socket.ConnectAsync(context.DnsEndPoint, ct);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
        };
        var client = new HttpClient(handler) { BaseAddress = harness.AdminUrl, Timeout = TimeSpan.FromSeconds(60) };
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
        return client;
    }
}
