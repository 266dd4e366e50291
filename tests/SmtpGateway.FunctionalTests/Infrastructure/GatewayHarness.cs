using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
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
public sealed class GatewayHarness : IAsyncLifetime
{
    public const string ServerName = "gw.functional.test";

    readonly List<ChildProcess> _runs = [];
    ChildProcess? _gateway;
    SmtpSink? _sink;

    public GatewayHarness()
    {
        var dir = Directory.CreateTempSubdirectory("smtpgw-ft-");
        // smtp-sink drops to "nobody" when we are root and must reach its dump directory below this one.
        File.SetUnixFileMode(dir.FullName, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        WorkDirectory = dir.FullName;
        DataDirectory = Path.Combine(WorkDirectory, "data");
        ConfigPath = Path.Combine(WorkDirectory, "gateway.json");
    }

    public string WorkDirectory { get; }

    public string DataDirectory { get; }

    public string ConfigPath { get; }

    /// <summary>Submission (STARTTLS) listener port.</summary>
    public int SubmissionPort { get; private set; }

    /// <summary>Implicit-TLS submission listener port.</summary>
    public int SubmissionsPort { get; private set; }

    /// <summary>Plain legacy-relay listener port.</summary>
    public int RelayPort { get; private set; }

    internal SmtpSink Sink => _sink ?? throw new InvalidOperationException("not started");

    /// <summary>Set when a test using this harness failed: the work directory is then kept for inspection.</summary>
    public bool Failed { get; private set; }

    public bool IsRunning => _gateway is { HasExited: false };

    public async Task InitializeAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            var (certificate, key) = await TestCertificate.GetAsync();
            _sink = await SmtpSink.StartAsync(WorkDirectory, cts.Token);
            SubmissionPort = FreePort.Next();
            SubmissionsPort = FreePort.Next();
            RelayPort = FreePort.Next();
            await File.WriteAllTextAsync(ConfigPath, BuildConfig(certificate, key), cts.Token);
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
    /// free ports, delivery to the sink with short retries.
    /// </summary>
    string BuildConfig(string certificate, string key)
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
        delivery["Smarthost"] = new JsonObject
        {
            ["Host"] = "127.0.0.1",
            ["Port"] = Sink.Port,
            ["StartTls"] = "None",
            ["MaxConnections"] = 8,
        };
        delivery["Retry"] = new JsonObject { ["Schedule"] = new JsonArray("00:00:01", "00:00:02"), ["Jitter"] = 0.1 };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Starts <c>smtpgw serve --config</c> and waits until every listener answers 220.</summary>
    public async Task StartGatewayAsync(CancellationToken cancellationToken)
    {
        if (IsRunning)
        {
            throw new InvalidOperationException("the gateway is already running");
        }

        var (fileName, prefix) = RepoPaths.Smtpgw();
        _gateway = ChildProcess.Start($"smtpgw#{_runs.Count + 1}", fileName, [.. prefix, "serve", "--config", ConfigPath], WorkDirectory,
            new Dictionary<string, string?> { ["DOTNET_NOLOGO"] = "1" },
            keepVariable: name => !name.StartsWith("SMTPGW__", StringComparison.OrdinalIgnoreCase));
        _runs.Add(_gateway);
        await WaitUntilReadyAsync(_gateway, cancellationToken);
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

    /// <summary>The audit log of this gateway's data directory.</summary>
    internal AuditTrail Audit => new(DataDirectory);

    /// <summary>Everything the current (or last) gateway process has printed so far.</summary>
    public string GatewayOutput => _gateway?.Output ?? "";

    /// <summary>
    /// Runs the built <c>smtpgw</c> with exactly <paramref name="args"/> in the work directory, with the same
    /// environment as the gateway (no SMTPGW__ overrides), as an operator would next to this gateway.
    /// </summary>
    internal Task<ProcessResult> SmtpgwAsync(params string[] args)
    {
        var (fileName, prefix) = RepoPaths.Smtpgw();
        return ChildProcess.RunCapturedAsync(fileName, [.. prefix, .. args], WorkDirectory, TimeSpan.FromSeconds(60),
            new Dictionary<string, string?> { ["DOTNET_NOLOGO"] = "1" },
            keepVariable: name => !name.StartsWith("SMTPGW__", StringComparison.OrdinalIgnoreCase));
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

    /// <summary>SIGKILL: no shutdown code runs, exactly like a power cut for the process (the page cache survives).</summary>
    public async Task KillGatewayAsync()
    {
        if (_gateway is not null)
        {
            await _gateway.KillAndWaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    /// <summary>
    /// The gateway runs' and the sink's output for the test log (the last lines of each), with the whole of it
    /// written to files in the work directory, which is kept.
    /// </summary>
    public string Diagnostics()
    {
        const int tailLines = 150;
        var text = new StringBuilder();
        text.AppendLine($"work directory (kept): {WorkDirectory}; config: {ConfigPath}");
        void Add(string name, string output)
        {
            var file = Path.Combine(WorkDirectory, name.Replace('#', '-') + ".log");
            try
            {
                File.WriteAllText(file, output);
            }
            catch (IOException)
            {
            }

            var lines = output.Split('\n');
            text.AppendLine($"----- {name}: {(lines.Length > tailLines ? $"last {tailLines} lines; all in {file}" : file)} -----");
            text.AppendJoin('\n', lines.TakeLast(tailLines)).AppendLine();
        }

        foreach (var run in _runs)
        {
            Add(run.Name, run.Output);
        }

        if (_sink is not null)
        {
            Add("smtp-sink", _sink.Output);
        }

        return text.ToString();
    }

    /// <summary>Runs <paramref name="test"/>; on failure writes the processes' output to the test log and keeps the directory.</summary>
    public async Task RunAsync(ITestOutputHelper output, Func<Task> test)
    {
        try
        {
            await test();
        }
        catch
        {
            Failed = true;
            output.WriteLine(Diagnostics());
            throw;
        }
    }

    public Task DisposeAsync()
    {
        foreach (var run in _runs)
        {
            run.Dispose();
        }

        _sink?.Dispose();
        if (!Failed)
        {
            try
            {
                Directory.Delete(WorkDirectory, recursive: true);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        return Task.CompletedTask;
    }
}

/// <summary>A token from <c>smtpgw token mint</c> and its id (for revoke, list and the audit log).</summary>
internal sealed record MintedToken(string Token, string Id);
