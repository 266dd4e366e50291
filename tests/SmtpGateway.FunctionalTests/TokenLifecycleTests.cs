using System.Diagnostics;
using System.Text.Json.Nodes;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 3, session tokens on a live gateway: <c>smtpgw token revoke</c> bites within one second, both at AUTH and at
/// the next MAIL FROM of a session that authenticated before; <c>token list --json</c> is a script-friendly array
/// that never shows a token; <c>check-config</c> names a domain two tenants claim.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class TokenLifecycleTests(GatewayHarness harness, ITestOutputHelper output) : IClassFixture<GatewayHarness>
{
    const string TenantA = "tenant-a";
    const string SenderA = "agent@tenant-a.example";
    static readonly TimeSpan Promise = TimeSpan.FromSeconds(1);
    static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(100);

    [Fact]
    public Task Revoked_token_is_refused_at_AUTH_and_at_the_next_MAIL_FROM_of_a_live_session_within_one_second() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var minted = await harness.MintTokenAsync(TenantA, "--description", "revoked on a live gateway");

        // A session that authenticated before the revoke, and works.
        using var live = await ConnectAsync(cts.Token);
        Assert.Equal(235, (await live.AuthPlainAsync(TenantA, minted.Token, cts.Token)).Code);
        Assert.Equal(250, (await live.CommandAsync($"MAIL FROM:<{SenderA}>", cts.Token)).Code);
        Assert.Equal(250, (await live.CommandAsync("RSET", cts.Token)).Code);

        // Control: a fresh AUTH with the token succeeds before the revoke.
        Assert.Equal(235, (await AuthOnceAsync(minted.Token, cts.Token)).Code);

        var revoke = await harness.TokenCliAsync("revoke", "--id", minted.Id);
        var clock = Stopwatch.StartNew();
        output.WriteLine(revoke.Output);
        Assert.True(revoke.ExitCode == 0, $"token revoke failed: {revoke}");
        Assert.Equal($"revoked {minted.Id} ({TenantA})\n", revoke.StandardOutput);

        // Poll both every 100 ms: the live session with MAIL FROM (then RSET while it is still accepted), and a new
        // session with AUTH. Keep polling past the promise (up to 3 s) so a failure reports the real latency.
        TimeSpan? liveRefusedAt = null, authRefusedAt = null;
        SmtpReply? liveReply = null, authReply = null;
        var polls = 0;
        while ((liveRefusedAt is null || authRefusedAt is null) && clock.Elapsed < TimeSpan.FromSeconds(3))
        {
            var tick = clock.Elapsed;
            polls++;
            if (liveRefusedAt is null)
            {
                var reply = await live.CommandAsync($"MAIL FROM:<{SenderA}>", cts.Token);
                if (reply.Code == 250)
                {
                    Assert.Equal(250, (await live.CommandAsync("RSET", cts.Token)).Code);
                }
                else
                {
                    (liveRefusedAt, liveReply) = (clock.Elapsed, reply);
                }
            }

            if (authRefusedAt is null)
            {
                var reply = await AuthOnceAsync(minted.Token, cts.Token);
                if (reply.Code != 235)
                {
                    (authRefusedAt, authReply) = (clock.Elapsed, reply);
                }
            }

            var wait = tick + PollInterval - clock.Elapsed;
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait, cts.Token);
            }
        }

        output.WriteLine($"after the revoke returned ({polls} polls): live session's MAIL FROM refused at {Ms(liveRefusedAt)} with {liveReply}; " +
                         $"new AUTH refused at {Ms(authRefusedAt)} with {authReply}");
        Assert.True(liveRefusedAt is not null, "the live session's MAIL FROM was still accepted 3 s after the revoke");
        Assert.True(authRefusedAt is not null, "AUTH with the revoked token still succeeded 3 s after the revoke");
        Assert.Equal(530, liveReply!.Code);
        Assert.StartsWith("5.7.0 ", liveReply.Lines[0], StringComparison.Ordinal);
        Assert.Equal("535 5.7.8 Authentication credentials invalid", authReply!.ToString());
        Assert.True(liveRefusedAt <= Promise, $"the live session saw the revocation after {Ms(liveRefusedAt)} (promise: 1 s)");
        Assert.True(authRefusedAt <= Promise, $"AUTH saw the revocation after {Ms(authRefusedAt)} (promise: 1 s)");

        // The session is no longer authenticated: re-AUTH with the revoked token is refused, and it cannot relay out.
        Assert.Equal("535 5.7.8 Authentication credentials invalid", (await live.AuthPlainAsync(TenantA, minted.Token, cts.Token)).ToString());
        Assert.Equal(250, (await live.CommandAsync($"MAIL FROM:<{SenderA}>", cts.Token)).Code);
        var relay = await live.CommandAsync("RCPT TO:<someone@example.net>", cts.Token);
        Assert.Equal(554, relay.Code);
        Assert.StartsWith("5.7.1 ", relay.Lines[0], StringComparison.Ordinal);

        var audit = harness.Audit;
        var check = await audit.WaitForAsync(e => e is { Action: "token-check", Result: "refused" } && e.TokenId == minted.Id,
            "token-check refused", TimeSpan.FromSeconds(5), cts.Token);
        Assert.Equal("revoked", check.Reason);
        Assert.Equal(TenantA, check.Tenant);
        var auth = await audit.WaitForAsync(e => e is { Action: "auth", Result: "refused" } && e.TokenId == minted.Id,
            "auth refused", TimeSpan.FromSeconds(5), cts.Token);
        Assert.Equal("revoked", auth.Reason);
    });

    [Fact]
    public Task Token_CLI_audit_events_are_kept_while_the_gateway_writes_its_own() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var audit = harness.Audit;

        // The control plane (a separate process) appends token-mint, token-revoke and key-rotate events to the same
        // audit.jsonl the running gateway writes to.
        var minted = await harness.MintTokenAsync(TenantA, "--description", "audited by the CLI");
        var revoke = await harness.TokenCliAsync("revoke", "--id", minted.Id);
        Assert.True(revoke.ExitCode == 0, $"token revoke failed: {revoke}");
        var rotate = await harness.TokenCliAsync("rotate-key", "--tenant", "tenant-b", "--grace", "10m");
        Assert.True(rotate.ExitCode == 0, $"token rotate-key failed: {rotate}");
        output.WriteLine("after the CLI:\n" + audit.Text());

        // Then the gateway writes events of its own: a legacy-relay session (tenant-a by 127.0.0.1) trying to send as
        // tenant-b (refused, cross-tenant).
        var marker = $"audit-{Guid.NewGuid():N}@tenant-b.example";
        using (var relay = await RawSmtpClient.ConnectAsync("127.0.0.1", harness.RelayPort, TimeSpan.FromSeconds(10), cts.Token))
        {
            Assert.Equal(250, (await relay.CommandAsync("EHLO audit.functional.test", cts.Token)).Code);
            Assert.Equal(550, (await relay.CommandAsync($"MAIL FROM:<{marker}>", cts.Token)).Code);
            await relay.CommandAsync("QUIT", cts.Token);
        }

        await audit.WaitForAsync(e => e is { Action: "send-as", Result: "refused" } && e.Subject == marker, "send-as refused (gateway)",
            TimeSpan.FromSeconds(5), cts.Token);
        output.WriteLine("after the gateway:\n" + audit.Text());

        var records = audit.Records();
        Assert.Empty(audit.MalformedLines());
        Assert.Contains(records, e => e is { Action: "token-mint", Result: "ok", Tenant: TenantA, Listener: "cli" } && e.TokenId == minted.Id);
        Assert.Contains(records, e => e is { Action: "token-revoke", Result: "ok", Tenant: TenantA, Listener: "cli" } && e.TokenId == minted.Id);
        Assert.Contains(records, e => e is { Action: "key-rotate", Result: "ok", Tenant: "tenant-b", Listener: "cli" });
    });

    [Fact]
    public Task Token_list_json_shows_state_active_then_revoked_and_never_the_token() => harness.RunAsync(output, async () =>
    {
        var minted = await harness.MintTokenAsync(TenantA, "--ttl", "30m", "--sender", "billing@tenant-a.example", "--description", "list me");
        var other = await harness.MintTokenAsync("tenant-b", "--description", "other tenant");

        var before = await ListAsync("--tenant", TenantA);
        var item = Assert.Single(before.Items, i => (string?)i["id"] == minted.Id);
        Assert.Equal(TenantA, (string?)item["tenant"]);
        Assert.Equal("active", (string?)item["state"]);
        Assert.Equal("list me", (string?)item["description"]);
        Assert.Equal(["billing@tenant-a.example"], item["senders"]!.AsArray().Select(s => (string?)s));
        var issued = DateTimeOffset.Parse((string)item["issued"]!, System.Globalization.CultureInfo.InvariantCulture);
        var expires = DateTimeOffset.Parse((string)item["expires"]!, System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(expires - issued, TimeSpan.FromMinutes(30) - TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(30) + TimeSpan.FromSeconds(1));
        Assert.DoesNotContain(before.Items, i => (string?)i["id"] == other.Id);
        Assert.All(before.Items, i => Assert.Equal(TenantA, (string?)i["tenant"]));
        AssertNoToken(before.Json, minted, other);

        var revoke = await harness.TokenCliAsync("revoke", "--id", minted.Id);
        Assert.True(revoke.ExitCode == 0, $"token revoke failed: {revoke}");

        var after = await ListAsync();
        Assert.Equal("revoked", (string?)Assert.Single(after.Items, i => (string?)i["id"] == minted.Id)["state"]);
        Assert.Equal("active", (string?)Assert.Single(after.Items, i => (string?)i["id"] == other.Id)["state"]);
        AssertNoToken(after.Json, minted, other);

        // Revoking an id that does not exist is an error, not a silent success.
        var unknown = await harness.TokenCliAsync("revoke", "--id", "tok_doesnotexist000");
        output.WriteLine(unknown.Output);
        Assert.NotEqual(0, unknown.ExitCode);
    });

    [Fact]
    public Task Check_config_refuses_a_domain_claimed_by_two_tenants_and_names_the_path_and_the_other_tenant() => harness.RunAsync(output, async () =>
    {
        // Control: the harness's own config (from config/gateway.json) passes. Then tenant-b also claims tenant-a's domain,
        // spelled differently (case, trailing dot): still the same domain.
        var bad = await harness.CheckChangedConfigAsync(output, "duplicate-domain.json",
            root => root["Tenants"]!["tenant-b"]!["Domains"] = new JsonArray("tenant-b.example", "Tenant-A.EXAMPLE."));
        Assert.NotEqual(0, bad.ExitCode);
        var error = Assert.Single(bad.StandardError.Split('\n'), l => l.Contains("Tenants:tenant-b:Domains:1", StringComparison.Ordinal));
        Assert.Contains("'tenant-a'", error, StringComparison.Ordinal);
        Assert.Contains("Tenant-A.EXAMPLE.", error, StringComparison.Ordinal);
        Assert.DoesNotContain("Configuration OK", bad.StandardOutput, StringComparison.Ordinal);
    });

    async Task<(string Json, IReadOnlyList<JsonObject> Items)> ListAsync(params string[] args)
    {
        var list = await harness.TokenCliAsync("list", ["--json", .. args]);
        output.WriteLine(list.Output);
        Assert.True(list.ExitCode == 0, $"token list --json failed: {list}");
        var array = Assert.IsType<JsonArray>(JsonNode.Parse(list.StandardOutput));
        return (list.StandardOutput, array.Select(n => Assert.IsType<JsonObject>(n)).ToList());
    }

    static void AssertNoToken(string text, params MintedToken[] tokens)
    {
        foreach (var token in tokens)
        {
            foreach (var form in SecretScan.Forms(TenantA, token.Token))
            {
                Assert.DoesNotContain(form, text, StringComparison.Ordinal);
            }
        }

        Assert.DoesNotContain("sgw1.", text, StringComparison.Ordinal);
    }

    async Task<RawSmtpClient> ConnectAsync(CancellationToken cancellationToken)
    {
        var client = await RawSmtpClient.ConnectAsync("127.0.0.1", harness.SubmissionsPort, TimeSpan.FromSeconds(10), cancellationToken, implicitTls: true);
        try
        {
            Assert.Equal(220, client.Banner.Code);
            var ehlo = await client.CommandAsync("EHLO revoke.functional.test", cancellationToken);
            Assert.Equal(250, ehlo.Code);
            Assert.Contains("AUTH PLAIN LOGIN", ehlo.Lines);
            return client;
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    /// <summary>A new implicit-TLS session: EHLO, AUTH PLAIN with the token, QUIT. Returns the AUTH reply.</summary>
    async Task<SmtpReply> AuthOnceAsync(string token, CancellationToken cancellationToken)
    {
        using var client = await ConnectAsync(cancellationToken);
        var reply = await client.AuthPlainAsync(TenantA, token, cancellationToken);
        await client.CommandAsync("QUIT", cancellationToken);
        return reply;
    }

    static string Ms(TimeSpan? t) => t is { } v ? $"{v.TotalMilliseconds:F0} ms" : "never";
}
