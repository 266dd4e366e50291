using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue #13, tokens, DKIM and reload through the admin API of a live gateway: the authorisation matrix on every route,
/// a minted token working for SMTP AUTH until it is revoked, every input error listed at once, and the CLI verbs going
/// through the API while the gateway runs (and on the data directory when it does not).
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class AdminTokenDkimTests(GatewayHarness harness, ITestOutputHelper output) : IClassFixture<GatewayHarness>
{
    const string TenantA = "tenant-a";
    const string DomainA = "tenant-a.example";

    Task<AdminMatrix> MatrixAsync() => AdminMatrix.CreateAsync(harness, args => harness.SmtpgwAsync([.. args, "--config", harness.ConfigPath]));

    [Fact]
    public Task Token_routes_follow_the_matrix_and_a_minted_token_authenticates_until_it_is_revoked() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var matrix = await MatrixAsync();
        var minted = await matrix.AssertAsync(HttpMethod.Post, "/api/v1/tenants/{tenant}/tokens",
            () => """{"ttl":"15m","senders":["agent@tenant-a.example"],"description":"matrix"}""", HttpStatusCode.Created, cts.Token);
        var mintedJson = JsonNode.Parse(minted)!;
        Assert.StartsWith("sgw1.", (string?)mintedJson["token"], StringComparison.Ordinal);
        Assert.Equal(TenantA, (string?)mintedJson["tenant"]);
        Assert.Equal(["agent@tenant-a.example"], mintedJson["senders"]!.AsArray().Select(s => (string?)s));

        var list = await matrix.AssertAsync(HttpMethod.Get, "/api/v1/tenants/{tenant}/tokens", cancellationToken: cts.Token);
        var listed = Assert.Single(JsonNode.Parse(list)!.AsArray(), t => (string?)t!["id"] == (string?)mintedJson["id"])!;
        Assert.Equal("active", (string?)listed["state"]);
        Assert.DoesNotContain("sgw1.", list, StringComparison.Ordinal);

        // Revocation is idempotent, so the same id serves both successful calls of the matrix.
        var victim = await MintAsync(harness.OperatorKey, """{"ttl":"10m"}""", cts.Token);
        await matrix.AssertAsync(HttpMethod.Delete, $"/api/v1/tenants/{{tenant}}/tokens/{victim.Id}", cancellationToken: cts.Token);
        await matrix.AssertAsync(HttpMethod.Post, "/api/v1/tenants/{tenant}/tokens/rotate-key", () => """{"grace":"1h"}""", cancellationToken: cts.Token);

        // A token minted through the API (tenant-a's own key) authenticates; after DELETE, AUTH is refused at once.
        var token = await MintAsync(matrix.TenantAKey, """{"ttl":"30m","description":"api"}""", cts.Token);
        Assert.Equal(235, (await AuthOnceAsync(token.Token, cts.Token)).Code);

        // tenant-b's key cannot revoke tenant-a's token, even under its own tenant: 404 exactly as for an unknown id.
        using var b = harness.AdminClient(matrix.TenantBKey);
        var foreign = await b.DeleteAsync($"api/v1/tenants/tenant-b/tokens/{token.Id}", cts.Token);
        var unknown = await b.DeleteAsync("api/v1/tenants/tenant-b/tokens/tok_doesnotexist000000", cts.Token);
        Assert.Equal(HttpStatusCode.NotFound, foreign.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        Assert.Equal(WithoutTrace(await unknown.Content.ReadAsStringAsync(cts.Token)), WithoutTrace(await foreign.Content.ReadAsStringAsync(cts.Token)));
        Assert.Equal(235, (await AuthOnceAsync(token.Token, cts.Token)).Code);

        using var a = harness.AdminClient(matrix.TenantAKey);
        var revoked = await a.DeleteAsync($"api/v1/tenants/{TenantA}/tokens/{token.Id}", cts.Token);
        Assert.Equal(HttpStatusCode.OK, revoked.StatusCode);
        var clock = Stopwatch.StartNew();
        SmtpReply reply;
        while ((reply = await AuthOnceAsync(token.Token, cts.Token)).Code == 235 && clock.Elapsed < TimeSpan.FromSeconds(3))
        {
            await Task.Delay(100, cts.Token);
        }

        Assert.Equal("535 5.7.8 Authentication credentials invalid", reply.ToString());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1), $"AUTH accepted the revoked token for {clock.Elapsed}");

        // The change is audited like the CLI's, with the admin key that made it.
        var audit = await harness.Audit.WaitForAsync(e => e is { Action: "token-revoke", Result: "ok" } && e.TokenId == token.Id, "token-revoke", TimeSpan.FromSeconds(5), cts.Token);
        Assert.Equal("api", audit.Channel);
        Assert.Contains("admin key ", audit.Subject, StringComparison.Ordinal);
    });

    [Fact]
    public Task Bad_input_is_answered_400_with_every_error_listed() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var op = harness.AdminClient(harness.OperatorKey);

        var mint = await op.PostAsync($"api/v1/tenants/{TenantA}/tokens",
            Json("""{"ttl":"forever","senders":["someone@tenant-b.example","not a domain"],"description":"x"}"""), cts.Token);
        var errors = await ValidationErrorsAsync(mint, cts.Token);
        Assert.Contains("forever", Assert.Single(errors["ttl"]), StringComparison.Ordinal);
        Assert.Equal(2, errors["senders"].Length);

        var keygen = await op.PostAsync($"api/v1/tenants/{TenantA}/dkim/keygen",
            Json("""{"domain":"tenant-b.example","selector":"no spaces!","algorithm":"dsa"}"""), cts.Token);
        errors = await ValidationErrorsAsync(keygen, cts.Token);
        Assert.Equal(["algorithm", "domain", "selector"], errors.Keys.Order());

        var rotate = await op.PostAsync($"api/v1/tenants/{TenantA}/tokens/rotate-key", Json("""{"grace":"soon"}"""), cts.Token);
        Assert.Contains("soon", Assert.Single((await ValidationErrorsAsync(rotate, cts.Token))["grace"]), StringComparison.Ordinal);

        var dkimRotate = await op.PostAsync($"api/v1/tenants/{TenantA}/dkim/rotate", Json("""{"domain":"nope..example","activate":true,"retire":true}"""), cts.Token);
        Assert.Equal(["domain", "step"], (await ValidationErrorsAsync(dkimRotate, cts.Token)).Keys.Order());

        // A body that is not the request's JSON at all is refused the same way, never a 500.
        foreach (var body in new[] { "{not json", """{"senders":"one@tenant-a.example"}""" })
        {
            var malformed = await op.PostAsync($"api/v1/tenants/{TenantA}/tokens", Json(body), cts.Token);
            Assert.Equal(HttpStatusCode.BadRequest, malformed.StatusCode);
            Assert.Equal("application/problem+json", malformed.Content.Headers.ContentType?.MediaType);
        }

        // The CLI through the API prints the same errors, each as `error: ...`, and exits 1.
        var cli = await harness.TokenCliAsync("mint", "--tenant", TenantA, "--ttl", "forever", "--sender", "someone@tenant-b.example");
        output.WriteLine(cli.Output);
        Assert.Equal(1, cli.ExitCode);
        Assert.Equal("", cli.StandardOutput);
        var lines = cli.StandardError.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Count(l => l.StartsWith("error: ", StringComparison.Ordinal)));
    });

    [Fact]
    public Task Dkim_routes_follow_the_matrix_and_a_generated_key_is_listed_with_its_record() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var matrix = await MatrixAsync();
        var n = 0;
        var created = await matrix.AssertAsync(HttpMethod.Post, "/api/v1/tenants/{tenant}/dkim/keygen",
            () => $$"""{"domain":"{{DomainA}}","selector":"matrix{{++n}}","algorithm":"ed25519"}""", HttpStatusCode.Created, cts.Token);
        var key = JsonNode.Parse(created)!;
        Assert.Equal("ed25519", (string?)key["algorithm"]);
        Assert.Matches(@"^matrix\d+\._domainkey\.tenant-a\.example\. IN TXT ""v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=""$", (string?)key["record"]);

        var listed = JsonNode.Parse(await matrix.AssertAsync(HttpMethod.Get, "/api/v1/tenants/{tenant}/dkim", cancellationToken: cts.Token))!.AsArray();
        var selector = Assert.Single(listed, s => (string?)s!["selector"] == (string?)key["selector"])!;
        Assert.Equal((string?)key["record"], (string?)selector["record"]);
        Assert.Equal($"{key["selector"]}._domainkey.{DomainA}.", (string?)selector["name"]);
        Assert.Contains((string?)selector["state"], new[] { "active", "pending" });

        // Step 1 of a rotation adds pending selectors (once: the second call finds them there), each with its record.
        var rotated = JsonNode.Parse(await matrix.AssertAsync(HttpMethod.Post, "/api/v1/tenants/{tenant}/dkim/rotate",
            () => $$"""{"domain":"{{DomainA}}"}""", cancellationToken: cts.Token))!;
        Assert.Equal("publish", (string?)rotated["step"]);
        using var op = harness.AdminClient(harness.OperatorKey);
        var after = (await op.GetFromJsonAsync<JsonArray>($"api/v1/tenants/{TenantA}/dkim", cts.Token))!;
        Assert.Contains(after, s => (string?)s!["state"] == "pending");

        // A selector that exists is a conflict, not a second key.
        var again = await op.PostAsync($"api/v1/tenants/{TenantA}/dkim/keygen", Json($$"""{"domain":"{{DomainA}}","selector":"{{key["selector"]}}","algorithm":"ed25519"}"""), cts.Token);
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
        Assert.Equal("application/problem+json", again.Content.Headers.ContentType?.MediaType);
    });

    [Fact]
    public Task Reload_is_for_operators_and_reports_the_tenants_or_every_error_of_a_rejected_config() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var matrix = await MatrixAsync();
        using var none = harness.AdminClient(null);
        Assert.Equal(HttpStatusCode.Unauthorized, (await none.PostAsync("api/v1/reload", null, cts.Token)).StatusCode);
        using var tenant = harness.AdminClient(matrix.TenantAKey);
        var forbidden = await tenant.PostAsync("api/v1/reload", null, cts.Token);
        Assert.Equal(HttpStatusCode.Forbidden, forbidden.StatusCode);
        Assert.Equal("application/problem+json", forbidden.Content.Headers.ContentType?.MediaType);

        using var op = harness.AdminClient(harness.OperatorKey);
        var ok = await op.PostAsync("api/v1/reload", null, cts.Token);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal(2, (int)JsonNode.Parse(await ok.Content.ReadAsStringAsync(cts.Token))!["tenants"]!);

        var original = await File.ReadAllTextAsync(harness.ConfigPath, cts.Token);
        try
        {
            var bad = JsonNode.Parse(original)!;
            bad["Tenants"]!["tenant-b"]!["Domains"] = new JsonArray("tenant-b.example", "tenant-a.example");
            await File.WriteAllTextAsync(harness.ConfigPath, bad.ToJsonString(), cts.Token);
            var rejected = await op.PostAsync("api/v1/reload", null, cts.Token);
            var body = await rejected.Content.ReadAsStringAsync(cts.Token);
            output.WriteLine(body);
            Assert.Equal(HttpStatusCode.Conflict, rejected.StatusCode);
            Assert.Contains("Tenants:tenant-b:Domains:1", body, StringComparison.Ordinal);
        }
        finally
        {
            await File.WriteAllTextAsync(harness.ConfigPath, original, CancellationToken.None);
        }

        var restored = await op.PostAsync("api/v1/reload", null, cts.Token);
        Assert.Equal(HttpStatusCode.OK, restored.StatusCode);

        var openapi = await none.GetStringAsync("openapi.json", cts.Token);
        var operations = Regex.Matches(openapi, "\"operationId\":\\s*\"(\\w+)\"").Select(m => m.Groups[1].Value).ToHashSet();
        foreach (var operation in new[] { "ListTokens", "MintToken", "RevokeToken", "RotateTokenKey", "ListDkimSelectors", "GenerateDkimKey", "RotateDkimKeys", "Reload" })
        {
            Assert.Contains(operation, operations);
        }
    });

    [Fact]
    public Task The_CLI_goes_through_the_API_while_the_gateway_runs_and_acts_on_the_data_directory_when_it_does_not() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(180));
        var audit = harness.Audit;

        // Live gateway: each verb's audit event comes from the gateway's API (channel "api", the local socket's key id).
        var minted = await harness.MintTokenAsync(TenantA, "--description", "cli through the api");
        Assert.Equal(235, (await AuthOnceAsync(minted.Token, cts.Token)).Code);
        var mint = await audit.WaitForAsync(e => e is { Action: "token-mint" } && e.TokenId == minted.Id, "token-mint", TimeSpan.FromSeconds(5), cts.Token);
        Assert.Equal(("api", "cli"), (mint.Channel, mint.Listener));
        Assert.EndsWith("admin key local", mint.Subject, StringComparison.Ordinal);

        var revoke = await harness.TokenCliAsync("revoke", "--id", minted.Id);
        Assert.True(revoke.ExitCode == 0, revoke.ToString());
        Assert.Equal($"revoked {minted.Id} ({TenantA})\n", revoke.StandardOutput);
        Assert.Equal(535, (await AuthOnceAsync(minted.Token, cts.Token)).Code);
        await audit.WaitForAsync(e => e is { Action: "token-revoke" } && e.TokenId == minted.Id && e.Channel == "api", "token-revoke via api", TimeSpan.FromSeconds(5), cts.Token);

        var rotate = await harness.TokenCliAsync("rotate-key", "--tenant", "tenant-b", "--grace", "1h");
        Assert.True(rotate.ExitCode == 0, rotate.ToString());
        Assert.Matches(@"^tenant tenant-b: new key \S+; tokens under older keys are refused from \S+\n$", rotate.StandardOutput);
        await audit.WaitForAsync(e => e is { Action: "key-rotate", Tenant: "tenant-b", TokenId: "local" } && e.Channel == "api", "key-rotate via api", TimeSpan.FromSeconds(5), cts.Token);

        var keygen = await CliAsync("dkim", "keygen", "--tenant", TenantA, "--domain", DomainA, "--selector", "cli1", "--alg", "rsa2048");
        Assert.Matches(@"^cli1\._domainkey\.tenant-a\.example\. IN TXT ""v=DKIM1; k=rsa; p=[^""]{1,238}"" ""[^""]+""\n$", keygen.StandardOutput);
        Assert.Contains("tenant-a: tenant-a.example selector cli1 (Rsa2048) is ", keygen.StandardError, StringComparison.Ordinal);
        await audit.WaitForAsync(e => e is { Action: "dkim-keygen", TokenId: "local" } && e.Channel == "api", "dkim-keygen via api", TimeSpan.FromSeconds(5), cts.Token);
        using var op = harness.AdminClient(harness.OperatorKey);
        Assert.Contains((await op.GetFromJsonAsync<JsonArray>($"api/v1/tenants/{TenantA}/dkim", cts.Token))!, s => (string?)s!["selector"] == "cli1");

        var dns = await CliAsync("dkim", "dns", "--tenant", TenantA, "--json");
        Assert.Contains($"cli1._domainkey.{DomainA}.", JsonSerializer.Deserialize<Dictionary<string, string>>(dns.StandardOutput)!.Keys);
        var pending = await CliAsync("dkim", "rotate", "--tenant", TenantA, "--domain", DomainA);
        Assert.Contains("--activate", pending.StandardError, StringComparison.Ordinal);
        await audit.WaitForAsync(e => e is { Action: "dkim-rotate", TokenId: "local" } && e.Channel == "api", "dkim-rotate via api", TimeSpan.FromSeconds(5), cts.Token);
        var unknown = await harness.TokenCliAsync("revoke", "--id", "tok_doesnotexist000");
        Assert.Equal(1, unknown.ExitCode);
        Assert.StartsWith("error: ", unknown.StandardError, StringComparison.Ordinal);

        // No gateway (killed: its socket file stays, nobody answers): the same verbs work on the data directory.
        await harness.KillGatewayAsync();
        try
        {
            var offline = await harness.MintTokenAsync(TenantA, "--description", "offline");
            var offlineMint = await audit.WaitForAsync(e => e is { Action: "token-mint" } && e.TokenId == offline.Id, "offline token-mint", TimeSpan.FromSeconds(5), cts.Token);
            Assert.Equal((null, "cli"), (offlineMint.Channel, offlineMint.Listener));
            var offlineKey = await CliAsync("dkim", "keygen", "--tenant", TenantA, "--domain", DomainA, "--selector", "offline1", "--alg", "ed25519");
            Assert.StartsWith("offline1._domainkey.tenant-a.example. IN TXT ", offlineKey.StandardOutput, StringComparison.Ordinal);
            var offlineRevoke = await harness.TokenCliAsync("revoke", "--id", offline.Id);
            Assert.True(offlineRevoke.ExitCode == 0, offlineRevoke.ToString());
        }
        finally
        {
            await harness.StartGatewayAsync(cts.Token);
        }

        // The restarted gateway sees what the CLI did while it was down.
        Assert.Contains((await op.GetFromJsonAsync<JsonArray>($"api/v1/tenants/{TenantA}/dkim", cts.Token))!, s => (string?)s!["selector"] == "offline1");
    });

    async Task<ProcessResult> CliAsync(params string[] args)
    {
        var result = await harness.SmtpgwAsync([.. args, "--config", harness.ConfigPath]);
        output.WriteLine($"$ smtpgw {string.Join(' ', args)}\n{result.Output}");
        Assert.True(result.ExitCode == 0, $"smtpgw {string.Join(' ', args)} failed: {result}");
        return result;
    }

    async Task<MintedToken> MintAsync(string key, string body, CancellationToken cancellationToken)
    {
        using var client = harness.AdminClient(key);
        var response = await client.PostAsync($"api/v1/tenants/{TenantA}/tokens", Json(body), cancellationToken);
        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"mint: {response.StatusCode} {text}");
        var json = JsonNode.Parse(text)!;
        return new MintedToken((string)json["token"]!, (string)json["id"]!);
    }

    static async Task<Dictionary<string, string[]>> ValidationErrorsAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        var body = await response.Content.ReadAsStringAsync(cancellationToken);
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{response.StatusCode} {body}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        return JsonSerializer.Deserialize<Dictionary<string, string[]>>(JsonNode.Parse(body)!["errors"]!.ToJsonString())!;
    }

    static StringContent Json(string body) => new(body, System.Text.Encoding.UTF8, "application/json");

    static string WithoutTrace(string body) => Regex.Replace(body, "\"traceId\":\"[^\"]*\"", "\"traceId\":\"\"");

    /// <summary>A new implicit-TLS session: EHLO, AUTH PLAIN as tenant-a with the token, QUIT. Returns the AUTH reply.</summary>
    async Task<SmtpReply> AuthOnceAsync(string token, CancellationToken cancellationToken)
    {
        using var client = await RawSmtpClient.ConnectAsync("127.0.0.1", harness.SubmissionsPort, TimeSpan.FromSeconds(10), cancellationToken, implicitTls: true);
        Assert.Equal(250, (await client.CommandAsync("EHLO admin.functional.test", cancellationToken)).Code);
        var reply = await client.AuthPlainAsync(TenantA, token, cancellationToken);
        await client.CommandAsync("QUIT", cancellationToken);
        return reply;
    }
}
