using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>The MX harness with messages that live an hour and are retried hourly: a deferred message stays put for the queue tools.</summary>
public sealed class SlowRetryMxHarness() : MxHarness(TimeSpan.FromHours(1), ["01:00:00"]);

/// <summary>One line of DataDirectory/events/&lt;tenant&gt;.jsonl as the tests read it.</summary>
internal sealed record EventRecord(string Event, string Id, string Tenant, string From, string Recipient, string Reply, string? Host, string? Tls, int Attempt, string? DsnId);

/// <summary>
/// A real gateway in Mx mode: unbound on a loopback port serves the test zone below, Postfix smtp-sink instances on
/// 127.0.0.x (all on one fixed port, which Gateway:Delivery:Mx:Port points every MX connection at) play the mail
/// exchangers, and the gateway's relay listener takes mail from tenant-a (client 127.0.0.1) and tenant-b (127.0.0.2).
/// Each tenant has its own egress identity: EHLO egress-a.test from 127.0.0.1, egress-b.test from 127.0.0.2.
/// Retries are fast (1 s, 2 s) and messages expire after <see cref="MaxAge"/>, so expiry and DSNs happen within a test.
/// </summary>
public class MxHarness : GatewayProcessHarness
{
    public const string ServerName = "gw.mx.test";
    public static readonly TimeSpan MaxAge = TimeSpan.FromSeconds(12);
    readonly TimeSpan _maxAge;
    readonly string[] _schedule;

    /// <summary>The test zone: MX preference, fallback, 421, implicit MX, null MX, injected replies, TLS policy, tenants' own domains.</summary>
    static readonly string[] Records =
    [
        "probe.test. 300 IN A 127.0.0.1",
        "primary.test. 300 IN MX 10 mx1.primary.test.", "primary.test. 300 IN MX 20 mx2.primary.test.",
        "mx1.primary.test. 300 IN A 127.0.0.11", "mx2.primary.test. 300 IN A 127.0.0.12",
        "pref.test. 300 IN MX 20 mx2.pref.test.", "pref.test. 300 IN MX 10 mx1.pref.test.",
        "mx1.pref.test. 300 IN A 127.0.0.13", "mx2.pref.test. 300 IN A 127.0.0.14",
        "four21.test. 300 IN MX 10 mx1.four21.test.", "four21.test. 300 IN MX 20 mx2.four21.test.",
        "mx1.four21.test. 300 IN A 127.0.0.15", "mx2.four21.test. 300 IN A 127.0.0.16",
        "implicit.test. 300 IN A 127.0.0.17",
        "nullmx.test. 300 IN MX 0 .",
        "ok.test. 300 IN MX 10 mx.ok.test.", "mx.ok.test. 300 IN A 127.0.0.18",
        "hard.test. 300 IN MX 10 mx.hard.test.", "mx.hard.test. 300 IN A 127.0.0.19",
        "soft.test. 300 IN MX 10 mx.soft.test.", "mx.soft.test. 300 IN A 127.0.0.20",
        "retry.test. 300 IN MX 10 mx.retry.test.", "mx.retry.test. 300 IN A 127.0.0.21",
        "tls.test. 300 IN MX 10 mx.tls.test.", "mx.tls.test. 300 IN A 127.0.0.22",
        "shared.test. 300 IN MX 10 mx.shared.test.", "mx.shared.test. 300 IN A 127.0.0.23",
        "expire.test. 300 IN MX 10 mx.expire.test.", "mx.expire.test. 300 IN A 127.0.0.24",
        "tenant-a.example. 300 IN MX 10 mx.tenant-a.example.", "mx.tenant-a.example. 300 IN A 127.0.0.25",
        "tenant-b.example. 300 IN MX 10 mx.tenant-b.example.", "mx.tenant-b.example. 300 IN A 127.0.0.26",
    ];

    readonly List<SmtpSink> _sinks = [];

    public MxHarness()
        : this(MaxAge, ["00:00:01", "00:00:02"])
    {
    }

    /// <summary>A harness whose messages live <paramref name="maxAge"/> and are retried on <paramref name="schedule"/>.</summary>
    protected MxHarness(TimeSpan maxAge, string[] schedule)
        : base("smtpgw-mx-")
    {
        _maxAge = maxAge;
        _schedule = schedule;
    }

    public int RelayPort { get; private set; }

    /// <summary>The one port every MX of the zone listens on (Gateway:Delivery:Mx:Port).</summary>
    public int MxPort { get; private set; }

    internal Unbound Dns { get; private set; } = null!;

    /// <summary>The MX of tenant-a.example: where DSNs to tenant-a's senders arrive.</summary>
    internal SmtpSink TenantAMailbox { get; private set; } = null!;

    public override async Task InitializeAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        try
        {
            Dns = await Unbound.StartAsync(WorkDirectory, ["test.", "tenant-a.example.", "tenant-b.example."], Records, "probe.test", cts.Token);
            MxPort = FreePort.Next();
            RelayPort = FreePort.Next();
            TenantAMailbox = await StartSinkAsync("127.0.0.25", [], cts.Token);
            await File.WriteAllTextAsync(ConfigPath, BuildConfig(), cts.Token);
            await InitTenantTokensAsync(cts.Token);
            await CreateOperatorKeyAsync();
            var (fileName, prefix) = RepoPaths.Smtpgw();
            Gateway = ChildProcess.Start("smtpgw-mx", fileName, [.. prefix, "serve", "--config", ConfigPath], WorkDirectory,
                new Dictionary<string, string?> { ["DOTNET_NOLOGO"] = "1" },
                keepVariable: name => !name.StartsWith("SMTPGW__", StringComparison.OrdinalIgnoreCase));
            Runs.Add(Gateway);
            await WaitUntilReadyAsync(cts.Token);
        }
        catch (Exception e)
        {
            Failed = true;
            throw new InvalidOperationException($"MX harness failed to start: {e.Message}\n{Diagnostics()}", e);
        }
    }

    string BuildConfig()
    {
        var repoConfig = Path.Combine(RepoPaths.Root, "config", "gateway.json");
        var root = JsonNode.Parse(File.ReadAllText(repoConfig), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true })!
            .AsObject();
        var gateway = root["Gateway"]!.AsObject();
        gateway["ServerName"] = ServerName;
        gateway["DataDirectory"] = DataDirectory;
        gateway["Tls"] = new JsonObject();
        gateway["Listeners"] = new JsonArray(new JsonObject { ["Name"] = "relay", ["Kind"] = "Relay", ["Address"] = "127.0.0.1", ["Port"] = RelayPort });
        gateway["Dns"] = new JsonObject { ["Servers"] = new JsonArray(Dns.Endpoint), ["Timeout"] = "00:00:02", ["Retries"] = 1 };
        var delivery = gateway["Delivery"]!.AsObject();
        delivery["Mode"] = "Mx";

        // MX hosts and tenant smarthosts are 127.0.0.x: the destination guard's opt-out for every path.
        delivery["AllowPrivateDestinations"] = true;
        delivery["Workers"] = 4;
        delivery["Mx"] = new JsonObject { ["Port"] = MxPort, ["ConnectTimeout"] = "00:00:05", ["UseIPv6"] = false, ["AllowPrivateDestinations"] = true };
        delivery["Retry"] = new JsonObject { ["Schedule"] = new JsonArray(_schedule.Select(d => (JsonNode)d).ToArray()), ["Jitter"] = 0.1, ["MaxAge"] = _maxAge.ToString() };
        delivery["Tls"] = new JsonObject { ["Domains"] = new JsonObject { ["tls.test"] = "Required" } };
        delivery["Backoff"] = new JsonObject { ["FailuresBeforeBackoff"] = 3, ["InitialDelay"] = "00:00:01", ["MaxDelay"] = "00:00:02" };
        var tenants = root["Tenants"]!.AsObject();
        tenants["tenant-a"]!["Networks"] = new JsonArray("127.0.0.1/32");
        tenants["tenant-a"]!["Egress"] = new JsonObject { ["HeloName"] = "egress-a.test", ["SourceAddress"] = "127.0.0.1" };
        tenants["tenant-b"]!["Networks"] = new JsonArray("127.0.0.2/32");
        tenants["tenant-b"]!["Egress"] = new JsonObject { ["HeloName"] = "egress-b.test", ["SourceAddress"] = "127.0.0.2" };
        EnableAdmin(root);
        AllowUnsignedTenants(root);
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    async Task WaitUntilReadyAsync(CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (Gateway!.HasExited)
            {
                throw new InvalidOperationException($"smtpgw exited with status {Gateway.ExitCode}:\n{Gateway.Output}");
            }

            try
            {
                using var client = await RawSmtpClient.ConnectAsync("127.0.0.1", RelayPort, TimeSpan.FromSeconds(5), cancellationToken);
                if (client.Banner.Code == 220)
                {
                    return;
                }
            }
            catch (Exception e) when (e is SocketException or IOException or TimeoutException && clock.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(50, cancellationToken);
            }
        }
    }

    /// <summary>An MX: smtp-sink on <paramref name="address"/>:<see cref="MxPort"/> with <paramref name="options"/>; stopped with the harness.</summary>
    internal async Task<SmtpSink> StartSinkAsync(string address, IReadOnlyList<string> options, CancellationToken cancellationToken)
    {
        var sink = await SmtpSink.StartAtAsync(WorkDirectory, address, MxPort, options, cancellationToken);
        lock (_sinks)
        {
            _sinks.Add(sink);
        }

        return sink;
    }

    /// <summary>
    /// Sends one message through the relay listener from the tenant's client network (tenant-a: 127.0.0.1, tenant-b:
    /// 127.0.0.2) and returns its queue id.
    /// </summary>
    internal async Task<string> SendAsync(string tenant, string from, IReadOnlyList<string> recipients, string subject, CancellationToken cancellationToken)
    {
        var source = tenant == "tenant-b" ? "127.0.0.2" : "127.0.0.1";
        using var smtp = await RawSmtpClient.ConnectAsync("127.0.0.1", RelayPort, TimeSpan.FromSeconds(10), cancellationToken,
            localEndPoint: new IPEndPoint(IPAddress.Parse(source), 0));
        Assert.Equal(250, (await smtp.CommandAsync("EHLO client.functional.test", cancellationToken)).Code);
        return await SubmitAsync(smtp, from, recipients, subject, cancellationToken);
    }

    /// <summary><c>smtpgw ARGS... --config &lt;this gateway's config&gt;</c>.</summary>
    internal Task<ProcessResult> SmtpgwAsync(params string[] args)
        => RunSmtpgwAsync([.. args, "--config", ConfigPath], TimeSpan.FromSeconds(90));

    protected override IEnumerable<(string Name, string Output)> PeerOutputs()
    {
        var outputs = new List<(string, string)>();
        if (Dns is not null)
        {
            outputs.Add(("unbound", Dns.Output));
        }

        lock (_sinks)
        {
            foreach (var sink in _sinks)
            {
                outputs.Add(($"smtp-sink@{sink.Address}", sink.Output));
            }
        }

        return outputs;
    }

    protected override void DisposePeers()
    {
        lock (_sinks)
        {
            foreach (var sink in _sinks)
            {
                sink.Dispose();
            }
        }

        Dns?.Dispose();
    }
}
