using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// The gateway of <see cref="GatewayHarness"/> asking a real resolver (unbound) for DKIM records: before it starts, tenant-a
/// gets three selectors from the CLI (ed25519 "ed1" and rsa2048 "rsa1", both active, and ed25519 "ed2", pending), and
/// unbound serves tenant-a.example with ed1's record exactly as `smtpgw dkim dns` prints it, rsa1's name with another
/// RSA key, and nothing for ed2. Gateway:Dns:Servers points at unbound.
/// </summary>
public sealed class McpDnsHarness : GatewayHarness
{
    internal const string Zone = "tenant-a.example.";
    const string Probe = "probe.tenant-a.example";

    internal Unbound Dns { get; private set; } = null!;

    /// <summary>What `smtpgw dkim dns --tenant tenant-a --json` printed: record name to TXT value.</summary>
    internal IReadOnlyDictionary<string, string> Expected { get; private set; } = new Dictionary<string, string>();

    internal MintedToken TokenA { get; private set; } = new("", "");

    public override async Task InitializeAsync()
    {
        await base.InitializeAsync();
        try
        {
            TokenA = await MintTokenAsync(McpTests.TenantA, "--description", "mcp dns functional tests");
        }
        catch (Exception e)
        {
            Failed = true;
            throw new InvalidOperationException($"MCP DNS harness failed to start: {e.Message}\n{Diagnostics()}", e);
        }
    }

    protected override async Task CustomizeAsync(JsonObject config, CancellationToken cancellationToken)
    {
        // The CLI reads the config file, which the base class writes only after this: write it now (it is written again,
        // with the Dns section, when this returns).
        await File.WriteAllTextAsync(ConfigPath, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }), cancellationToken);
        await CliAsync("hsm", "init-token", "--config", ConfigPath, "--tenant", McpTests.TenantA);
        foreach (var (selector, algorithm) in new[] { ("ed1", "ed25519"), ("rsa1", "rsa2048"), ("ed2", "ed25519") })
        {
            await CliAsync("dkim", "keygen", "--config", ConfigPath, "--tenant", McpTests.TenantA, "--domain", McpTests.DomainA,
                "--selector", selector, "--alg", algorithm);
        }

        var dns = await CliAsync("dkim", "dns", "--config", ConfigPath, "--tenant", McpTests.TenantA, "--json");
        Expected = JsonSerializer.Deserialize<Dictionary<string, string>>(dns)!;

        // rsa1's name carries a valid RSA key, just not the gateway's.
        using var other = RSA.Create(2048);
        var foreign = $"v=DKIM1; k=rsa; p={Convert.ToBase64String(other.ExportSubjectPublicKeyInfo())}";
        string[] records =
        [
            $"{Probe}. 300 IN A 127.0.0.1",
            $"{Name("ed1")} 300 IN TXT {Txt(Expected[Name("ed1")])}",
            $"{Name("rsa1")} 300 IN TXT {Txt(foreign)}",
        ];
        Dns = await Unbound.StartAsync(WorkDirectory, [Zone], records, Probe, cancellationToken);
        config["Gateway"]!["Dns"] = new JsonObject { ["Servers"] = new JsonArray(Dns.Endpoint), ["Timeout"] = "00:00:02" };
    }

    /// <summary>The record name of <paramref name="selector"/> in tenant-a.example, as `dkim dns` and the tool write it.</summary>
    internal static string Name(string selector) => $"{selector}._domainkey.{Zone}";

    /// <summary>
    /// A TXT value as unbound's local-data takes it: character-strings of at most 255 octets, unquoted with every octet but
    /// letters, digits and base64's "+/=" written as \DDD. Unbound.StartAsync puts the record in double quotes, and inside
    /// those a \" is a literal quote in the record, not a delimiter: the ';' after "v=DKIM1" then starts a zone-file
    /// comment and the record is just the string <c>"v=DKIM1</c>.
    /// </summary>
    static string Txt(string value) => string.Join(' ', value.Chunk(255).Select(chunk =>
        string.Concat(chunk.Select(c => char.IsAsciiLetterOrDigit(c) || c is '+' or '/' or '=' ? c.ToString() : $"\\{(int)c:D3}"))));

    async Task<string> CliAsync(params string[] args)
    {
        var result = await SmtpgwAsync(args);
        return result.ExitCode == 0 ? result.StandardOutput : throw new InvalidOperationException($"smtpgw {string.Join(' ', args)} failed: {result}");
    }

    protected override IEnumerable<(string Name, string Output)> PeerOutputs() =>
        Dns is null ? base.PeerOutputs() : [.. base.PeerOutputs(), ("unbound", Dns.Output)];

    protected override void DisposePeers()
    {
        base.DisposePeers();
        Dns?.Dispose();
    }
}

/// <summary>
/// list_sending_domains against a real resolver: each selector's record published, with another key, or absent, and the
/// resolver gone.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class McpDnsTests(McpDnsHarness harness, ITestOutputHelper output) : IClassFixture<McpDnsHarness>
{
    const string SendingDomains = "list_sending_domains";

    [Fact]
    public Task List_sending_domains_reports_published_mismatch_missing_and_then_dns_error_when_the_resolver_is_down() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        await using var client = await McpTests.ConnectAsync(harness.AdminUrl, harness.TokenA.Token, cts.Token);
        Assert.Equal(3, harness.Expected.Count);

        var up = await ListAsync(client, cts.Token);
        var domain = Assert.Single(up["domains"]!.AsArray())!;
        Assert.Equal(McpTests.DomainA, (string?)domain["domain"]);

        // ed1 and rsa1 are the first keys of their algorithms (active); ed2 is pending. An active selector is published.
        Assert.True((bool?)domain["ready"], domain.ToJsonString());
        var selectors = Selectors(domain);
        Assert.Equal(["ed1", "ed2", "rsa1"], selectors.Keys.Order(StringComparer.Ordinal));
        AssertSelector(selectors["ed1"], "ed1", "ed25519-sha256", "active", "published");
        AssertSelector(selectors["rsa1"], "rsa1", "rsa-sha256", "active", "mismatch");
        AssertSelector(selectors["ed2"], "ed2", "ed25519-sha256", "pending", "missing");

        // The resolver is gone: every lookup fails, which is no statement about the records.
        await harness.Dns.StopAsync();
        var clock = Stopwatch.StartNew();
        var down = await ListAsync(client, cts.Token);
        output.WriteLine($"with unbound stopped, list_sending_domains answered in {clock.Elapsed}");
        var downDomain = Assert.Single(down["domains"]!.AsArray())!;
        Assert.False((bool?)downDomain["ready"], downDomain.ToJsonString());
        var downSelectors = Selectors(downDomain);
        Assert.Equal(["ed1", "ed2", "rsa1"], downSelectors.Keys.Order(StringComparer.Ordinal));
        Assert.All(downSelectors.Values, s => Assert.Equal("dns_error", (string?)s["dns"]));
        Assert.All(downSelectors, p => Assert.Equal(harness.Expected[McpDnsHarness.Name(p.Key)], (string?)p.Value["expected_value"]));
    });

    async Task<JsonObject> ListAsync(ModelContextProtocol.Client.McpClient client, CancellationToken cancellationToken)
    {
        var result = McpTests.Structured(await client.CallToolAsync(SendingDomains, new Dictionary<string, object?>(), cancellationToken: cancellationToken));
        output.WriteLine($"{SendingDomains}: {result.ToJsonString()}");
        return result;
    }

    static Dictionary<string, JsonObject> Selectors(JsonNode domain) =>
        domain["selectors"]!.AsArray().Select(s => s!.AsObject()).ToDictionary(s => (string)s["selector"]!, s => s);

    void AssertSelector(JsonObject selector, string name, string algorithm, string state, string dns)
    {
        Assert.Equal(algorithm, (string?)selector["algorithm"]);
        Assert.Equal(state, (string?)selector["state"]);
        Assert.Equal(McpDnsHarness.Name(name), (string?)selector["record_name"]);
        Assert.Equal(harness.Expected[McpDnsHarness.Name(name)], (string?)selector["expected_value"]);
        Assert.True(dns == (string?)selector["dns"], $"{name}: expected dns \"{dns}\", got {selector.ToJsonString()}");
    }
}
