using System.Diagnostics;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>
/// A real gateway process (the built <c>smtpgw serve</c>) relaying to a real smtp-sink, in a private temporary
/// directory: its own data directory, config file, free loopback ports and the run's test certificate.
/// Everything is killed on dispose; the directory is kept (and named in the test output) when a test failed.
/// </summary>
public class GatewayHarness : GatewayProcessHarness
{
    public const string ServerName = "gw.functional.test";

    SmtpSink? _sink;

    public GatewayHarness()
        : base("smtpgw-ft-")
    {
    }

    /// <summary>A fixture that needs more (another peer, tenant routes) changes the config here, before the gateway starts.</summary>
    protected virtual Task CustomizeAsync(JsonObject config, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Submission (STARTTLS) listener port.</summary>
    public int SubmissionPort { get; private set; }

    /// <summary>Implicit-TLS submission listener port.</summary>
    public int SubmissionsPort { get; private set; }

    /// <summary>Plain legacy-relay listener port.</summary>
    public int RelayPort { get; private set; }

    internal SmtpSink Sink => _sink ?? throw new InvalidOperationException("not started");

    public bool IsRunning => Gateway is { HasExited: false };

    public override async Task InitializeAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            var (certificate, key) = await TestCertificate.GetAsync();
            _sink = await SmtpSink.StartAsync(WorkDirectory, cts.Token);
            SubmissionPort = FreePort.Next();
            SubmissionsPort = FreePort.Next();
            RelayPort = FreePort.Next();
            var config = BuildConfig(certificate, key);
            await CustomizeAsync(config, cts.Token);
            await File.WriteAllTextAsync(ConfigPath, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }), cts.Token);
            await InitTenantTokensAsync(cts.Token);
            await CreateOperatorKeyAsync();
            await StartGatewayAsync(cts.Token);
        }
        catch (Exception e)
        {
            // A class fixture has no test output: put the processes' output into the exception itself.
            Failed = true;
            throw new InvalidOperationException($"gateway harness failed to start: {e.Message}\n{Diagnostics()}", e);
        }
    }

    /// <summary>
    /// The repository's config/gateway.json (so that sections this harness does not know about keep their
    /// defaults), with everything that touches the machine replaced: data directory, TLS files, listeners on
    /// free ports, delivery to the sink with short retries, and tenants that may send unsigned (no keys are made for them).
    /// </summary>
    JsonObject BuildConfig(string certificate, string key)
    {
        var repoConfig = Path.Combine(RepoPaths.Root, "config", "gateway.json");
        var root = File.Exists(repoConfig)
            ? JsonNode.Parse(File.ReadAllText(repoConfig), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true })!.AsObject()
            : [];
        if (root["Gateway"] is not JsonObject gateway)
        {
            gateway = [];
            root["Gateway"] = gateway;
        }

        gateway["ServerName"] = ServerName;
        gateway["DataDirectory"] = DataDirectory;
        gateway["Tls"] = new JsonObject { ["CertificatePath"] = certificate, ["KeyPath"] = key };
        gateway["Listeners"] = new JsonArray(
            new JsonObject { ["Name"] = "submission", ["Kind"] = "Submission", ["Address"] = "127.0.0.1", ["Port"] = SubmissionPort },
            new JsonObject { ["Name"] = "submissions", ["Kind"] = "ImplicitTls", ["Address"] = "127.0.0.1", ["Port"] = SubmissionsPort },
            new JsonObject { ["Name"] = "relay", ["Kind"] = "Relay", ["Address"] = "127.0.0.1", ["Port"] = RelayPort });
        if (gateway["Delivery"] is not JsonObject delivery)
        {
            delivery = [];
            gateway["Delivery"] = delivery;
        }

        delivery["Mode"] = "Smarthost";

        // Every peer here (sink, Postfix, webhook listener) is on 127.0.0.1: the destination guard's opt-out.
        delivery["AllowPrivateDestinations"] = true;
        delivery["Smarthost"] = new JsonObject
        {
            ["Host"] = "127.0.0.1",
            ["Port"] = Sink.Port,
            ["StartTls"] = "None",
            ["MaxConnections"] = 8,
        };
        delivery["Retry"] = new JsonObject { ["Schedule"] = new JsonArray("00:00:01", "00:00:02"), ["Jitter"] = 0.1 };
        EnableAdmin(root);
        AllowUnsignedTenants(root);
        return root;
    }

    /// <summary>Arguments after <c>serve --config PATH</c> when <see cref="StartGatewayAsync"/> is given none (e.g. <c>--log-format json</c>).</summary>
    protected virtual IReadOnlyList<string> ServeArguments => [];

    /// <summary>Starts <c>smtpgw serve --config</c> (and <paramref name="extraArgs"/>, else <see cref="ServeArguments"/>) and waits until every listener answers 220.</summary>
    public async Task StartGatewayAsync(CancellationToken cancellationToken, IReadOnlyList<string>? extraArgs = null)
    {
        if (IsRunning)
        {
            throw new InvalidOperationException("the gateway is already running");
        }

        var (fileName, prefix) = RepoPaths.Smtpgw();
        Gateway = ChildProcess.Start($"smtpgw#{Runs.Count + 1}", fileName, [.. prefix, "serve", "--config", ConfigPath, .. extraArgs ?? ServeArguments], WorkDirectory,
            new Dictionary<string, string?> { ["DOTNET_NOLOGO"] = "1" },
            keepVariable: name => !name.StartsWith("SMTPGW__", StringComparison.OrdinalIgnoreCase));
        Runs.Add(Gateway);
        await WaitUntilReadyAsync(Gateway, cancellationToken);
    }

    async Task WaitUntilReadyAsync(ChildProcess gateway, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        foreach (var (port, tls) in new[] { (RelayPort, false), (SubmissionPort, false), (SubmissionsPort, true) })
        {
            while (true)
            {
                if (gateway.HasExited)
                {
                    throw new InvalidOperationException($"smtpgw exited with status {gateway.ExitCode} before listening on {port}:\n{gateway.Output}");
                }

                try
                {
                    using var client = await RawSmtpClient.ConnectAsync("127.0.0.1", port, TimeSpan.FromSeconds(5), cancellationToken, tls);
                    if (client.Banner.Code != 220)
                    {
                        throw new InvalidOperationException($"smtpgw on {port} greeted with {client.Banner}");
                    }

                    break;
                }
                catch (Exception e) when (e is SocketException or IOException or TimeoutException or System.Security.Authentication.AuthenticationException
                                          && clock.Elapsed < TimeSpan.FromSeconds(30))
                {
                    await Task.Delay(50, cancellationToken);
                }
            }
        }
    }

    /// <summary>
    /// A session token for <paramref name="tenant"/> from <c>smtpgw token mint</c> (AUTH user = tenant id, password =
    /// token), or null when this build has no token verb (issue 2: trusted networks relay without AUTH).
    /// </summary>
    public async Task<string?> TryMintTokenAsync(string tenant, ITestOutputHelper output)
    {
        var (fileName, prefix) = RepoPaths.Smtpgw();
        var (exitCode, log, stdout) = await ChildProcess.RunWithStdoutAsync(fileName,
            [.. prefix, "token", "mint", "--config", ConfigPath, "--tenant", tenant, "--ttl", "1h", "--description", "functional test"],
            WorkDirectory, TimeSpan.FromSeconds(60));
        if (exitCode != 0)
        {
            output.WriteLine($"smtpgw token mint failed ({exitCode}); continuing without AUTH:\n{log}");
            return null;
        }

        var token = stdout.Trim();
        return token.Length > 0 && !token.Contains('\n', StringComparison.Ordinal)
            ? token
            : throw new InvalidOperationException($"smtpgw token mint printed more than a token:\n{log}");
    }

    /// <summary>
    /// A greeted SMTP session on the relay listener from <paramref name="source"/> (a 127.0.0.x address: the client network
    /// picks the tenant, or none).
    /// </summary>
    internal async Task<RawSmtpClient> ConnectRelayFromAsync(string source, ITestOutputHelper output, CancellationToken cancellationToken,
        string ehlo = "legacy-app.functional.test")
    {
        var smtp = await RawSmtpClient.ConnectAsync("127.0.0.1", RelayPort, TimeSpan.FromSeconds(10), cancellationToken,
            localEndPoint: new System.Net.IPEndPoint(System.Net.IPAddress.Parse(source), 0));
        try
        {
            Assert.Equal(220, smtp.Banner.Code);
            Assert.Equal(250, (await smtp.StepAsync($"EHLO {ehlo}", output, cancellationToken)).Code);
            return smtp;
        }
        catch
        {
            smtp.Dispose();
            throw;
        }
    }

    /// <summary>The audit log of this gateway's data directory.</summary>
    internal AuditTrail Audit => new(DataDirectory);

    /// <summary>
    /// Runs the built <c>smtpgw</c> with exactly <paramref name="args"/> in the work directory, with the same
    /// environment as the gateway (no SMTPGW__ overrides), as an operator would next to this gateway.
    /// </summary>
    internal Task<ProcessResult> SmtpgwAsync(params string[] args)
        => RunSmtpgwAsync(args, TimeSpan.FromSeconds(60));

    /// <summary>
    /// <c>smtpgw check-config</c> on this gateway's config (a control: it must pass), then on a copy changed by
    /// <paramref name="change"/> written to WorkDirectory/<paramref name="name"/>; returns the second result.
    /// </summary>
    internal async Task<ProcessResult> CheckChangedConfigAsync(ITestOutputHelper output, string name, Action<JsonObject> change)
    {
        var ok = await SmtpgwAsync("check-config", "--config", ConfigPath);
        output.WriteLine(ok.Output);
        Assert.True(ok.ExitCode == 0, $"check-config refused the harness config: {ok}");

        var root = JsonNode.Parse(await File.ReadAllTextAsync(ConfigPath))!.AsObject();
        change(root);
        var path = Path.Combine(WorkDirectory, name);
        await File.WriteAllTextAsync(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        var result = await SmtpgwAsync("check-config", "--config", path);
        output.WriteLine(result.Output);
        return result;
    }

    /// <summary><c>smtpgw token VERB --config &lt;this gateway's config&gt; ARGS...</c> (same data directory as the running gateway).</summary>
    internal Task<ProcessResult> TokenCliAsync(string verb, params string[] args) =>
        SmtpgwAsync(["token", verb, "--config", ConfigPath, .. args]);

    /// <summary>
    /// <c>smtpgw token mint --tenant T [ARGS...]</c> (default <c>--ttl 1h</c>); fails unless it exits 0 and prints
    /// exactly one line, the token, on stdout. The id comes from its stderr line "minted &lt;id&gt; for &lt;tenant&gt;".
    /// </summary>
    internal async Task<MintedToken> MintTokenAsync(string tenant, params string[] args)
    {
        string[] ttl = args.Contains("--ttl") ? [] : ["--ttl", "1h"];
        var result = await TokenCliAsync("mint", ["--tenant", tenant, .. ttl, .. args]);
        var lines = result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var id = System.Text.RegularExpressions.Regex.Match(result.StandardError, @"^minted (\S+) for " + System.Text.RegularExpressions.Regex.Escape(tenant) + @"\b",
            System.Text.RegularExpressions.RegexOptions.Multiline);
        if (result.ExitCode != 0 || lines.Length != 1 || !id.Success)
        {
            throw new InvalidOperationException($"smtpgw token mint --tenant {tenant} did not print one token (and its id on stderr): {result}");
        }

        return new MintedToken(lines[0].Trim(), id.Groups[1].Value);
    }

    protected override IEnumerable<(string Name, string Output)> PeerOutputs() =>
        _sink is null ? [] : [("smtp-sink", _sink.Output)];

    protected override void DisposePeers() => _sink?.Dispose();
}

/// <summary>A token from <c>smtpgw token mint</c> and its id (for revoke, list and the audit log).</summary>
internal sealed record MintedToken(string Token, string Id);
