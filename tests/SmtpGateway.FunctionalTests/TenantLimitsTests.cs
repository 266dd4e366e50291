using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>The gateway with "Tenants:tenant-a:Limits:MessagesPerMinute" set to 3; tenant-b keeps the defaults.</summary>
public sealed class TenantLimitsHarness : GatewayHarness
{
    public const int TenantAMessagesPerMinute = 3;

    protected override Task CustomizeAsync(JsonObject config, CancellationToken cancellationToken)
    {
        var tenantA = (JsonObject)config["Tenants"]!["tenant-a"]!;
        tenantA["Limits"] = new JsonObject { ["MessagesPerMinute"] = TenantAMessagesPerMinute };
        return Task.CompletedTask;
    }
}

/// <summary>
/// Issue 12 with the real gateway process and smtp-sink: tenant-a at its message rate gets 450 4.7.1 on the next MAIL
/// (and a warning in the log), while tenant-b, over the same listener at the same moment, still sends and is delivered.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class TenantLimitsTests(TenantLimitsHarness harness, ITestOutputHelper output) : IClassFixture<TenantLimitsHarness>
{
    const string TenantANetwork = "127.0.0.1";
    const string TenantBNetwork = "127.0.0.2";

    static byte[] Message(string from, string recipient, string subject) => Encoding.ASCII.GetBytes(
        $"From: <{from}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\nMessage-ID: <{Guid.NewGuid():N}@limits.functional.test>\r\n\r\nbody\r\n");

    [Fact]
    public Task Tenant_a_gets_450_4_7_1_on_its_fourth_MAIL_in_a_minute_while_tenant_b_still_sends() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        const string senderA = "app@tenant-a.example";
        using var a = await harness.ConnectRelayFromAsync(TenantANetwork, output, cts.Token);
        for (var i = 0; i < TenantLimitsHarness.TenantAMessagesPerMinute; i++)
        {
            var recipient = $"limits-a{i}-{Guid.NewGuid():N}@example.net";
            var reply = await a.SendMailAsync(senderA, [recipient], Message(senderA, recipient, $"a{i}"), cts.Token);
            output.WriteLine($"tenant-a #{i + 1}: {reply}");
            Assert.Equal(250, reply.Code);
        }

        var refused = await a.StepAsync($"MAIL FROM:<{senderA}>", output, cts.Token);
        Assert.Equal(450, refused.Code);
        Assert.Equal("4.7.1 Message rate limit for this account reached, try again later", refused.Lines[0]);

        // tenant-b, at the same time, over the same listener: its own limit, untouched by tenant-a's.
        const string senderB = "app@tenant-b.example";
        var recipientB = $"limits-b-{Guid.NewGuid():N}@example.net";
        using (var b = await harness.ConnectRelayFromAsync(TenantBNetwork, output, cts.Token))
        {
            var reply = await b.SendMailAsync(senderB, [recipientB], Message(senderB, recipientB, "b"), cts.Token);
            output.WriteLine($"tenant-b: {reply}");
            Assert.Equal(250, reply.Code);
        }

        await harness.Sink.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{recipientB}>")), TimeSpan.FromSeconds(30), cts.Token);

        // The refusal is in the log as a warning naming the tenant and the limit (at most one a minute per tenant and limit).
        var clock = Stopwatch.StartNew();
        while (!harness.GatewayOutput.Contains("Tenant tenant-a reached its messages limit", StringComparison.Ordinal))
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), "no limit warning in the gateway's log");
            await Task.Delay(50, cts.Token);
        }

        // The session is still usable: a rate refusal is an answer, not a protocol error.
        Assert.Equal(250, (await a.StepAsync("RSET", output, cts.Token)).Code);
    });
}
