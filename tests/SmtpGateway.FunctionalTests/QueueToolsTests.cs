using System.Text.Json;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 6, queue tools: `smtpgw queue list|show|retry|delete` against a running gateway (through its control directory)
/// and against a stopped gateway's spool (directly). Messages here are retried hourly, so only `queue retry` brings one back.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class QueueToolsTests(SlowRetryMxHarness harness, ITestOutputHelper output) : IClassFixture<SlowRetryMxHarness>
{
    const string SenderA = "app@tenant-a.example";
    static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Fact]
    public Task Queue_tools_list_show_retry_and_delete_on_a_running_then_a_stopped_gateway() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var marker = Guid.NewGuid().ToString("N")[..10];
        var refusing = await harness.StartSinkAsync("127.0.0.21", ["-r", "RCPT", "-b", "451 4.7.1 Greylisted"], cts.Token);
        var greylisted = $"grey-{marker}@retry.test";
        var deferredId = await harness.SendAsync("tenant-a", SenderA, [greylisted], $"queue tools {marker}", cts.Token);
        await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == deferredId && e.Event == "deferred"), Wait, cts.Token);
        var tlsId = await harness.SendAsync("tenant-a", SenderA, [$"secret-{marker}@tls.test"], "tls", cts.Token);
        await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == tlsId && e.Event == "deferred"), Wait, cts.Token);

        // list (JSON and filters) and show, next to the running gateway.
        var list = await Cli("queue", "list", "--json");
        var items = JsonDocument.Parse(list.StandardOutput).RootElement.EnumerateArray().ToList();
        var item = Assert.Single(items, i => i.GetProperty("id").GetString() == deferredId);
        Assert.Equal("deferred", item.GetProperty("state").GetString());
        Assert.Equal("tenant-a", item.GetProperty("tenant").GetString());
        Assert.Equal(1, item.GetProperty("attempts").GetInt32());
        var recipient = Assert.Single(item.GetProperty("recipients").EnumerateArray());
        Assert.Equal("pending", recipient.GetProperty("status").GetString());
        Assert.Equal("451 4.7.1 Greylisted", recipient.GetProperty("lastReply").GetString());
        Assert.DoesNotContain(deferredId, (await Cli("queue", "list", "--state", "failed")).StandardOutput, StringComparison.Ordinal);
        Assert.DoesNotContain(deferredId, (await Cli("queue", "list", "--tenant", "tenant-b")).StandardOutput, StringComparison.Ordinal);
        Assert.Contains(deferredId, (await Cli("queue", "list", "--state", "deferred")).StandardOutput, StringComparison.Ordinal);
        var show = (await Cli("queue", "show", deferredId)).StandardOutput;
        Assert.Contains("state:       deferred", show, StringComparison.Ordinal);
        Assert.Contains($"<{greylisted}> 451 4.7.1 Greylisted", show, StringComparison.Ordinal);
        Assert.Contains($"Subject: queue tools {marker}", show, StringComparison.Ordinal);

        // retry on the running gateway: the next attempt is an hour away, `queue retry` makes it now.
        Assert.Empty(refusing.Messages());
        refusing.Dispose();
        var accepting = await harness.StartSinkAsync("127.0.0.21", [], cts.Token);
        var retry = await Cli("queue", "retry", deferredId);
        Assert.Equal($"{deferredId}: due now", retry.StandardOutput.Trim());
        await accepting.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{greylisted}>")), Wait, cts.Token);
        var delivered = await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == deferredId && e.Event == "delivered"), Wait, cts.Token);
        Assert.Equal(2, delivered.Single(e => e.Id == deferredId && e.Event == "delivered").Attempt);

        // delete on the running gateway.
        Assert.Equal($"{tlsId}: deleted from queue", (await Cli("queue", "delete", tlsId)).StandardOutput.Trim());
        Assert.DoesNotContain(tlsId, (await Cli("queue", "list")).StandardOutput, StringComparison.Ordinal);
        var missing = await Cli("queue", "delete", tlsId, expectSuccess: false);
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("no such message", missing.StandardError, StringComparison.Ordinal);

        // The same tools on a stopped gateway's spool.
        var stoppedId = await harness.SendAsync("tenant-a", SenderA, [$"later-{marker}@tls.test"], "stopped", cts.Token);
        await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == stoppedId && e.Event == "deferred"), Wait, cts.Token);
        await harness.KillGatewayAsync();
        var before = DateTimeOffset.UtcNow;
        Assert.Equal($"{stoppedId}: due now", (await Cli("queue", "retry", stoppedId)).StandardOutput.Trim());
        var state = JsonDocument.Parse((await Cli("queue", "show", stoppedId, "--json")).StandardOutput).RootElement;
        Assert.InRange(state.GetProperty("nextAttemptAt").GetDateTimeOffset(), before.AddSeconds(-1), DateTimeOffset.UtcNow.AddSeconds(1));
        Assert.Contains("1 message(s) due now", (await Cli("queue", "retry", "--all")).StandardOutput, StringComparison.Ordinal);
        Assert.Equal($"{stoppedId}: deleted from queue", (await Cli("queue", "delete", stoppedId)).StandardOutput.Trim());
        Assert.DoesNotContain(stoppedId, (await Cli("queue", "list")).StandardOutput, StringComparison.Ordinal);
    });

    async Task<ProcessResult> Cli(params string[] args) => await Cli(args, expectSuccess: true);

    async Task<ProcessResult> Cli(string verb, string sub, string arg, bool expectSuccess) => await Cli([verb, sub, arg], expectSuccess);

    async Task<ProcessResult> Cli(string[] args, bool expectSuccess)
    {
        var result = await harness.SmtpgwAsync(args);
        output.WriteLine($"$ smtpgw {string.Join(' ', args)}\n{result.StandardOutput}{result.StandardError}");
        if (expectSuccess)
        {
            Assert.True(result.ExitCode == 0, $"smtpgw {string.Join(' ', args)}: {result}");
        }

        return result;
    }
}
