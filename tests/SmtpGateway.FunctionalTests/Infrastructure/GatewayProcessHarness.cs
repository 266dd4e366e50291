using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>
/// What every functional harness around a real <c>smtpgw serve</c> process shares: a private work directory with its
/// data directory and config path, the processes it started, failure diagnostics (the last lines of each process's
/// output, the whole of it in files in the kept directory), SIGKILL, and clean-up. Subclasses add their peers
/// (smtp-sink, unbound) through <see cref="PeerOutputs"/> and <see cref="DisposePeers"/>.
/// </summary>
public abstract class GatewayProcessHarness : IAsyncLifetime
{
    const int TailLines = 150;

    protected GatewayProcessHarness(string directoryPrefix)
    {
        var dir = Directory.CreateTempSubdirectory(directoryPrefix);
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

    /// <summary>True once a test failed: the work directory is then kept for inspection.</summary>
    public bool Failed { get; protected set; }

    /// <summary>Every process started (gateway runs and CLI helpers that are kept), for diagnostics and clean-up.</summary>
    private protected List<ChildProcess> Runs { get; } = [];

    /// <summary>The current (or last) gateway process.</summary>
    private protected ChildProcess? Gateway { get; set; }

    /// <summary>Process id of the current gateway (for /proc readings such as peak RSS).</summary>
    public int? GatewayPid => Gateway is { HasExited: false } gateway ? gateway.Id : null;

    /// <summary>Everything the current (or last) gateway process has printed so far.</summary>
    public string GatewayOutput => Gateway?.Output ?? "";

    public abstract Task InitializeAsync();

    /// <summary>
    /// Marks every tenant of <paramref name="root"/> that says nothing about DKIM as <c>"Dkim": { "Unsigned": true }</c>:
    /// the harnesses create no DKIM keys for config/gateway.json's tenants on purpose, and signing fails closed
    /// (451 4.3.0) for a tenant without keys that has not opted out. A test that wants signing required removes it.
    /// </summary>
    protected static void AllowUnsignedTenants(System.Text.Json.Nodes.JsonObject root)
    {
        if (root["Tenants"] is not System.Text.Json.Nodes.JsonObject tenants)
        {
            return;
        }

        foreach (var (_, tenant) in tenants)
        {
            if (tenant is System.Text.Json.Nodes.JsonObject t && t["Dkim"] is null)
            {
                t["Dkim"] = new System.Text.Json.Nodes.JsonObject { ["Unsigned"] = true };
            }
        }
    }

    /// <summary>The admin endpoint's TCP port (issue #13): a free port per harness, never config/gateway.json's 8025.</summary>
    public int AdminPort { get; private set; }

    public Uri AdminUrl => new($"http://127.0.0.1:{AdminPort}/");

    /// <summary>An operator key created with <c>smtpgw admin key create --operator</c> before the gateway started.</summary>
    public string OperatorKey { get; private set; } = "";

    /// <summary>Turns the admin endpoint on at 127.0.0.1 on a free port (every harness: parallel runs must not share 8025).</summary>
    protected void EnableAdmin(System.Text.Json.Nodes.JsonObject root)
    {
        AdminPort = FreePort.Next();
        root["Gateway"]!["Admin"] = new System.Text.Json.Nodes.JsonObject
        {
            ["Enabled"] = true,
            ["Address"] = "127.0.0.1",
            ["Port"] = AdminPort,
        };
    }

    /// <summary>Creates <see cref="OperatorKey"/> through the CLI (the key file is read by the gateway on each request).</summary>
    private protected async Task CreateOperatorKeyAsync()
    {
        var result = await RunSmtpgwAsync(["admin", "key", "create", "--operator", "--config", ConfigPath, "--description", "functional tests"], TimeSpan.FromSeconds(60));
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"smtpgw admin key create failed: {result}");
        }

        OperatorKey = result.StandardOutput.Trim();
    }

    /// <summary>An HTTP client for the admin endpoint with <paramref name="key"/> as its bearer (none when null).</summary>
    public HttpClient AdminClient(string? key)
    {
        var client = new HttpClient { BaseAddress = AdminUrl, Timeout = TimeSpan.FromSeconds(60) };
        if (key is not null)
        {
            client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
        }

        return client;
    }

    /// <summary>
    /// <c>smtpgw hsm init-token</c> for every tenant in the written config: each tenant's session-token and return-path
    /// keys live in its own SoftHSM2 token (issue #11), so a tenant without one could neither AUTH nor get return paths.
    /// </summary>
    private protected async Task InitTenantTokensAsync(CancellationToken cancellationToken)
    {
        var root = System.Text.Json.Nodes.JsonNode.Parse(await File.ReadAllTextAsync(ConfigPath, cancellationToken))!;
        foreach (var (tenant, _) in root["Tenants"]?.AsObject() ?? [])
        {
            var result = await RunSmtpgwAsync(["hsm", "init-token", "--config", ConfigPath, "--tenant", tenant], TimeSpan.FromSeconds(60));
            if (result.ExitCode != 0)
            {
                throw new InvalidOperationException($"smtpgw hsm init-token --tenant {tenant} failed: {result}");
            }
        }
    }

    /// <summary>Output of the harness's peers (sinks, DNS server) for <see cref="Diagnostics"/>.</summary>
    protected virtual IEnumerable<(string Name, string Output)> PeerOutputs() => [];

    protected virtual void DisposePeers()
    {
    }

    /// <summary>Runs the built <c>smtpgw</c> with exactly <paramref name="args"/> in the work directory, with the gateway's environment (no SMTPGW__ overrides).</summary>
    private protected Task<ProcessResult> RunSmtpgwAsync(IEnumerable<string> args, TimeSpan timeout, string? standardInput = null)
    {
        var (fileName, prefix) = RepoPaths.Smtpgw();
        return ChildProcess.RunCapturedAsync(fileName, [.. prefix, .. args], WorkDirectory, timeout,
            new Dictionary<string, string?> { ["DOTNET_NOLOGO"] = "1" },
            keepVariable: name => !name.StartsWith("SMTPGW__", StringComparison.OrdinalIgnoreCase), standardInput: standardInput);
    }

    /// <summary>Every delivery event of <paramref name="tenant"/> so far.</summary>
    /// <remarks>DataDirectory/events/&lt;tenant&gt;.jsonl, written by the delivery service.</remarks>
    internal IReadOnlyList<EventRecord> Events(string tenant)
    {
        var path = Path.Combine(DataDirectory, "events", tenant + ".jsonl");
        if (!File.Exists(path))
        {
            return [];
        }

        var options = new JsonSerializerOptions(JsonSerializerDefaults.Web);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using var reader = new StreamReader(stream);
        var list = new List<EventRecord>();
        while (reader.ReadLine() is { } line)
        {
            if (line.EndsWith('}'))
            {
                list.Add(JsonSerializer.Deserialize<EventRecord>(line, options)!);
            }
        }

        return list;
    }

    /// <summary>Waits until <paramref name="done"/> holds for <paramref name="tenant"/>'s events, or throws TimeoutException.</summary>
    internal async Task<IReadOnlyList<EventRecord>> WaitForEventsAsync(string tenant, Func<IReadOnlyList<EventRecord>, bool> done, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var events = Events(tenant);
            if (done(events))
            {
                return events;
            }

            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"events of {tenant}: condition not met within {timeout}:\n{string.Join('\n', events)}");
            }

            await Task.Delay(100, cancellationToken);
        }
    }

    /// <summary>
    /// Starts <c>smtpgw serve --config</c> (environment without SMTPGW__ overrides) as <see cref="Gateway"/> and waits until
    /// the listener on <paramref name="port"/> greets with 220 and, when the admin endpoint is on, until it accepts
    /// connections: it is bound by its own hosted service, which can come up a moment after the SMTP listener (a health
    /// test that probed it at once met "connection refused").
    /// </summary>
    private protected async Task StartServeAsync(string name, int port, bool implicitTls, CancellationToken cancellationToken)
    {
        var (fileName, prefix) = RepoPaths.Smtpgw();
        Gateway = ChildProcess.Start(name, fileName, [.. prefix, "serve", "--config", ConfigPath], WorkDirectory,
            new Dictionary<string, string?> { ["DOTNET_NOLOGO"] = "1" },
            keepVariable: variable => !variable.StartsWith("SMTPGW__", StringComparison.OrdinalIgnoreCase));
        Runs.Add(Gateway);
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (Gateway.HasExited)
            {
                throw new InvalidOperationException($"smtpgw exited with status {Gateway.ExitCode}:\n{Gateway.Output}");
            }

            try
            {
                using var client = await RawSmtpClient.ConnectAsync("127.0.0.1", port, TimeSpan.FromSeconds(5), cancellationToken, implicitTls);
                if (client.Banner.Code == 220)
                {
                    if (AdminPort != 0)
                    {
                        using var admin = new System.Net.Sockets.TcpClient();
                        await admin.ConnectAsync(System.Net.IPAddress.Loopback, AdminPort, cancellationToken);
                    }

                    return;
                }
            }
            catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException or TimeoutException or System.Security.Authentication.AuthenticationException
                                      && clock.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(50, cancellationToken);
            }
        }
    }

    /// <summary>
    /// One small message (From, To, Subject, Message-ID, Date, a line of body) in a greeted (and, where needed,
    /// authenticated) session; asserts 250 and returns the gateway's queue id from "queued as &lt;id&gt;".
    /// </summary>
    private protected static async Task<string> SubmitAsync(RawSmtpClient smtp, string from, IReadOnlyList<string> recipients, string subject,
        CancellationToken cancellationToken)
    {
        var content = Encoding.ASCII.GetBytes(
            $"From: <{from}>\r\n" +
            $"To: {string.Join(", ", recipients.Select(r => $"<{r}>"))}\r\n" +
            $"Subject: {subject}\r\n" +
            $"Message-ID: <{Guid.NewGuid():N}@client.functional.test>\r\n" +
            "Date: Thu, 27 Nov 2025 10:00:01 +0000\r\n" +
            "\r\n" +
            $"Body of {subject}.\r\n");
        var reply = await smtp.SendMailAsync(from, recipients, content, cancellationToken);
        Assert.True(reply.Code == 250, $"gateway refused the message: {reply}");
        const string marker = "queued as ";
        var text = reply.Lines[0];
        return text[(text.IndexOf(marker, StringComparison.Ordinal) + marker.Length)..].Trim();
    }

    /// <summary>SIGKILL: no shutdown code runs, exactly like a power cut for the process (the page cache survives).</summary>
    public async Task KillGatewayAsync()
    {
        if (Gateway is not null)
        {
            await Gateway.KillAndWaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    /// <summary>
    /// The processes' output for the test log (the last lines of each), with the whole of it written to files in the
    /// work directory, which is kept.
    /// </summary>
    public string Diagnostics()
    {
        var text = new StringBuilder();
        text.AppendLine($"work directory (kept): {WorkDirectory}; config: {ConfigPath}");
        foreach (var (name, output) in Runs.Select(r => (r.Name, r.Output)).Concat(PeerOutputs()))
        {
            var file = Path.Combine(WorkDirectory, name.Replace('#', '-').Replace('@', '-') + ".log");
            try
            {
                File.WriteAllText(file, output);
            }
            catch (IOException)
            {
            }

            var lines = output.Split('\n');
            text.AppendLine($"----- {name}: {(lines.Length > TailLines ? $"last {TailLines} lines; all in {file}" : file)} -----");
            text.AppendJoin('\n', lines.TakeLast(TailLines)).AppendLine();
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

    public virtual Task DisposeAsync()
    {
        foreach (var run in Runs)
        {
            run.Dispose();
        }

        DisposePeers();
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
