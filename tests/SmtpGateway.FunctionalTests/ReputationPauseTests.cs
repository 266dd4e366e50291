using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 7, reputation: tenant-b's mail goes to an smtp-sink that refuses every RCPT with 550 5.1.1, and tenant-b may
/// bounce at most half of at least two outcomes. Two bounces pause it; its next message is held, not tried, until
/// `smtpgw queue resume`.
/// </summary>
public sealed class PauseHarness : GatewayHarness
{
    SmtpSink? _refusing;

    protected override async Task CustomizeAsync(JsonObject config, CancellationToken cancellationToken)
    {
        _refusing = await SmtpSink.StartAtAsync(WorkDirectory, "127.0.0.1", FreePort.Next(), ["-f", "RCPT", "-B", "550 5.1.1 No such user"], cancellationToken);
        var b = (JsonObject)config["Tenants"]!["tenant-b"]!;
        b["Egress"] = new JsonObject { ["Smarthost"] = new JsonObject { ["Host"] = "127.0.0.1", ["Port"] = _refusing.Port } };
        b["Reputation"] = new JsonObject { ["MaxBounceRate"] = 0.5, ["MinimumVolume"] = 2, ["Window"] = "01:00:00" };
    }

    protected override void DisposePeers()
    {
        base.DisposePeers();
        _refusing?.Dispose();
    }
}

[Collection(GatewayCollection.Name)]
public sealed class ReputationPauseTests(PauseHarness harness, ITestOutputHelper output) : IClassFixture<PauseHarness>
{
    const string TenantBNetwork = "127.0.0.2";
    static readonly TimeSpan Wait = TimeSpan.FromSeconds(40);

    [Fact]
    public Task A_tenant_past_its_bounce_rate_is_held_with_an_alert_and_released_by_queue_resume() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var marker = Guid.NewGuid().ToString("N");
        await SendAsync($"gone1-{marker}@example.net", cts.Token);
        await SendAsync($"gone2-{marker}@example.net", cts.Token);
        var paused = await EventAsync(e => e["event"]?.GetValue<string>() == "paused", cts.Token);
        output.WriteLine("alert: " + paused.ToJsonString());
        Assert.Contains("bounce rate 100.0%", paused["reply"]!.GetValue<string>(), StringComparison.Ordinal);
        await harness.Audit.WaitForAsync(e => e is { Action: "tenant-pause", Tenant: "tenant-b" }, "tenant-pause audit event", Wait, cts.Token);

        var list = await harness.SmtpgwAsync("queue", "paused", "--config", harness.ConfigPath);
        output.WriteLine(list.ToString());
        Assert.Contains("tenant-b\tpaused", list.StandardOutput, StringComparison.Ordinal);

        // Held: accepted (250), queued, never attempted while the tenant is paused.
        var held = $"held-{marker}@example.net";
        var id = await SendAsync(held, cts.Token);
        await Task.Delay(3000, cts.Token);
        var queued = await harness.SmtpgwAsync("queue", "list", "--config", harness.ConfigPath, "--tenant", "tenant-b", "--json");
        var item = Assert.Single(JsonNode.Parse(queued.StandardOutput)!.AsArray(), n => n!["id"]!.GetValue<string>() == id)!;
        Assert.Equal("queued", item["state"]!.GetValue<string>());
        Assert.Equal(0, item["attempts"]!.GetValue<int>());
        Assert.DoesNotContain(Events(), e => e["recipient"]?.GetValue<string>() == held);

        // Released: the operator resumes; within about two seconds the gateway notices and hands the held message back.
        var resumed = await harness.SmtpgwAsync("queue", "resume", "--config", harness.ConfigPath, "--tenant", "tenant-b");
        output.WriteLine(resumed.ToString());
        Assert.Equal(0, resumed.ExitCode);
        var clock = Stopwatch.StartNew();
        while (!Events().Any(e => e["recipient"]?.GetValue<string>() == held))
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), "the held message was not attempted within 15 s of resume");
            await Task.Delay(200, cts.Token);
        }

        output.WriteLine($"held message attempted {clock.Elapsed.TotalSeconds:0.0} s after resume");
        Assert.Equal("bounced", Events().First(e => e["recipient"]?.GetValue<string>() == held)["event"]!.GetValue<string>());
    });

    async Task<string> SendAsync(string recipient, CancellationToken cancellationToken)
    {
        using var smtp = await harness.ConnectRelayFromAsync(TenantBNetwork, output, cancellationToken, "pause.functional.test");
        var content = Encoding.ASCII.GetBytes($"From: <app@tenant-b.example>\r\nTo: <{recipient}>\r\nSubject: pause\r\n\r\nHello.\r\n");
        var reply = await smtp.SendMailAsync("app@tenant-b.example", [recipient], content, cancellationToken);
        output.WriteLine($"{recipient}: {reply}");
        Assert.Equal(250, reply.Code);
        return reply.Lines[0].Split(' ')[^1];
    }

    List<JsonObject> Events()
    {
        var path = Path.Combine(harness.DataDirectory, "events", "tenant-b.jsonl");
        return File.Exists(path)
            ? [.. File.ReadAllLines(path).Where(l => l.Length > 0).Select(l => (JsonObject)JsonNode.Parse(l)!)]
            : [];
    }

    async Task<JsonObject> EventAsync(Func<JsonObject, bool> match, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (Events().FirstOrDefault(match) is { } e)
            {
                return e;
            }

            if (clock.Elapsed > Wait)
            {
                throw new TimeoutException("no matching event:\n" + string.Join("\n", Events().Select(x => x.ToJsonString())));
            }

            await Task.Delay(100, cancellationToken);
        }
    }
}
