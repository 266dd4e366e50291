using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// The gateway of <see cref="AdminQueueVaultTests"/>: tenant-a's smarthost is a closed port and deferred mail is retried
/// hourly, so tenant-a's messages stay in the queue (deferred) until the test acts on them; tenant-b's mail goes to the
/// harness's smtp-sink and is delivered.
/// </summary>
public sealed class AdminResourcesHarness : GatewayHarness
{
    protected override Task CustomizeAsync(JsonObject config, CancellationToken cancellationToken)
    {
        var a = (JsonObject)config["Tenants"]!["tenant-a"]!;
        a["Egress"] = new JsonObject { ["Smarthost"] = new JsonObject { ["Host"] = "127.0.0.1", ["Port"] = FreePort.Next() } };
        config["Gateway"]!["Delivery"]!["Retry"] = new JsonObject { ["Schedule"] = new JsonArray("01:00:00"), ["Jitter"] = 0.1 };

        // Every matrix run presents two bad keys from 127.0.0.1; this class runs many, far past the default block (20).
        var admin = (JsonObject)config["Gateway"]!["Admin"]!;
        admin["BadKeyFailuresBeforeDelay"] = 10_000;
        admin["BadKeyFailuresBeforeBlock"] = 10_000;
        return Task.CompletedTask;
    }

    /// <summary><c>smtpgw ARGS... --config</c> with <paramref name="stdin"/> on its standard input (the vault verbs' secret).</summary>
    internal Task<ProcessResult> SmtpgwWithStdinAsync(string stdin, params string[] args) =>
        RunSmtpgwAsync([.. args, "--config", ConfigPath], TimeSpan.FromSeconds(60), stdin);
}

/// <summary>
/// Issue #13: the admin API's queue, suppression, vault and events resources on a live gateway — the authorisation matrix
/// for every route, tenant isolation of queue ids, immediate effect on the running gateway, every error of bad input, no
/// secret anywhere, and the CLI verbs going through the API (audited under key id "local", channel "api").
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class AdminQueueVaultTests(AdminResourcesHarness harness, ITestOutputHelper output) : IClassFixture<AdminResourcesHarness>
{
    const string TenantANetwork = "127.0.0.1";
    const string TenantBNetwork = "127.0.0.2";
    const string SenderA = "app@tenant-a.example";
    const string SenderB = "app@tenant-b.example";
    static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Fact]
    public Task Queue_follows_the_matrix_and_another_tenants_id_is_answered_as_an_unknown_one() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var matrix = await MatrixAsync();
        var marker = Guid.NewGuid().ToString("N")[..10];
        var ids = new List<string>();
        for (var i = 0; i < 5; i++)
        {
            ids.Add(await SendAsync(TenantANetwork, SenderA, $"q{i}-{marker}@example.net", $"queue {marker}", cts.Token));
        }

        await harness.WaitForEventsAsync("tenant-a", es => ids.All(id => es.Any(e => e.Id == id && e.Event == "deferred")), Wait, cts.Token);
        var (shown, deleteOwn, deleteOp, cliRetry, cliDelete) = (ids[0], ids[1], ids[2], ids[3], ids[4]);

        // List: tenant-a's message in tenant-a's queue (deferred, with its reply), not in tenant-b's.
        var list = JsonDocument.Parse(await matrix.AssertAsync(HttpMethod.Get, "/api/v1/tenants/{tenant}/queue", cancellationToken: cts.Token)).RootElement;
        var item = Assert.Single(list.EnumerateArray(), i => i.GetProperty("id").GetString() == shown);
        Assert.Equal("tenant-a", item.GetProperty("tenant").GetString());
        Assert.Equal("deferred", item.GetProperty("state").GetString());
        await matrix.AssertAsync(HttpMethod.Get, "/api/v1/tenants/{tenant}/queue?state=deferred", cancellationToken: cts.Token);
        using var op = harness.AdminClient(harness.OperatorKey);
        var listB = await op.GetStringAsync("api/v1/tenants/tenant-b/queue", cts.Token);
        Assert.DoesNotContain(shown, listB, StringComparison.Ordinal);
        Assert.DoesNotContain(shown, await op.GetStringAsync("api/v1/tenants/tenant-a/queue?state=failed", cts.Token), StringComparison.Ordinal);

        // Show: the details with the header lines, as `queue show` prints them.
        var details = JsonDocument.Parse(await matrix.AssertAsync(HttpMethod.Get, $"/api/v1/tenants/{{tenant}}/queue/{shown}", cancellationToken: cts.Token)).RootElement;
        Assert.Equal(shown, details.GetProperty("message").GetProperty("id").GetString());
        Assert.Contains($"Subject: queue {marker}", details.GetProperty("headers").EnumerateArray().Select(h => h.GetString()));

        // Retry (repeatable: the message is deferred again each time).
        var retried = JsonDocument.Parse(await matrix.AssertAsync(HttpMethod.Post, $"/api/v1/tenants/{{tenant}}/queue/{shown}/retry", cancellationToken: cts.Token)).RootElement;
        Assert.Equal($"{shown}: due now", retried.GetProperty("message").GetString());

        // tenant-b's key, on its own tenant, with tenant-a's queue id: the very answer an unknown id gets, for every verb.
        using var b = harness.AdminClient(matrix.TenantBKey);
        foreach (var (method, suffix) in new[] { (HttpMethod.Get, ""), (HttpMethod.Delete, ""), (HttpMethod.Post, "/retry") })
        {
            var foreign = await SendAsync(b, method, $"api/v1/tenants/tenant-b/queue/{shown}{suffix}", null, cts.Token);
            var unknown = await SendAsync(b, method, $"api/v1/tenants/tenant-b/queue/{shown.Replace(shown[0], shown[0] == 'Z' ? 'Y' : 'Z')}{suffix}", null, cts.Token);
            Assert.Equal(HttpStatusCode.NotFound, foreign.Status);
            Assert.Equal(unknown.Status, foreign.Status);
            Assert.Equal(WithoutTrace(unknown.Body), WithoutTrace(foreign.Body));
        }

        // Delete: each call valid on its own (its own message).
        await DeleteMatrixAsync(matrix, $"api/v1/tenants/tenant-a/queue/{deleteOwn}", $"api/v1/tenants/no-such-tenant/queue/{deleteOwn}",
            $"api/v1/tenants/tenant-a/queue/{deleteOp}", HttpStatusCode.OK, cts.Token);
        var after = await op.GetStringAsync("api/v1/tenants/tenant-a/queue", cts.Token);
        Assert.DoesNotContain(deleteOwn, after, StringComparison.Ordinal);
        Assert.DoesNotContain(deleteOp, after, StringComparison.Ordinal);
        Assert.Contains(shown, after, StringComparison.Ordinal);

        // Bad input: 400 problems, before any file is touched.
        var badState = await SendAsync(op, HttpMethod.Get, "api/v1/tenants/tenant-a/queue?state=stuck", null, cts.Token);
        AssertInvalid(badState, "state");
        AssertInvalid(await SendAsync(op, HttpMethod.Get, "api/v1/tenants/tenant-a/queue/..%2Fstate", null, cts.Token), "id");
        AssertInvalid(await SendAsync(op, HttpMethod.Delete, $"api/v1/tenants/tenant-a/queue/{new string('a', 65)}", null, cts.Token), "id");

        // The CLI next to the running gateway goes through the API: same output as before, audited as the local operator.
        var retry = await CliAsync("queue", "retry", cliRetry);
        Assert.Equal($"{cliRetry}: due now", retry.StandardOutput.Trim());
        var delete = await CliAsync("queue", "delete", cliDelete);
        Assert.Equal($"{cliDelete}: deleted from queue", delete.StandardOutput.Trim());
        var missing = await CliAsync(["queue", "delete", cliDelete], expectSuccess: false);
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("no such message", missing.StandardError, StringComparison.Ordinal);
        await AuditedLocallyAsync("POST /api/v1/tenants/{tenant}/queue/{id}/retry", "tenant-a", cts.Token);
        await AuditedLocallyAsync("DELETE /api/v1/tenants/{tenant}/queue/{id}", "tenant-a", cts.Token);
        Assert.DoesNotContain(cliDelete, await op.GetStringAsync("api/v1/tenants/tenant-a/queue", cts.Token), StringComparison.Ordinal);
    });

    [Fact]
    public Task Suppression_through_the_API_changes_the_running_gateway_at_once() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var matrix = await MatrixAsync();
        var marker = Guid.NewGuid().ToString("N")[..10];
        using var op = harness.AdminClient(harness.OperatorKey);
        using var a = harness.AdminClient(matrix.TenantAKey);

        await matrix.AssertAsync(HttpMethod.Get, "/api/v1/tenants/{tenant}/suppression", cancellationToken: cts.Token);
        var n = 0;
        await matrix.AssertAsync(HttpMethod.Post, "/api/v1/tenants/{tenant}/suppression",
            () => $"{{\"address\":\"m{n++}-{marker}@example.net\",\"reason\":\"matrix\"}}", HttpStatusCode.Created, cts.Token);
        var again = $"again-{marker}@example.net";
        await matrix.AssertAsync(HttpMethod.Delete, $"/api/v1/tenants/{{tenant}}/suppression/{again}", () =>
        {
            // Re-suppressed before each call, so that each removal is valid on its own.
            using var add = new HttpRequestMessage(HttpMethod.Post, "api/v1/tenants/tenant-a/suppression")
            {
                Content = new StringContent($"{{\"address\":\"{again}\"}}", Encoding.UTF8, "application/json"),
            };
            using var response = op.Send(add, cts.Token);
            return null;
        }, HttpStatusCode.NoContent, cts.Token);

        // Add through the API with tenant-a's key: the very next RCPT from tenant-a is refused, tenant-b's list is untouched.
        var gone = $"gone-{marker}@example.net";
        var added = await SendAsync(a, HttpMethod.Post, "api/v1/tenants/tenant-a/suppression", $"{{\"address\":\"<{gone.ToUpperInvariant()}>\",\"reason\":\"asked to stop\"}}", cts.Token);
        Assert.Equal(HttpStatusCode.Created, added.Status);
        Assert.Equal(gone, JsonDocument.Parse(added.Body).RootElement.GetProperty("address").GetString());
        Assert.Equal(550, (await RcptAsync(TenantANetwork, SenderA, gone, cts.Token)).Code);
        Assert.Equal(250, (await RcptAsync(TenantBNetwork, SenderB, gone, cts.Token)).Code);
        var listed = await a.GetStringAsync("api/v1/tenants/tenant-a/suppression", cts.Token);
        Assert.Contains(gone, listed, StringComparison.Ordinal);
        Assert.Contains("asked to stop", listed, StringComparison.Ordinal);
        Assert.DoesNotContain(gone, await op.GetStringAsync("api/v1/tenants/tenant-b/suppression", cts.Token), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await SendAsync(a, HttpMethod.Post, "api/v1/tenants/tenant-a/suppression", $"{{\"address\":\"{gone}\"}}", cts.Token)).Status);

        // Remove lifts it at once.
        Assert.Equal(HttpStatusCode.NoContent, (await SendAsync(a, HttpMethod.Delete, $"api/v1/tenants/tenant-a/suppression/{gone}", null, cts.Token)).Status);
        Assert.Equal(250, (await RcptAsync(TenantANetwork, SenderA, gone, cts.Token)).Code);
        Assert.Equal(HttpStatusCode.NotFound, (await SendAsync(a, HttpMethod.Delete, $"api/v1/tenants/tenant-a/suppression/{gone}", null, cts.Token)).Status);

        // Bad input: every error at once.
        var bad = await SendAsync(a, HttpMethod.Post, "api/v1/tenants/tenant-a/suppression", "{\"address\":\"not-an-address\",\"reason\":\"bad\\u0001note\"}", cts.Token);
        AssertInvalid(bad, "address", "reason");
        AssertInvalid(await SendAsync(a, HttpMethod.Post, "api/v1/tenants/tenant-a/suppression", "not json", cts.Token), "body");
        AssertInvalid(await SendAsync(a, HttpMethod.Delete, "api/v1/tenants/tenant-a/suppression/nobody", null, cts.Token), "address");

        // The CLI goes through the API: the running gateway refuses at once, and the call is audited as the local operator.
        var cli = $"cli-{marker}@example.net";
        Assert.Equal($"tenant-a: suppressed {cli}", (await CliAsync("suppression", "add", "--tenant", "tenant-a", "--address", cli)).StandardOutput.Trim());
        Assert.Equal(550, (await RcptAsync(TenantANetwork, SenderA, cli, cts.Token)).Code);
        Assert.Equal($"tenant-a: {cli} was already suppressed", (await CliAsync("suppression", "add", "--tenant", "tenant-a", "--address", cli)).StandardOutput.Trim());
        Assert.Equal($"tenant-a: removed {cli}", (await CliAsync("suppression", "remove", "--tenant", "tenant-a", "--address", cli)).StandardOutput.Trim());
        Assert.Equal(250, (await RcptAsync(TenantANetwork, SenderA, cli, cts.Token)).Code);
        var notListed = await CliAsync(["suppression", "remove", "--tenant", "tenant-a", "--address", cli], expectSuccess: false);
        Assert.Equal(1, notListed.ExitCode);
        Assert.Contains($"tenant-a: {cli} is not suppressed", notListed.StandardError, StringComparison.Ordinal);
        await AuditedLocallyAsync("POST /api/v1/tenants/{tenant}/suppression", "tenant-a", cts.Token);
        await AuditedLocallyAsync("DELETE /api/v1/tenants/{tenant}/suppression/{address}", "tenant-a", cts.Token);
    });

    [Fact]
    public Task Vault_secrets_go_in_only_and_never_come_out() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var matrix = await MatrixAsync();
        var marker = Guid.NewGuid().ToString("N")[..10];
        var secrets = new List<string>();
        string Secret()
        {
            var s = $"pw-{marker}-{secrets.Count}-" + Guid.NewGuid().ToString("N");
            secrets.Add(s);
            return s;
        }

        using var op = harness.AdminClient(harness.OperatorKey);
        using var a = harness.AdminClient(matrix.TenantAKey);
        void Sync(HttpMethod method, string path, string? body)
        {
            using var request = new HttpRequestMessage(method, path) { Content = body is null ? null : new StringContent(body, Encoding.UTF8, "application/json") };
            using var response = op.Send(request, cts.Token);
        }

        // Set with tenant-a's key: 201 with the version, and no secret in the answer or the list.
        var secret = Secret();
        var set = await SendAsync(a, HttpMethod.Put, "api/v1/tenants/tenant-a/vault/relay", $"{{\"user\":\"relay-a\",\"password\":\"{secret}\"}}", cts.Token);
        Assert.Equal(HttpStatusCode.Created, set.Status);
        Assert.Equal(1, JsonDocument.Parse(set.Body).RootElement.GetProperty("version").GetInt32());
        var list = await matrix.AssertAsync(HttpMethod.Get, "/api/v1/tenants/{tenant}/vault", cancellationToken: cts.Token);
        var row = Assert.Single(JsonDocument.Parse(list).RootElement.EnumerateArray(), r => r.GetProperty("name").GetString() == "relay");
        Assert.Equal(1, row.GetProperty("version").GetInt32());
        Assert.Equal("password", row.GetProperty("kind").GetString());
        Assert.Equal("relay-a", row.GetProperty("user").GetString());
        Assert.DoesNotContain("relay", await op.GetStringAsync("api/v1/tenants/tenant-b/vault", cts.Token), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.Conflict, (await SendAsync(a, HttpMethod.Put, "api/v1/tenants/tenant-a/vault/relay",
            $"{{\"user\":\"relay-a\",\"password\":\"{Secret()}\"}}", cts.Token)).Status);

        // The matrix: set (each call on a name deleted first), rotate (repeatable), delete (each call on a name set first).
        await matrix.AssertAsync(HttpMethod.Put, "/api/v1/tenants/{tenant}/vault/matrix", () =>
        {
            Sync(HttpMethod.Delete, "api/v1/tenants/tenant-a/vault/matrix", null);
            return $"{{\"user\":\"m\",\"accessToken\":\"{Secret()}\"}}";
        }, HttpStatusCode.Created, cts.Token);
        var rotated = await matrix.AssertAsync(HttpMethod.Post, "/api/v1/tenants/{tenant}/vault/relay/rotate",
            () => $"{{\"user\":\"relay-a\",\"password\":\"{Secret()}\",\"grace\":\"01:00:00\"}}", cancellationToken: cts.Token);
        Assert.True(JsonDocument.Parse(rotated).RootElement.GetProperty("previousRetiresAt").GetDateTimeOffset() > DateTimeOffset.UtcNow.AddMinutes(50));
        await matrix.AssertAsync(HttpMethod.Delete, "/api/v1/tenants/{tenant}/vault/gone", () =>
        {
            Sync(HttpMethod.Put, "api/v1/tenants/tenant-a/vault/gone", $"{{\"user\":\"g\",\"password\":\"{Secret()}\"}}");
            return null;
        }, cancellationToken: cts.Token);
        Assert.Equal(HttpStatusCode.NotFound, (await SendAsync(a, HttpMethod.Delete, "api/v1/tenants/tenant-a/vault/gone", null, cts.Token)).Status);

        // Bad input: every error at once, and nothing stored.
        var bad = await SendAsync(a, HttpMethod.Put, "api/v1/tenants/tenant-a/vault/-bad",
            $"{{\"password\":\"\",\"accessToken\":\"{Secret()}\",\"tokenEndpoint\":\"http://login.example/token\",\"colour\":1}}", cts.Token);
        AssertInvalid(bad, "name", "user", "password", "secret", "refreshToken", "colour");
        AssertInvalid(await SendAsync(a, HttpMethod.Post, "api/v1/tenants/tenant-a/vault/relay/rotate", $"{{\"user\":\"u\",\"password\":\"{Secret()}\",\"grace\":\"soon\"}}", cts.Token), "grace");
        AssertInvalid(await SendAsync(a, HttpMethod.Put, "api/v1/tenants/tenant-a/vault/x", "{\"user\":", cts.Token), "body");
        AssertInvalid(await SendAsync(a, HttpMethod.Delete, "api/v1/tenants/tenant-a/vault/relay?version=first", null, cts.Token), "version");

        // The CLI through the API: secret on stdin, same output as before, audited as the local operator over the API.
        var cliSecret = Secret();
        var cliSet = await harness.SmtpgwWithStdinAsync(cliSecret + "\n", "vault", "set", "--tenant", "tenant-a", "--name", "cli", "--user", "cli-user", "--password-stdin");
        output.WriteLine(cliSet.ToString());
        Assert.True(cliSet.ExitCode == 0, cliSet.ToString());
        Assert.Equal("tenant-a: stored cli#v1 (password for cli-user)", cliSet.StandardOutput.Trim());
        var cliRotate = await harness.SmtpgwWithStdinAsync(Secret() + "\n", "vault", "rotate", "--tenant", "tenant-a", "--name", "cli", "--user", "cli-user",
            "--password-stdin", "--grace", "2h");
        Assert.True(cliRotate.ExitCode == 0, cliRotate.ToString());
        Assert.StartsWith("tenant-a: stored cli#v2 (password for cli-user); the previous version stays usable until ", cliRotate.StandardOutput.Trim(), StringComparison.Ordinal);
        var cliAgain = await harness.SmtpgwWithStdinAsync(Secret() + "\n", "vault", "set", "--tenant", "tenant-a", "--name", "cli", "--user", "cli-user", "--password-stdin");
        Assert.Equal(1, cliAgain.ExitCode);
        Assert.Contains("error: ", cliAgain.StandardError, StringComparison.Ordinal);
        Assert.Contains("use `vault rotate`", cliAgain.StandardError, StringComparison.Ordinal);
        Assert.Equal("tenant-a: destroyed 2 version(s) of cli", (await CliAsync("vault", "delete", "--tenant", "tenant-a", "--name", "cli")).StandardOutput.Trim());
        var cliMissing = await CliAsync(["vault", "delete", "--tenant", "tenant-a", "--name", "cli"], expectSuccess: false);
        Assert.Equal(1, cliMissing.ExitCode);
        Assert.Contains("tenant-a: no credential 'cli'", cliMissing.StandardError, StringComparison.Ordinal);

        // Audit: vault-set through the API with the key id and channel api (tenant-a's key; the CLI as "local").
        var keyA = matrix.TenantAKey.Substring("sgw_".Length, 12);
        await EventPoll.UntilAsync(harness.Audit.Records, events => events.Any(e => e.Action == "vault-set" && e.TokenId == keyA && e.Subject == "relay#v1"
                && e.Line.Contains("\"channel\":\"api\"", StringComparison.Ordinal))
            && events.Any(e => e.Action == "vault-set" && e.TokenId == "local" && e.Subject == "cli#v1" && e.Line.Contains("\"channel\":\"api\"", StringComparison.Ordinal))
            && events.Any(e => e.Action == "vault-rotate" && e.TokenId == "local" && e.Subject == "cli#v2")
            && events.Any(e => e.Action == "vault-delete" && e.TokenId == "local" && e.Subject == "cli (all versions)"),
            () => !harness.IsRunning, events => $"vault audit events missing among {events.Count}", Wait, cts.Token);
        await AuditedLocallyAsync("PUT /api/v1/tenants/{tenant}/vault/{name}", "tenant-a", cts.Token);

        // No secret in any answer above, the audit trail or the gateway's output.
        var audit = harness.Audit.Text();
        var gatewayOutput = harness.Diagnostics();
        foreach (var s in secrets)
        {
            Assert.DoesNotContain(s, audit, StringComparison.Ordinal);
            Assert.DoesNotContain(s, gatewayOutput, StringComparison.Ordinal);
            Assert.DoesNotContain(s, list, StringComparison.Ordinal);
            Assert.DoesNotContain(s, rotated, StringComparison.Ordinal);
            Assert.DoesNotContain(s, set.Body, StringComparison.Ordinal);
            Assert.DoesNotContain(s, bad.Body, StringComparison.Ordinal);
        }
    });

    [Fact]
    public Task Events_show_a_delivery_of_the_tenant_only() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var matrix = await MatrixAsync();
        var marker = Guid.NewGuid().ToString("N")[..10];
        var idA = await SendAsync(TenantANetwork, SenderA, $"ev-a-{marker}@example.net", $"events {marker}", cts.Token);
        var idB = await SendAsync(TenantBNetwork, SenderB, $"ev-b-{marker}@example.net", $"events {marker}", cts.Token);
        await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == idA && e.Event == "deferred"), Wait, cts.Token);
        await harness.WaitForEventsAsync("tenant-b", es => es.Any(e => e.Id == idB && e.Event == "delivered"), Wait, cts.Token);

        var eventsA = JsonDocument.Parse(await matrix.AssertAsync(HttpMethod.Get, "/api/v1/tenants/{tenant}/events", cancellationToken: cts.Token)).RootElement;
        Assert.Contains(eventsA.EnumerateArray(), e => e.GetProperty("id").GetString() == idA && e.GetProperty("event").GetString() == "deferred");
        Assert.DoesNotContain(eventsA.EnumerateArray(), e => e.GetProperty("id").GetString() == idB);

        using var b = harness.AdminClient(matrix.TenantBKey);
        var eventsB = JsonDocument.Parse(await b.GetStringAsync("api/v1/tenants/tenant-b/events?limit=1000", cts.Token)).RootElement;
        var delivered = Assert.Single(eventsB.EnumerateArray(), e => e.GetProperty("id").GetString() == idB && e.GetProperty("event").GetString() == "delivered");
        Assert.Equal($"ev-b-{marker}@example.net", delivered.GetProperty("recipient").GetString());
        Assert.DoesNotContain(eventsB.EnumerateArray(), e => e.GetProperty("id").GetString() == idA);

        // Newest first, at most limit.
        var latest = JsonDocument.Parse(await b.GetStringAsync("api/v1/tenants/tenant-b/events?limit=1", cts.Token)).RootElement;
        Assert.Equal(idB, Assert.Single(latest.EnumerateArray()).GetProperty("id").GetString());
        foreach (var limit in new[] { "0", "1001", "ten", "-1" })
        {
            AssertInvalid(await SendAsync(b, HttpMethod.Get, $"api/v1/tenants/tenant-b/events?limit={limit}", null, cts.Token), "limit");
        }
    });

    [Fact]
    public Task Queue_lists_come_in_pages_and_vault_names_end_at_their_end() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var marker = Guid.NewGuid().ToString("N")[..10];
        var ids = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            ids.Add(await SendAsync(TenantANetwork, SenderA, $"page{i}-{marker}@example.net", $"page {marker}", cts.Token));
        }

        await harness.WaitForEventsAsync("tenant-a", es => ids.All(id => es.Any(e => e.Id == id && e.Event == "deferred")), Wait, cts.Token);
        using var op = harness.AdminClient(harness.OperatorKey);

        // Pages of one, oldest first, each after the last id of the one before: the three messages in their order.
        var paged = new List<string>();
        string? after = null;
        while (true)
        {
            var page = JsonDocument.Parse(await op.GetStringAsync($"api/v1/tenants/tenant-a/queue?limit=1{(after is null ? "" : $"&after={after}")}", cts.Token)).RootElement;
            Assert.True(page.GetArrayLength() <= 1, page.ToString());
            if (page.GetArrayLength() == 0)
            {
                break;
            }

            after = page[0].GetProperty("id").GetString()!;
            paged.Add(after);
        }

        Assert.Equal(ids, paged.Where(ids.Contains));
        Assert.Equal(paged.Order(StringComparer.Ordinal), paged);
        var tail = JsonDocument.Parse(await op.GetStringAsync($"api/v1/tenants/tenant-a/queue?after={ids[1]}", cts.Token)).RootElement;
        Assert.Contains(tail.EnumerateArray(), i => i.GetProperty("id").GetString() == ids[2]);
        Assert.DoesNotContain(tail.EnumerateArray(), i => i.GetProperty("id").GetString() == ids[0] || i.GetProperty("id").GetString() == ids[1]);
        foreach (var limit in new[] { "0", "1001", "ten", "-1" })
        {
            AssertInvalid(await SendAsync(op, HttpMethod.Get, $"api/v1/tenants/tenant-a/queue?limit={limit}", null, cts.Token), "limit");
        }

        AssertInvalid(await SendAsync(op, HttpMethod.Get, "api/v1/tenants/tenant-a/queue?after=..%2Fstate&limit=5000&state=stuck", null, cts.Token), "after", "limit", "state");

        // A name with a trailing LF is no name ('$' matched before it): 400 for set and delete, and nothing stored.
        using var a = harness.AdminClient((await MatrixAsync()).TenantAKey);
        AssertInvalid(await SendAsync(a, HttpMethod.Put, "api/v1/tenants/tenant-a/vault/lf%0A", "{\"user\":\"u\",\"password\":\"p-lf\"}", cts.Token), "name");
        AssertInvalid(await SendAsync(a, HttpMethod.Delete, "api/v1/tenants/tenant-a/vault/lf%0A?version=1", null, cts.Token), "name");
        Assert.DoesNotContain("\"lf", await a.GetStringAsync("api/v1/tenants/tenant-a/vault", cts.Token), StringComparison.Ordinal);

        // The Location of a new credential is its escaped path.
        using var set = new HttpRequestMessage(HttpMethod.Put, $"api/v1/tenants/tenant-a/vault/loc-{marker}")
        {
            Content = new StringContent("{\"user\":\"u\",\"password\":\"p-loc\"}", Encoding.UTF8, "application/json"),
        };
        using var created = await a.SendAsync(set, cts.Token);
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.Equal($"/api/v1/tenants/tenant-a/vault/loc-{marker}", created.Headers.Location?.OriginalString);
    });

    [Fact]
    public Task A_failing_vault_answers_a_fixed_503_and_logs_the_cause() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        // tenant-b's vault file damaged: the cause (an InvalidDataException) names the file's absolute path.
        var path = Path.Combine(harness.DataDirectory, "vault", "tenant-b.json");
        var saved = File.Exists(path) ? await File.ReadAllBytesAsync(path, cts.Token) : null;
        var createdDirectory = Directory.CreateDirectory(Path.GetDirectoryName(path)!).GetFiles().Length == 0 && saved is null;
        await File.WriteAllTextAsync(path, "{ damaged", cts.Token);
        try
        {
            using var op = harness.AdminClient(harness.OperatorKey);
            var answer = await SendAsync(op, HttpMethod.Get, "api/v1/tenants/tenant-b/vault", null, cts.Token);
            output.WriteLine(answer.Body);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, answer.Status);
            Assert.Equal("application/problem+json", answer.ContentType);
            Assert.Equal("The vault is unavailable; the gateway log has the cause.", JsonDocument.Parse(answer.Body).RootElement.GetProperty("detail").GetString());
            Assert.DoesNotContain(harness.DataDirectory, answer.Body, StringComparison.Ordinal);
            Assert.DoesNotContain("damaged", answer.Body, StringComparison.Ordinal);
            // The cause goes to the gateway's log. The line is logged before the answer, but the console logger writes on
            // its own thread and the harness reads the process's output asynchronously: wait for it to arrive.
            await EventPoll.UntilAsync<string>(() => [harness.Diagnostics()],
                d => System.Text.RegularExpressions.Regex.IsMatch(d[0], "vault list for tenant tenant-b failed: .*damaged"),
                () => false, _ => "the gateway log never showed the vault failure's cause", TimeSpan.FromSeconds(10), cts.Token);
        }
        finally
        {
            if (saved is null)
            {
                File.Delete(path);
                if (createdDirectory && Directory.GetFileSystemEntries(Path.GetDirectoryName(path)!).Length == 0)
                {
                    Directory.Delete(Path.GetDirectoryName(path)!);
                }
            }
            else
            {
                await File.WriteAllBytesAsync(path, saved, CancellationToken.None);
            }
        }
    });

    [Fact]
    public Task Every_route_is_in_the_OpenAPI_document() => harness.RunAsync(output, async () =>
    {
        using var client = harness.AdminClient(null);
        var document = await client.GetStringAsync("openapi.json");
        foreach (var name in new[] { "ListQueue", "GetQueueMessage", "DeleteQueueMessage", "RetryQueueMessage", "ListSuppression", "AddSuppression",
                     "RemoveSuppression", "ListVault", "SetVaultCredential", "RotateVaultCredential", "DeleteVaultCredential", "ListEvents" })
        {
            Assert.Contains($"\"{name}\"", document, StringComparison.Ordinal);
        }
    });

    async Task<AdminMatrix> MatrixAsync() => await AdminMatrix.CreateAsync(harness, args => harness.SmtpgwAsync([.. args, "--config", harness.ConfigPath]));

    /// <summary>
    /// The matrix for a call that can succeed only once per resource (a delete): the five cases as in
    /// <see cref="AdminMatrix.AssertAsync"/>, tenant-a's key on <paramref name="path"/>, the operator's on <paramref name="operatorPath"/>.
    /// </summary>
    async Task DeleteMatrixAsync(AdminMatrix matrix, string path, string absentTenantPath, string operatorPath, HttpStatusCode success, CancellationToken cancellationToken)
    {
        using var none = harness.AdminClient(null);
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(none, HttpMethod.Delete, path, null, cancellationToken)).Status);
        using var badKey = harness.AdminClient("sgw_000000000000_not-a-key");
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(badKey, HttpMethod.Delete, path, null, cancellationToken)).Status);
        using var b = harness.AdminClient(matrix.TenantBKey);
        var other = await SendAsync(b, HttpMethod.Delete, path, null, cancellationToken);
        var absent = await SendAsync(b, HttpMethod.Delete, absentTenantPath, null, cancellationToken);
        Assert.Equal(HttpStatusCode.NotFound, other.Status);
        Assert.Equal(WithoutTrace(absent.Body), WithoutTrace(other.Body));
        using var a = harness.AdminClient(matrix.TenantAKey);
        var own = await SendAsync(a, HttpMethod.Delete, path, null, cancellationToken);
        Assert.True(own.Status == success, $"tenant-a's key: {own.Status} {own.Body}");
        using var op = harness.AdminClient(harness.OperatorKey);
        var byOperator = await SendAsync(op, HttpMethod.Delete, operatorPath, null, cancellationToken);
        Assert.True(byOperator.Status == success, $"operator key: {byOperator.Status} {byOperator.Body}");
    }

    static async Task<(HttpStatusCode Status, string Body, string? ContentType)> SendAsync(HttpClient client, HttpMethod method, string path, string? json,
        CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(method, path) { Content = json is null ? null : new StringContent(json, Encoding.UTF8, "application/json") };
        using var response = await client.SendAsync(request, cancellationToken);
        return (response.StatusCode, await response.Content.ReadAsStringAsync(cancellationToken), response.Content.Headers.ContentType?.MediaType);
    }

    /// <summary>A 400 problem listing an error for each of <paramref name="fields"/> (and no other).</summary>
    void AssertInvalid((HttpStatusCode Status, string Body, string? ContentType) answer, params string[] fields)
    {
        output.WriteLine(answer.Body);
        Assert.True(answer.Status == HttpStatusCode.BadRequest, $"{answer.Status} {answer.Body}");
        Assert.Equal("application/problem+json", answer.ContentType);
        var errors = JsonDocument.Parse(answer.Body).RootElement.GetProperty("errors");
        Assert.Equal(fields.Order(StringComparer.Ordinal), errors.EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal));
    }

    static string WithoutTrace(string body) => Regex.Replace(body, "\"traceId\":\"[^\"]*\"", "\"traceId\":\"\"");

    async Task<string> SendAsync(string source, string from, string to, string subject, CancellationToken cancellationToken)
    {
        using var smtp = await harness.ConnectRelayFromAsync(source, output, cancellationToken);
        var content = Encoding.ASCII.GetBytes($"From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{Guid.NewGuid():N}@app.functional.test>\r\n"
            + "Date: Sat, 05 Dec 2026 10:00:01 +0000\r\n\r\nHello.\r\n");
        var reply = await smtp.SendMailAsync(from, [to], content, cancellationToken);
        Assert.True(reply.Code == 250, reply.Text);
        return Regex.Match(reply.Lines[0], "queued as <?([A-Za-z0-9]+)").Groups[1].Value;
    }

    async Task<SmtpReply> RcptAsync(string source, string from, string to, CancellationToken cancellationToken)
    {
        using var smtp = await harness.ConnectRelayFromAsync(source, output, cancellationToken);
        Assert.Equal(250, (await smtp.StepAsync($"MAIL FROM:<{from}>", output, cancellationToken)).Code);
        var reply = await smtp.StepAsync($"RCPT TO:<{to}>", output, cancellationToken);
        if (reply.Code == 550)
        {
            Assert.StartsWith("5.7.1 ", reply.Lines[0], StringComparison.Ordinal);
            Assert.Contains("suppression", reply.Text, StringComparison.OrdinalIgnoreCase);
        }

        return reply;
    }

    /// <summary>Waits for the skeleton's audit event of a call over the local socket: key id "local", channel "api".</summary>
    async Task AuditedLocallyAsync(string subject, string tenant, CancellationToken cancellationToken) =>
        await EventPoll.UntilAsync(harness.Audit.Records, events => events.Any(e => e.Action == "admin" && e.TokenId == "local" && e.Subject == subject
                && e.Tenant == tenant && e.Result == "ok" && e.Line.Contains("\"channel\":\"api\"", StringComparison.Ordinal)),
            () => !harness.IsRunning, events => $"no local admin audit event '{subject}' among {events.Count}", Wait, cancellationToken);

    Task<ProcessResult> CliAsync(params string[] args) => CliAsync(args, expectSuccess: true);

    async Task<ProcessResult> CliAsync(string[] args, bool expectSuccess)
    {
        var result = await harness.SmtpgwAsync([.. args, "--config", harness.ConfigPath]);
        output.WriteLine($"$ smtpgw {string.Join(' ', args)}\n{result.StandardOutput}{result.StandardError}");
        if (expectSuccess)
        {
            Assert.True(result.ExitCode == 0, $"smtpgw {string.Join(' ', args)}: {result}");
        }

        return result;
    }
}
