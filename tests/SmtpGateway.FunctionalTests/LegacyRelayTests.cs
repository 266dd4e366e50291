using System.Text;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 3, legacy relay: on the plain relay listener the client's source address picks the tenant. Loopback has all
/// of 127.0.0.0/8, so a client bound to 127.0.0.2 is tenant-b's network (config/gateway.json) and one bound to
/// 127.0.0.3 is nobody's: it may only send inbound, to a tenant's domain.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class LegacyRelayTests(GatewayHarness harness, ITestOutputHelper output) : IClassFixture<GatewayHarness>
{
    const string TenantBNetwork = "127.0.0.2";
    const string NoTenantNetwork = "127.0.0.3";
    static readonly TimeSpan AuditWait = TimeSpan.FromSeconds(5);

    [Fact]
    public Task Tenant_b_network_sending_as_tenant_a_gets_550_5_7_1_and_is_audited_cross_tenant() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var sender = $"app-{Guid.NewGuid():N}@tenant-a.example";
        using var smtp = await ConnectFromAsync(TenantBNetwork, cts.Token);

        var reply = await Step(smtp, $"MAIL FROM:<{sender}>", cts.Token);
        Assert.Equal(550, reply.Code);
        Assert.StartsWith("5.7.1 ", reply.Lines[0], StringComparison.Ordinal);

        var refused = await harness.Audit.WaitForAsync(e => e is { Action: "send-as", Result: "refused" } && e.Subject == sender,
            $"send-as refused for {sender}", AuditWait, cts.Token);
        output.WriteLine("audit: " + refused);
        Assert.Equal("tenant-b", refused.Tenant);
        Assert.Equal(TenantBNetwork, refused.ClientIp);
        Assert.Equal("relay", refused.Listener);
        Assert.True(refused.CrossTenant, "a tenant-b client sending as tenant-a is not marked crossTenant");
    });

    [Fact]
    public Task Tenant_b_network_sending_as_tenant_b_is_delivered_to_the_smarthost() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var marker = Guid.NewGuid().ToString("N");
        const string sender = "legacy-app@tenant-b.example";
        var recipient = $"legacy-{marker}@example.net";
        using var smtp = await ConnectFromAsync(TenantBNetwork, cts.Token);

        var content = Message($"Legacy App <{sender}>", recipient, marker);
        var reply = await smtp.SendMailAsync(sender, [recipient], content, cts.Token);
        output.WriteLine($"final reply: {reply}");
        Assert.Equal(250, reply.Code);
        Assert.StartsWith("2.0.0 Ok: queued as ", reply.Lines[0], StringComparison.Ordinal);

        var messages = await harness.Sink.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{recipient}>")), TimeSpan.FromSeconds(30), cts.Token);
        var message = Assert.Single(messages, m => m.RcptArgs.Contains($"<{recipient}>"));
        Assert.Matches(SinkMessage.VerpPattern("bounces.tenant-b.example"), message.MailArgs); // issue 7: the tenant's return path, not the client's MAIL FROM
        Assert.Equal($"Legacy App <{sender}>", message.Header("From"));
        var (received, rest) = message.SplitTopReceived() ?? throw new Xunit.Sdk.XunitException("no Received field on top:\n" + message.Content);
        output.WriteLine("gateway added: " + received);
        Assert.Contains($"([{TenantBNetwork}])", received, StringComparison.Ordinal);
        Assert.Equal(SinkMessage.AsDumped(content), rest);

        var legacy = await harness.Audit.WaitForAsync(e => e is { Action: "legacy-relay", Result: "ok", ClientIp: TenantBNetwork },
            "legacy-relay ok from 127.0.0.2", AuditWait, cts.Token);
        Assert.Equal("tenant-b", legacy.Tenant);
    });

    [Fact]
    public Task Tenant_b_network_with_a_tenant_a_header_From_gets_550_5_7_1_after_DATA_and_nothing_arrives() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var marker = Guid.NewGuid().ToString("N");
        var recipient = $"header-{marker}@example.net";
        using var smtp = await ConnectFromAsync(TenantBNetwork, cts.Token);

        var reply = await smtp.SendMailAsync("legacy-app@tenant-b.example", [recipient], Message("<ceo@tenant-a.example>", recipient, marker), cts.Token);
        output.WriteLine($"final reply: {reply}");
        Assert.Equal(550, reply.Code);
        Assert.StartsWith("5.7.1 ", reply.Lines[0], StringComparison.Ordinal);

        var refused = await harness.Audit.WaitForAsync(e => e is { Action: "header-from", Result: "refused", ClientIp: TenantBNetwork },
            "header-from refused from 127.0.0.2", AuditWait, cts.Token);
        Assert.Equal("tenant-b", refused.Tenant);
        Assert.True(refused.CrossTenant);
        Assert.DoesNotContain(harness.Sink.Messages(), m => m.RcptArgs.Contains($"<{recipient}>"));
    });

    [Fact]
    public Task Unknown_network_gets_554_5_7_1_for_outside_recipients_and_may_send_inbound_to_a_tenant_domain() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var marker = Guid.NewGuid().ToString("N");
        var outside = $"outside-{marker}@example.net";
        var inbound = $"bob-{marker}@tenant-a.example";
        const string sender = "someone@example.org";
        using var smtp = await ConnectFromAsync(NoTenantNetwork, cts.Token);

        Assert.Equal(250, (await Step(smtp, $"MAIL FROM:<{sender}>", cts.Token)).Code);
        var relay = await Step(smtp, $"RCPT TO:<{outside}>", cts.Token);
        Assert.Equal(554, relay.Code);
        Assert.StartsWith("5.7.1 ", relay.Lines[0], StringComparison.Ordinal);
        Assert.Equal(250, (await Step(smtp, $"RCPT TO:<{inbound}>", cts.Token)).Code);
        Assert.Equal(354, (await Step(smtp, "DATA", cts.Token)).Code);
        var content = Message($"<{sender}>", inbound, marker);
        await smtp.WriteAsync(RawSmtpClient.DotStuff(content), cts.Token);
        var queued = await smtp.ReadReplyAsync(cts.Token);
        output.WriteLine($"final reply: {queued}");
        Assert.Equal(250, queued.Code);

        // Inbound mail goes to the tenant's inbound route (the default drop folder), never out through the smarthost.
        var id = queued.Lines[0].Split(' ')[^1];
        var dropped = Path.Combine(harness.DataDirectory, "inbound", "tenant-a", id + ".eml");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!File.Exists(dropped))
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"{dropped} never appeared");
            await Task.Delay(100, cts.Token);
        }

        var text = await File.ReadAllTextAsync(dropped, cts.Token);
        Assert.StartsWith($"Return-Path: <{sender}>\r\nReceived: ", text, StringComparison.Ordinal);
        Assert.EndsWith(Encoding.ASCII.GetString(content), text, StringComparison.Ordinal);
        Assert.DoesNotContain(harness.Sink.Messages(), m => m.RcptArgs.Contains($"<{inbound}>") || m.RcptArgs.Contains($"<{outside}>"));

        var refused = await harness.Audit.WaitForAsync(e => e is { Action: "relay", Result: "refused" } && e.Subject == outside,
            $"relay refused for {outside}", AuditWait, cts.Token);
        Assert.Equal(NoTenantNetwork, refused.ClientIp);
        Assert.Null(refused.Tenant);
        Assert.DoesNotContain(harness.Audit.Records(), e => e is { Action: "legacy-relay", ClientIp: NoTenantNetwork });
    });

    Task<RawSmtpClient> ConnectFromAsync(string source, CancellationToken cancellationToken) =>
        harness.ConnectRelayFromAsync(source, output, cancellationToken, "legacy-app.functional.test");

    Task<SmtpReply> Step(RawSmtpClient smtp, string command, CancellationToken cancellationToken) => smtp.StepAsync(command, output, cancellationToken);

    static byte[] Message(string from, string to, string marker) => Encoding.ASCII.GetBytes(
        $"From: {from}\r\n" +
        $"To: <{to}>\r\n" +
        $"Subject: legacy relay {marker}\r\n" +
        $"Message-ID: <{marker}@legacy-app.functional.test>\r\n" +
        "Date: Thu, 27 Nov 2025 10:00:01 +0000\r\n" +
        "\r\n" +
        "Sent by a legacy application without AUTH.\r\n");
}
