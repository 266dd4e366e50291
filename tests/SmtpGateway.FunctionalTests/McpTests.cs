using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MimeKit;
using ModelContextProtocol.Client;
using ModelContextProtocol.Protocol;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// The gateway of <see cref="GatewayHarness"/> with DKIM keys for tenant-a (ed25519 "ed1" and rsa2048 "rsa1", made by
/// `smtpgw dkim keygen` in its SoftHSM2 token, so its mail is signed) and a session token for each tenant.
/// </summary>
public sealed class McpHarness : GatewayHarness
{
    internal MintedToken TokenA { get; private set; } = new("", "");

    internal MintedToken TokenB { get; private set; } = new("", "");

    public override async Task InitializeAsync()
    {
        await base.InitializeAsync();
        try
        {
            foreach (var (selector, algorithm) in new[] { ("ed1", "ed25519"), ("rsa1", "rsa2048") })
            {
                var keygen = await SmtpgwAsync("dkim", "keygen", "--config", ConfigPath, "--tenant", McpTests.TenantA, "--domain", McpTests.DomainA,
                    "--selector", selector, "--alg", algorithm);
                if (keygen.ExitCode != 0)
                {
                    throw new InvalidOperationException($"smtpgw dkim keygen {selector} failed: {keygen}");
                }
            }

            TokenA = await MintTokenAsync(McpTests.TenantA, "--description", "mcp functional tests");
            TokenB = await MintTokenAsync(McpTests.TenantB, "--description", "mcp functional tests");
        }
        catch (Exception e)
        {
            Failed = true;
            throw new InvalidOperationException($"MCP harness failed to start: {e.Message}\n{Diagnostics()}", e);
        }
    }

    /// <summary>One small message over the relay listener from 127.0.0.1 (tenant-a's network); its queue id.</summary>
    internal async Task<string> SubmitAsTenantAAsync(string from, string recipient, string subject, ITestOutputHelper output, CancellationToken cancellationToken)
    {
        using var smtp = await ConnectRelayFromAsync("127.0.0.1", output, cancellationToken);
        return await SubmitAsync(smtp, from, [recipient], subject, cancellationToken);
    }
}

/// <summary>
/// Issue #14 end to end: the MCP tool server on the admin endpoint (/mcp, streamable HTTP, bearer session token) and the
/// `smtpgw mcp` stdio bridge, driven by the official C# SDK's client against the real gateway process, with mail landing
/// in Postfix's smtp-sink and its DKIM signatures checked by python3-dkim.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class McpTests(McpHarness harness, ITestOutputHelper output) : IClassFixture<McpHarness>
{
    internal const string TenantA = "tenant-a";
    internal const string DomainA = "tenant-a.example";
    internal const string TenantB = "tenant-b";
    const string SendEmail = "send_email";
    const string MessageStatus = "get_message_status";
    const string SendingDomains = "list_sending_domains";
    static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Fact]
    public Task Tools_list_names_the_three_tools_and_list_sending_domains_shows_tenant_a_selectors() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        await using var client = await ConnectAsync(harness.TokenA.Token, cts.Token);
        var tools = await client.ListToolsAsync(cancellationToken: cts.Token);
        Assert.Equal([MessageStatus, SendingDomains, SendEmail], tools.Select(t => t.Name).Order(StringComparer.Ordinal));

        var domains = await client.CallToolAsync(SendingDomains, new Dictionary<string, object?>(), cancellationToken: cts.Token);
        var json = Structured(domains);
        var domain = Assert.Single(json["domains"]!.AsArray());
        Assert.Equal(DomainA, (string?)domain!["domain"]);
        var selectors = domain["selectors"]!.AsArray();
        Assert.Equal(["ed1", "rsa1"], selectors.Select(s => (string?)s!["selector"]).Order(StringComparer.Ordinal));
        Assert.All(selectors, s => Assert.Contains((string?)s!["dns"], new[] { "published", "missing", "mismatch", "dns_error" }));
        Assert.Contains(selectors, s => (string?)s!["algorithm"] == "ed25519-sha256");

        // An argument list_sending_domains does not take is named in the error.
        var extra = await client.CallToolAsync(SendingDomains, new Dictionary<string, object?> { ["tenant"] = TenantB }, cancellationToken: cts.Token);
        Assert.Contains("tenant", ErrorText(extra), StringComparison.Ordinal);
    });

    [Fact]
    public Task Send_email_over_http_reaches_every_recipient_signed_twice_without_bcc_and_its_status_turns_delivered() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(150));
        var marker = Marker();
        var (to, cc, bcc) = ($"to-{marker}@example.net", $"cc-{marker}@example.net", $"bcc-{marker}@example.org");
        var attachment = RandomNumberGenerator.GetBytes(3000);
        await using var client = await ConnectAsync(harness.TokenA.Token, cts.Token);
        var sent = await client.CallToolAsync(SendEmail, new Dictionary<string, object?>
        {
            ["from"] = $"agent@{DomainA}",
            ["to"] = new[] { to },
            ["cc"] = new[] { cc },
            ["bcc"] = new[] { bcc },
            ["subject"] = $"mcp {marker}",
            ["text"] = "Plain text body.",
            ["html"] = "<p>HTML <b>body</b>.</p>",
            ["attachments"] = new[]
            {
                new Dictionary<string, object?> { ["filename"] = "data.bin", ["content_type"] = "application/octet-stream", ["content_base64"] = Convert.ToBase64String(attachment) },
            },
            ["headers"] = new Dictionary<string, string> { ["List-Unsubscribe"] = $"<mailto:unsubscribe@{DomainA}>" },
        }, cancellationToken: cts.Token);
        var result = Structured(sent);
        var queueId = (string?)result["queue_id"];
        Assert.False(string.IsNullOrEmpty(queueId), result.ToJsonString());
        Assert.Equal(3, (int?)result["recipients"]);
        Assert.Equal("queued", (string?)result["status"]);

        var messages = await harness.Sink.WaitAsync(ms => new[] { to, cc, bcc }.All(r => ms.Any(m => m.HasRecipient(r))), Wait, cts.Token);
        var ours = messages.Where(m => m.HasRecipient(to) || m.HasRecipient(cc) || m.HasRecipient(bcc)).ToList();
        var records = await DkimVerifier.RecordsAsync(harness, TenantA, output);
        foreach (var message in ours)
        {
            var headers = HeaderSection(message);
            Assert.DoesNotContain(bcc, headers, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("\nBcc:", "\n" + headers, StringComparison.OrdinalIgnoreCase);
            Assert.Contains($"unsubscribe@{DomainA}", message.Header("List-Unsubscribe") ?? "", StringComparison.Ordinal);
            Assert.Equal(new[] { true, true }, await DkimVerifier.VerifyAsync(message, records, output));

            var mime = await MimeMessage.LoadAsync(new MemoryStream(Encoding.Latin1.GetBytes(message.Content.Replace("\n", "\r\n", StringComparison.Ordinal))), cts.Token);
            var part = Assert.Single(mime.Attachments.OfType<MimePart>());
            Assert.Equal("data.bin", part.FileName);
            using var decoded = new MemoryStream();
            await Assert.IsType<MimeContent>(part.Content).DecodeToAsync(decoded, cts.Token);
            Assert.Equal(attachment, decoded.ToArray());
            Assert.Contains("Plain text body.", mime.TextBody, StringComparison.Ordinal);
            Assert.Contains("<b>body</b>", mime.HtmlBody, StringComparison.Ordinal);
        }

        // The delivery events are in the tenant's event file; get_message_status reads the same file.
        await harness.WaitForEventsAsync(TenantA, es => es.Count(e => e.Id == queueId && e.Event == "delivered") == 3, Wait, cts.Token);
        var status = Structured(await client.CallToolAsync(MessageStatus, new Dictionary<string, object?> { ["queue_id"] = queueId }, cancellationToken: cts.Token));
        Assert.Equal(queueId, (string?)status["queue_id"]);
        var delivered = status["events"]!.AsArray().Where(e => (string?)e!["event"] == "delivered").Select(e => (string?)e!["recipient"]).Order(StringComparer.Ordinal);
        Assert.Equal(new[] { to, cc, bcc }.Order(StringComparer.Ordinal), delivered);
    });

    [Fact]
    public Task The_stdio_bridge_sends_with_the_token_from_the_environment_or_from_a_0600_token_file() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(150));

        // SMTPGW_TOKEN.
        await using (var bridge = await BridgeAsync(harness.TokenA.Token, tokenFile: null, cts.Token))
        {
            Assert.Contains(SendEmail, (await bridge.ListToolsAsync(cancellationToken: cts.Token)).Select(t => t.Name));
            await SendAndAwaitAsync(bridge, "stdio-env", cts.Token);
        }

        // --token-file, mode 0600, and no SMTPGW_TOKEN.
        var file = Path.Combine(harness.WorkDirectory, $"token-{Marker()}");
        await File.WriteAllTextAsync(file, harness.TokenA.Token + "\n", cts.Token);
        File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        await using (var bridge = await BridgeAsync(token: null, tokenFile: file, cts.Token))
        {
            await SendAndAwaitAsync(bridge, "stdio-file", cts.Token);
        }
    });

    [Fact]
    public Task Smtpgw_mcp_writes_nothing_but_json_rpc_on_stdout() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));

        // An agent runtime's conversation: initialize, initialized, tools/list; then end of input. Everything on stdout is
        // JSON-RPC (the bridge's logs go to stderr), and the bridge exits 0 when its input ends.
        var (fileName, prefix) = RepoPaths.Smtpgw();
        using var raw = ChildProcess.Start("smtpgw-mcp-raw", fileName, [.. prefix, "mcp", "--config", harness.ConfigPath], harness.WorkDirectory,
            new Dictionary<string, string?> { ["SMTPGW_TOKEN"] = harness.TokenA.Token, ["DOTNET_NOLOGO"] = "1" }, keepStandardInputOpen: true);
        await raw.WriteLineAsync("""{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"functional-test","version":"1"}}}""");
        await AnswerAsync(raw, 1, cts.Token);
        await raw.WriteLineAsync("""{"jsonrpc":"2.0","method":"notifications/initialized"}""");
        await raw.WriteLineAsync("""{"jsonrpc":"2.0","id":2,"method":"tools/list"}""");
        var tools = await AnswerAsync(raw, 2, cts.Token);
        Assert.Equal(3, tools["result"]!["tools"]!.AsArray().Count);
        raw.CloseStandardInput();
        await raw.Exited.WaitAsync(TimeSpan.FromSeconds(60), cts.Token);
        output.WriteLine(raw.Output);
        foreach (var line in raw.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var parsed = Record.Exception(() => JsonDocument.Parse(line).Dispose());
            Assert.True(parsed is null, $"stdout line is not JSON: {line}");
        }

        Assert.Equal(0, raw.ExitCode);
    });

    [Fact]
    public Task Smtpgw_mcp_without_a_usable_token_exits_with_the_reason_on_stderr_and_nothing_on_stdout() => harness.RunAsync(output, async () =>
    {
        var (fileName, prefix) = RepoPaths.Smtpgw();
        string[] args = [.. prefix, "mcp", "--config", harness.ConfigPath];

        // No token at all: a usage error before any connection.
        var none = await ChildProcess.RunCapturedAsync(fileName, args, harness.WorkDirectory, TimeSpan.FromSeconds(60),
            new Dictionary<string, string?> { ["SMTPGW_TOKEN"] = null, ["DOTNET_NOLOGO"] = "1" });
        output.WriteLine(none.Output);
        Assert.Equal(2, none.ExitCode);
        Assert.Equal("", none.StandardOutput);
        Assert.Contains("SMTPGW_TOKEN", none.StandardError, StringComparison.Ordinal);

        // A token the gateway refuses: the bridge proves it at start and exits 1 with the gateway's own sentence.
        var forged = harness.TokenA.Token[..^4] + (harness.TokenA.Token.EndsWith("AAAA", StringComparison.Ordinal) ? "BBBB" : "AAAA");
        var refused = await ChildProcess.RunCapturedAsync(fileName, args, harness.WorkDirectory, TimeSpan.FromSeconds(60),
            new Dictionary<string, string?> { ["SMTPGW_TOKEN"] = forged, ["DOTNET_NOLOGO"] = "1" });
        output.WriteLine(refused.Output);
        Assert.Equal(1, refused.ExitCode);
        Assert.Equal("", refused.StandardOutput);
        Assert.Contains("not valid", refused.StandardError, StringComparison.Ordinal);
    });

    [Fact]
    public Task Tenant_b_cannot_see_tenant_a_messages_nor_send_as_tenant_a_and_the_attempt_is_audited() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        var marker = Marker();
        var idA = await harness.SubmitAsTenantAAsync($"app@{DomainA}", $"owner-{marker}@example.net", $"tenant-a {marker}", output, cts.Token);
        await using var b = await ConnectAsync(harness.TokenB.Token, cts.Token);

        var foreign = await b.CallToolAsync(MessageStatus, new Dictionary<string, object?> { ["queue_id"] = idA }, cancellationToken: cts.Token);
        var madeUp = Convert.ToHexString(RandomNumberGenerator.GetBytes(idA.Length / 2 + 1))[..idA.Length];
        var unknown = await b.CallToolAsync(MessageStatus, new Dictionary<string, object?> { ["queue_id"] = madeUp }, cancellationToken: cts.Token);
        output.WriteLine($"foreign id: {ErrorText(foreign)}\nmade-up id: {ErrorText(unknown)}");
        Assert.Equal(ErrorText(unknown).Replace(madeUp, "<id>", StringComparison.Ordinal), ErrorText(foreign).Replace(idA, "<id>", StringComparison.Ordinal));
        Assert.Null(foreign.StructuredContent);

        var recipient = $"ceo-victim-{marker}@example.net";
        var spoof = await b.CallToolAsync(SendEmail, new Dictionary<string, object?>
        {
            ["from"] = $"ceo@{DomainA}",
            ["to"] = new[] { recipient },
            ["subject"] = $"wire transfer {marker}",
            ["text"] = "Please pay.",
        }, cancellationToken: cts.Token);
        output.WriteLine($"send as tenant-a: {ErrorText(spoof)}");
        Assert.Matches(@"\b5\d\d 5\.\d{1,3}\.\d{1,3}\b", ErrorText(spoof));

        var audit = await harness.Audit.WaitForAsync(e => e.CrossTenant && e.TokenId == harness.TokenB.Id && e.Channel == "mcp", "cross-tenant via mcp", Wait, cts.Token);
        Assert.Contains(audit.Action, new[] { "send-as", "header-from" });
        Assert.DoesNotContain(harness.Sink.Messages(), m => m.HasRecipient(recipient));
        Assert.DoesNotContain(await QueuedAsync(), q => q.Recipients.Contains(recipient));
    });

    [Fact]
    public Task Requests_without_a_valid_session_token_are_refused_401_and_a_bridge_reports_a_revoked_token_as_a_tool_error() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using (var none = await PostInitializeAsync(bearer: null, cts.Token))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, none.StatusCode);
            Assert.Equal("Bearer", Assert.Single(none.Headers.WwwAuthenticate).Scheme);
        }

        var refused = await Record.ExceptionAsync(async () => await (await ConnectAsync(token: null, cts.Token)).DisposeAsync());
        Assert.Equal(HttpStatusCode.Unauthorized, Assert.IsType<HttpRequestException>(Innermost<HttpRequestException>(refused)).StatusCode);

        using (var operatorKey = await PostInitializeAsync(harness.OperatorKey, cts.Token))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, operatorKey.StatusCode);
            Assert.Contains("invalid_token", Assert.Single(operatorKey.Headers.WwwAuthenticate).Parameter, StringComparison.Ordinal);
        }

        var victim = await harness.MintTokenAsync(TenantA, "--description", "mcp revoke");
        using (var valid = await PostInitializeAsync(victim.Token, cts.Token))
        {
            Assert.Equal(HttpStatusCode.OK, valid.StatusCode);
        }

        await using var bridge = await BridgeAsync(victim.Token, tokenFile: null, cts.Token);
        Assert.Equal(3, (await bridge.ListToolsAsync(cancellationToken: cts.Token)).Count);

        var revoke = await harness.TokenCliAsync("revoke", "--id", victim.Id);
        Assert.True(revoke.ExitCode == 0, revoke.ToString());
        using (var revoked = await PostInitializeAsync(victim.Token, cts.Token))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, revoked.StatusCode);
        }

        var call = await bridge.CallToolAsync(SendingDomains, new Dictionary<string, object?>(), cancellationToken: cts.Token);
        output.WriteLine($"revoked, through the bridge: {ErrorText(call)}");
        Assert.Contains("not valid", ErrorText(call), StringComparison.Ordinal);
        await harness.Audit.WaitForAsync(e => e is { Action: "auth" } && e.Result != "ok" && e.TokenId == victim.Id && e.Channel == "mcp", "refused mcp auth of the revoked token", Wait, cts.Token);
    });

    [Fact]
    public Task Malformed_send_email_arguments_are_tool_errors_naming_the_problem_and_nothing_is_queued() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(240));
        var marker = Marker();
        var recipient = $"malformed-{marker}@example.net";
        var before = (await QueuedAsync()).Select(q => q.Id).ToHashSet();
        await using var client = await ConnectAsync(harness.TokenA.Token, cts.Token);

        Dictionary<string, object?> Valid() => new()
        {
            ["from"] = $"agent@{DomainA}",
            ["to"] = new[] { recipient },
            ["subject"] = $"malformed {marker}",
            ["text"] = "x",
        };

        var cases = new List<(string What, Dictionary<string, object?> Arguments, Func<string, bool> Names)>();
        var missingTo = Valid();
        missingTo.Remove("to");
        cases.Add(("missing to", missingTo, t => t.Contains("to:", StringComparison.Ordinal) && t.Contains("required", StringComparison.OrdinalIgnoreCase)));

        var huge = Valid();
        huge["attachments"] = new[]
        {
            new Dictionary<string, object?> { ["filename"] = "big.bin", ["content_type"] = "application/octet-stream", ["content_base64"] = new string('A', 40 * 1024 * 1024) },
        };
        cases.Add(("30 MiB attachment", huge, t => t.Contains("attachment", StringComparison.OrdinalIgnoreCase) && t.Contains("limit", StringComparison.OrdinalIgnoreCase)));

        var header = Valid();
        header["headers"] = new Dictionary<string, string> { ["X-Not-Allowed"] = "1" };
        cases.Add(("header outside the allowlist", header, t => t.Contains("X-Not-Allowed", StringComparison.Ordinal)));

        var subject = Valid();
        subject["subject"] = "hello\r\nBcc: x@evil.example";
        cases.Add(("CRLF in subject", subject, t => t.Contains("subject", StringComparison.OrdinalIgnoreCase) && t.Contains("CR", StringComparison.Ordinal)));

        var address = Valid();
        address["to"] = new[] { $"{recipient}\r\nBcc: x@evil.example" };
        cases.Add(("CRLF in an address", address, t => t.Contains("to[0]", StringComparison.Ordinal) && t.Contains("CR", StringComparison.Ordinal)));

        var tenant = Valid();
        tenant["tenant"] = TenantB;
        cases.Add(("unknown argument tenant", tenant, t => t.Contains("tenant", StringComparison.Ordinal) && t.Contains("unknown", StringComparison.OrdinalIgnoreCase)));

        var failures = new List<string>();
        foreach (var (what, arguments, names) in cases)
        {
            var result = await client.CallToolAsync(SendEmail, arguments, cancellationToken: cts.Token);
            var text = string.Concat(result.Content.OfType<TextContentBlock>().Select(c => c.Text));
            output.WriteLine($"{what}: isError={result.IsError}: {(text.Length > 500 ? text[..500] : text)}");
            if (result.IsError != true || !names(text))
            {
                failures.Add($"{what}: isError={result.IsError}, text: {(text.Length > 300 ? text[..300] : text)}");
            }

            Assert.True(harness.IsRunning, $"the gateway exited after '{what}'");
        }

        Assert.True(failures.Count == 0, string.Join('\n', failures));
        Assert.DoesNotContain(harness.Sink.Messages(), m => m.Content.Contains(marker, StringComparison.Ordinal));
        Assert.DoesNotContain(harness.Events(TenantA), e => e.Recipient.Contains(marker, StringComparison.Ordinal));
        Assert.DoesNotContain(await QueuedAsync(), q => !before.Contains(q.Id));
    });

    [Fact]
    public Task A_tenant_over_its_message_rate_gets_450_4_7_1_through_the_tool() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        using var op = harness.AdminClient(harness.OperatorKey);
        var original = await File.ReadAllTextAsync(harness.ConfigPath, cts.Token);
        try
        {
            var changed = JsonNode.Parse(original)!;
            changed["Tenants"]![TenantB]!["Limits"] = new JsonObject { ["MessagesPerMinute"] = 2 };
            await File.WriteAllTextAsync(harness.ConfigPath, changed.ToJsonString(), cts.Token);
            var reload = await op.PostAsync(new Uri("api/v1/reload", UriKind.Relative), null, cts.Token);
            Assert.Equal(HttpStatusCode.OK, reload.StatusCode);

            await using var b = await ConnectAsync(harness.TokenB.Token, cts.Token);
            var marker = Marker();
            var accepted = 0;
            string? limited = null;

            // Earlier messages of tenant-b in this minute count too: at most two calls succeed, the third at the latest is refused.
            for (var i = 0; i < 3 && limited is null; i++)
            {
                var result = await b.CallToolAsync(SendEmail, new Dictionary<string, object?>
                {
                    ["from"] = "app@tenant-b.example",
                    ["to"] = new[] { $"rate-{i}-{marker}@example.net" },
                    ["subject"] = $"rate {i} {marker}",
                    ["text"] = "x",
                }, cancellationToken: cts.Token);
                var text = string.Concat(result.Content.OfType<TextContentBlock>().Select(c => c.Text));
                output.WriteLine($"#{i}: isError={result.IsError}: {text}");
                if (result.IsError == true)
                {
                    limited = text;
                }
                else
                {
                    accepted++;
                }
            }

            Assert.True(limited is not null, $"{accepted} messages accepted, none refused");
            Assert.Contains("450 4.7.1", limited, StringComparison.Ordinal);
            Assert.InRange(accepted, 0, 2);
        }
        finally
        {
            await File.WriteAllTextAsync(harness.ConfigPath, original, CancellationToken.None);
            await op.PostAsync(new Uri("api/v1/reload", UriKind.Relative), null, CancellationToken.None);
        }
    });

    [Fact]
    public Task The_tool_call_metric_counts_each_successful_send_email_of_the_tenant() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        using var op = harness.AdminClient(harness.OperatorKey);
        (string, string)[] labels = [("tenant", TenantA), ("tool", SendEmail), ("result", "ok")];
        const string metric = "smtpgw_mcp_tool_calls_total";
        var before = (await PrometheusScrape.GetAsync(op, cts.Token)).Value(metric, labels);

        await using var client = await ConnectAsync(harness.TokenA.Token, cts.Token);
        const int calls = 2;
        for (var i = 0; i < calls; i++)
        {
            var sent = await client.CallToolAsync(SendEmail, new Dictionary<string, object?>
            {
                ["from"] = $"agent@{DomainA}",
                ["to"] = new[] { $"metric-{i}-{Marker()}@example.net" },
                ["subject"] = $"metric {i}",
                ["text"] = "x",
            }, cancellationToken: cts.Token);
            Assert.NotNull((string?)Structured(sent)["queue_id"]);
        }

        // An invalid call is counted under result="invalid", not "ok".
        await client.CallToolAsync(SendEmail, new Dictionary<string, object?> { ["from"] = $"agent@{DomainA}" }, cancellationToken: cts.Token);
        var after = await PrometheusScrape.GetAsync(op, cts.Token);
        Assert.Equal(before + calls, after.Value(metric, labels));
        Assert.True(after.Has(metric, ("tenant", TenantA), ("tool", SendEmail), ("result", "invalid")), "no invalid series");
    });

    /// <summary>An SDK client on /mcp over streamable HTTP with <paramref name="token"/> as the bearer (none when null).</summary>
    Task<McpClient> ConnectAsync(string? token, CancellationToken cancellationToken) => ConnectAsync(harness.AdminUrl, token, cancellationToken);

    /// <summary>An SDK client on <paramref name="adminUrl"/>/mcp over streamable HTTP with <paramref name="token"/> as the bearer (none when null).</summary>
    internal static async Task<McpClient> ConnectAsync(Uri adminUrl, string? token, CancellationToken cancellationToken)
    {
        var headers = token is null ? new Dictionary<string, string>() : new Dictionary<string, string> { ["Authorization"] = "Bearer " + token };
        return await McpClient.CreateAsync(new HttpClientTransport(new HttpClientTransportOptions
        {
            Endpoint = new Uri(adminUrl, "mcp"),
            TransportMode = HttpTransportMode.StreamableHttp,
            AdditionalHeaders = headers,
        }), cancellationToken: cancellationToken);
    }

    /// <summary>`smtpgw mcp --config` as an agent runtime spawns it: the token in SMTPGW_TOKEN, or --token-file.</summary>
    async Task<McpClient> BridgeAsync(string? token, string? tokenFile, CancellationToken cancellationToken)
    {
        var (fileName, prefix) = RepoPaths.Smtpgw();
        string[] file = tokenFile is null ? [] : ["--token-file", tokenFile];
        return await McpClient.CreateAsync(new StdioClientTransport(new StdioClientTransportOptions
        {
            Name = "smtpgw-mcp",
            Command = fileName,
            Arguments = [.. prefix, "mcp", "--config", harness.ConfigPath, .. file],
            EnvironmentVariables = new Dictionary<string, string?> { ["SMTPGW_TOKEN"] = token, ["DOTNET_NOLOGO"] = "1" },
            WorkingDirectory = harness.WorkDirectory,
            StandardErrorLines = line => output.WriteLine($"[smtpgw mcp] {line}"),
        }), cancellationToken: cancellationToken);
    }

    /// <summary>send_email through <paramref name="client"/> to a new address; waits until smtp-sink has it.</summary>
    async Task SendAndAwaitAsync(McpClient client, string label, CancellationToken cancellationToken)
    {
        var recipient = $"{label}-{Marker()}@example.net";
        var sent = await client.CallToolAsync(SendEmail, new Dictionary<string, object?>
        {
            ["from"] = $"agent@{DomainA}",
            ["to"] = new[] { recipient },
            ["subject"] = label,
            ["text"] = $"sent by {label}",
        }, cancellationToken: cancellationToken);
        Assert.NotNull((string?)Structured(sent)["queue_id"]);
        await harness.Sink.WaitAsync(ms => ms.Any(m => m.HasRecipient(recipient)), Wait, cancellationToken);
    }

    /// <summary>Waits for the JSON-RPC answer with <paramref name="id"/> on <paramref name="process"/>'s stdout.</summary>
    static async Task<JsonObject> AnswerAsync(ChildProcess process, int id, CancellationToken cancellationToken)
    {
        static JsonObject? Parse(string line)
        {
            try
            {
                return JsonNode.Parse(line) as JsonObject;
            }
            catch (JsonException)
            {
                return null;
            }
        }

        bool IsAnswer(JsonObject? o) => o is not null && o["id"] is JsonValue v && v.TryGetValue<int>(out var n) && n == id;
        var lines = await EventPoll.UntilAsync(() => process.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries), ls => ls.Any(l => IsAnswer(Parse(l))),
            () => process.HasExited, _ => $"no answer to request {id} on stdout:\n{process.Output}", Wait, cancellationToken);
        return lines.Select(Parse).First(IsAnswer)!;
    }

    /// <summary>A bare JSON-RPC initialize POSTed to /mcp with <paramref name="bearer"/> (no Authorization when null).</summary>
    async Task<HttpResponseMessage> PostInitializeAsync(string? bearer, CancellationToken cancellationToken)
    {
        using var http = harness.AdminClient(bearer);
        using var request = new HttpRequestMessage(HttpMethod.Post, "mcp")
        {
            Content = new StringContent("""{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"ft","version":"1"}}}""",
                Encoding.UTF8, "application/json"),
        };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        var response = await http.SendAsync(request, cancellationToken);
        output.WriteLine($"POST /mcp ({(bearer is null ? "no bearer" : "bearer")}): {(int)response.StatusCode} {response.Headers.WwwAuthenticate}");
        return response;
    }

    /// <summary>The spool's messages now, from `smtpgw queue list --json`.</summary>
    async Task<List<(string Id, List<string> Recipients)>> QueuedAsync()
    {
        var list = await harness.SmtpgwAsync("queue", "list", "--json", "--config", harness.ConfigPath);
        Assert.True(list.ExitCode == 0, list.ToString());
        return [.. JsonDocument.Parse(list.StandardOutput).RootElement.EnumerateArray().Select(i => (
            i.GetProperty("id").GetString()!,
            i.GetProperty("recipients").EnumerateArray().Select(r => r.GetProperty("address").GetString()!).ToList()))];
    }

    /// <summary>A successful tool result's structured content (fails with the result's text otherwise).</summary>
    internal static JsonObject Structured(CallToolResult result)
    {
        var text = string.Concat(result.Content.OfType<TextContentBlock>().Select(c => c.Text));
        Assert.True(result.IsError != true, $"tool error: {text}");
        Assert.True(result.StructuredContent is not null, $"no structured content: {text}");
        return JsonNode.Parse(result.StructuredContent.Value.GetRawText())!.AsObject();
    }

    /// <summary>A tool error's text (fails when the result is not an error).</summary>
    static string ErrorText(CallToolResult result)
    {
        var text = string.Concat(result.Content.OfType<TextContentBlock>().Select(c => c.Text));
        Assert.True(result.IsError == true, $"expected a tool error, got: {text}");
        return text;
    }

    static T? Innermost<T>(Exception? e)
        where T : Exception
    {
        T? found = null;
        for (; e is not null; e = e.InnerException)
        {
            found = e as T ?? found;
        }

        return found;
    }

    static string Marker() => Guid.NewGuid().ToString("N")[..12];

    /// <summary>The header section of a message as smtp-sink stored it (LF line ends).</summary>
    static string HeaderSection(SinkMessage message)
    {
        var end = message.Content.IndexOf("\n\n", StringComparison.Ordinal);
        return end < 0 ? message.Content : message.Content[..end];
    }
}
