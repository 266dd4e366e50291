using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 12, backoff per egress identity: tenant-a and tenant-b both relay through the SAME smarthost (one host:port,
/// <see cref="ReputationSmarthost"/>), which answers <c>421 4.7.0</c> to tenant-a's EHLO name only. One refusal engages
/// backoff (FailuresBeforeBackoff 1) for ten minutes, far longer than the test; retries of deferred mail come after 1 s
/// and 2 s (the base harness).
/// </summary>
public sealed class EgressBackoffHarness : GatewayHarness
{
    public const string HeloA = "egress-a.backoff.test";
    public const string HeloB = "egress-b.backoff.test";
    public static readonly TimeSpan BackoffDelay = TimeSpan.FromMinutes(10);

    ReputationSmarthost? _smarthost;

    internal ReputationSmarthost Smarthost => _smarthost ?? throw new InvalidOperationException("not started");

    protected override async Task CustomizeAsync(JsonObject config, CancellationToken cancellationToken)
    {
        _smarthost = await ReputationSmarthost.StartAsync(WorkDirectory, [HeloA], cancellationToken);
        var tenants = (JsonObject)config["Tenants"]!;
        foreach (var (tenant, helo) in new[] { ("tenant-a", HeloA), ("tenant-b", HeloB) })
        {
            ((JsonObject)tenants[tenant]!)["Egress"] = new JsonObject
            {
                ["HeloName"] = helo,
                ["Smarthost"] = new JsonObject { ["Host"] = "127.0.0.1", ["Port"] = _smarthost.Port },
            };
        }

        var delay = BackoffDelay.ToString("c", System.Globalization.CultureInfo.InvariantCulture);
        config["Gateway"]!["Delivery"]!["Backoff"] = new JsonObject { ["FailuresBeforeBackoff"] = 1, ["InitialDelay"] = delay, ["MaxDelay"] = delay };
    }

    protected override IEnumerable<(string Name, string Output)> PeerOutputs() =>
        _smarthost is null
            ? base.PeerOutputs()
            : [.. base.PeerOutputs(), ("reputation-smarthost", _smarthost.Output + "\n" + string.Join('\n', _smarthost.Events().Select(e => e.ToJsonString())))];

    protected override void DisposePeers()
    {
        base.DisposePeers();
        _smarthost?.Dispose();
    }
}

[Collection(GatewayCollection.Name)]
public sealed class EgressBackoffTests(EgressBackoffHarness harness, ITestOutputHelper output) : IClassFixture<EgressBackoffHarness>
{
    static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    /// <summary>B's mail must arrive within this of its submission: a few seconds, far below A's backoff (10 min) and below B's first retry delay plus an attempt.</summary>
    static readonly TimeSpan Prompt = TimeSpan.FromSeconds(5);

    [Fact]
    public Task Tenant_a_smarthost_answering_421_does_not_delay_tenant_b_mail_to_the_same_host() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var marker = Guid.NewGuid().ToString("N");
        var rcptA = $"a-{marker}@example.net";
        var rcptB = $"b-{marker}@example.net";

        // A first: refused with 421 4.7.0 and deferred; its retries are then skipped by A's backoff, without a connection.
        var idA = await SendAsync("127.0.0.1", "app@tenant-a.example", rcptA, cts.Token);
        var eventsA = await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == idA && e.Event == "deferred" && e.Reply.Contains("not tried", StringComparison.Ordinal)),
            Wait, cts.Token);
        var refused = eventsA.First(e => e.Id == idA && e.Event == "deferred");
        output.WriteLine($"A's first attempt: {refused.Reply}");
        // The smarthost closes after its 421 (RFC 5321 section 3.8); MailKit's HELO fallback then meets the closed connection,
        // so the recorded reply is the gateway's own 451 4.4.1 for a session that failed before the transaction.
        Assert.StartsWith("451 4.4.1", refused.Reply, StringComparison.Ordinal);
        Assert.Equal(1, harness.Smarthost.RefusedCount(EgressBackoffHarness.HeloA));

        // Then B, to the same host:port, while A's backoff holds: delivered at the first attempt, within seconds.
        var clock = Stopwatch.StartNew();
        var idB = await SendAsync("127.0.0.2", "app@tenant-b.example", rcptB, cts.Token);
        var eventsB = await harness.WaitForEventsAsync("tenant-b", es => es.Any(e => e.Id == idB && e.Event is "delivered" or "deferred" or "bounced"), Wait, cts.Token);
        var elapsed = clock.Elapsed;
        var outcomeB = eventsB.First(e => e.Id == idB);
        output.WriteLine($"B's first attempt after {elapsed.TotalSeconds:0.00} s: {outcomeB.Event} {outcomeB.Reply}");
        Assert.Equal("delivered", outcomeB.Event);
        Assert.Equal(1, outcomeB.Attempt);
        Assert.True(elapsed < Prompt, $"tenant-b's mail took {elapsed} (limit {Prompt}; tenant-a's backoff is {EgressBackoffHarness.BackoffDelay})");
        Assert.True(harness.Smarthost.Received(rcptB), "the smarthost did not store tenant-b's message");

        // A's mail stays deferred behind A's own backoff: nothing delivered, no second connection from A.
        await Task.Delay(TimeSpan.FromSeconds(2), cts.Token);
        Assert.DoesNotContain(harness.Events("tenant-a"), e => e.Id == idA && e.Event != "deferred");
        Assert.False(harness.Smarthost.Received(rcptA), "tenant-a's message was delivered although its smarthost refuses it");
        Assert.Equal(1, harness.Smarthost.RefusedCount(EgressBackoffHarness.HeloA));
    });

    async Task<string> SendAsync(string source, string from, string recipient, CancellationToken cancellationToken)
    {
        using var smtp = await harness.ConnectRelayFromAsync(source, output, cancellationToken, "backoff.functional.test");
        var content = Encoding.ASCII.GetBytes($"From: <{from}>\r\nTo: <{recipient}>\r\nSubject: backoff\r\nMessage-ID: <{Guid.NewGuid():N}@backoff.test>\r\n\r\nHello.\r\n");
        var reply = await smtp.SendMailAsync(from, [recipient], content, cancellationToken);
        output.WriteLine($"{recipient}: {reply}");
        Assert.Equal(250, reply.Code);
        return reply.Lines[0].Split(' ')[^1];
    }
}
