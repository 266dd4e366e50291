using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 6: MX routing, per-recipient outcomes, retries, expiry with a DSN, TLS policy and per-tenant connections, against
/// a real DNS server (unbound) and real MTAs (Postfix smtp-sink on 127.0.0.x). See <see cref="MxHarness"/> for the zone.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class MxDeliveryTests(MxHarness harness, ITestOutputHelper output) : IClassFixture<MxHarness>
{
    const string SenderA = "app@tenant-a.example";
    static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    static string Marker() => Guid.NewGuid().ToString("N")[..12];

    [Fact]
    public Task Most_preferred_MX_gets_the_mail() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var primary = await harness.StartSinkAsync("127.0.0.13", [], cts.Token);
        var secondary = await harness.StartSinkAsync("127.0.0.14", [], cts.Token);
        var rcpt = $"pref-{Marker()}@pref.test";

        var id = await harness.SendAsync("tenant-a", SenderA, [rcpt], "preference", cts.Token);

        var message = Assert.Single(await primary.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{rcpt}>")), Wait, cts.Token));
        Assert.Equal("egress-a.test", message.HeloArgs);
        var delivered = await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == id && e.Event == "delivered"), Wait, cts.Token);
        var e = Assert.Single(delivered, e => e.Id == id);
        output.WriteLine($"event: {e}");
        Assert.StartsWith($"mx1.pref.test[127.0.0.13]:{harness.MxPort}", e.Host);
        Assert.StartsWith("250", e.Reply);
        Assert.Null(e.Tls); // smtp-sink offers no STARTTLS: plaintext under the default opportunistic policy.
        Assert.Empty(secondary.Messages());
    });

    [Fact]
    public Task Unreachable_primary_MX_falls_back_to_the_next_preference() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var secondary = await harness.StartSinkAsync("127.0.0.12", [], cts.Token);
        var rcpt = $"fallback-{Marker()}@primary.test";

        var id = await harness.SendAsync("tenant-a", SenderA, [rcpt], "fallback", cts.Token);

        await secondary.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{rcpt}>")), Wait, cts.Token);
        var events = await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == id && e.Event == "delivered"), Wait, cts.Token);
        var delivered = Assert.Single(events, e => e.Id == id);
        Assert.StartsWith("mx2.primary.test[127.0.0.12]", delivered.Host);
        Assert.Equal(1, delivered.Attempt); // within the same attempt, not after a retry
    });

    [Fact]
    public Task MX_answering_421_hands_the_whole_transaction_to_the_next_MX() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var closing = await harness.StartSinkAsync("127.0.0.15", ["-Q", "RCPT"], cts.Token);
        var backup = await harness.StartSinkAsync("127.0.0.16", [], cts.Token);
        var marker = Marker();
        string[] rcpts = [$"one-{marker}@four21.test", $"two-{marker}@four21.test"];

        var id = await harness.SendAsync("tenant-a", SenderA, rcpts, "421", cts.Token);

        // Issue 7: each recipient has its own VERP return path, so each is its own transaction; both move to the backup MX.
        var messages = await backup.WaitAsync(ms => rcpts.All(r => ms.Any(m => m.RcptArgs.Contains($"<{r}>"))), Wait, cts.Token);
        foreach (var rcpt in rcpts)
        {
            var message = Assert.Single(messages, m => m.RcptArgs.Contains($"<{rcpt}>"));
            Assert.Equal([$"<{rcpt}>"], message.RcptArgs);
            Assert.Matches(SinkMessage.VerpPattern("bounces.tenant-a.example"), message.MailArgs);
        }

        var events = await harness.WaitForEventsAsync("tenant-a", es => es.Count(e => e.Id == id && e.Event == "delivered") == 2, Wait, cts.Token);
        Assert.All(events.Where(e => e.Id == id), e => Assert.StartsWith("mx2.four21.test", e.Host));
        Assert.Empty(closing.Messages());
    });

    [Fact]
    public Task Domain_without_MX_is_delivered_to_its_address_record() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var host = await harness.StartSinkAsync("127.0.0.17", [], cts.Token);
        var rcpt = $"implicit-{Marker()}@implicit.test";

        var id = await harness.SendAsync("tenant-a", SenderA, [rcpt], "implicit MX", cts.Token);

        await host.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{rcpt}>")), Wait, cts.Token);
        var events = await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == id && e.Event == "delivered"), Wait, cts.Token);
        Assert.StartsWith("implicit.test[127.0.0.17]", Assert.Single(events, e => e.Id == id).Host);
    });

    [Fact]
    public Task Null_MX_domain_bounces_at_once_with_5_1_10_and_the_sender_gets_a_DSN() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var rcpt = $"nobody-{Marker()}@nullmx.test";

        var id = await harness.SendAsync("tenant-a", SenderA, [rcpt], "null MX", cts.Token);

        var events = await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == id && e.Event == "bounced"), Wait, cts.Token);
        var bounced = Assert.Single(events, e => e.Id == id);
        output.WriteLine($"event: {bounced}");
        Assert.StartsWith("556 5.1.10 ", bounced.Reply);
        Assert.Equal(1, bounced.Attempt);
        Assert.NotNull(bounced.DsnId);
        var dsn = await WaitForDsnAsync(id, rcpt, cts.Token);
        Assert.Contains("Status: 5.1.10", dsn.Content, StringComparison.Ordinal);
        Assert.Contains($"Final-Recipient: rfc822; {rcpt}", dsn.Content, StringComparison.Ordinal);
    });

    [Fact]
    public Task Nonexistent_domain_bounces_with_5_4_4() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var rcpt = $"x-{Marker()}@nosuch-domain.test";

        var id = await harness.SendAsync("tenant-a", SenderA, [rcpt], "NXDOMAIN", cts.Token);

        var events = await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == id && e.Event == "bounced"), Wait, cts.Token);
        Assert.StartsWith("550 5.4.4 ", Assert.Single(events, e => e.Id == id).Reply);
    });

    [Fact]
    public Task One_message_to_three_domains_gets_an_outcome_per_recipient() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var ok = await harness.StartSinkAsync("127.0.0.18", [], cts.Token);
        var hard = await harness.StartSinkAsync("127.0.0.19", ["-f", "RCPT", "-B", "550 5.1.1 No such user"], cts.Token);
        var soft = await harness.StartSinkAsync("127.0.0.20", ["-r", "RCPT", "-b", "450 4.2.1 Mailbox busy"], cts.Token);
        var marker = Marker();
        string[] rcpts = [$"ok-{marker}@ok.test", $"gone-{marker}@hard.test", $"busy-{marker}@soft.test"];

        var id = await harness.SendAsync("tenant-a", SenderA, rcpts, "mixed", cts.Token);

        var events = await harness.WaitForEventsAsync("tenant-a", es => es.Count(e => e.Id == id && e.Attempt == 1) == 3, Wait, cts.Token);
        var first = events.Where(e => e.Id == id && e.Attempt == 1).ToDictionary(e => e.Recipient);
        foreach (var e in first.Values)
        {
            output.WriteLine($"event: {e}");
        }

        Assert.Equal("delivered", first[rcpts[0]].Event);
        Assert.Equal("bounced", first[rcpts[1]].Event);
        Assert.Equal("550 5.1.1 No such user", first[rcpts[1]].Reply);
        Assert.Equal("deferred", first[rcpts[2]].Event);
        Assert.Equal("450 4.2.1 Mailbox busy", first[rcpts[2]].Reply);
        Assert.Equal([$"<{rcpts[0]}>"], Assert.Single(ok.Messages(), m => m.RcptArgs.Contains($"<{rcpts[0]}>")).RcptArgs);
        Assert.Empty(hard.Messages());
        Assert.Empty(soft.Messages());

        // Only the deferred recipient is tried again.
        var retried = await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == id && e.Attempt == 2), Wait, cts.Token);
        Assert.Equal([rcpts[2]], retried.Where(e => e.Id == id && e.Attempt == 2).Select(e => e.Recipient));

        // The hard failure is reported to the sender at once.
        var dsn = await WaitForDsnAsync(id, rcpts[1], cts.Token);
        Assert.Contains($"Final-Recipient: rfc822; {rcpts[1]}", dsn.Content, StringComparison.Ordinal);
        Assert.Contains("Status: 5.1.1", dsn.Content, StringComparison.Ordinal);
    });

    [Fact]
    public Task Deferred_recipient_is_retried_and_delivered_once_the_MX_accepts() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var refusing = await harness.StartSinkAsync("127.0.0.21", ["-r", "RCPT", "-b", "451 4.7.1 Greylisted, try again later"], cts.Token);
        var rcpt = $"grey-{Marker()}@retry.test";

        var id = await harness.SendAsync("tenant-a", SenderA, [rcpt], "retry", cts.Token);

        var deferred = await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == id && e.Event == "deferred"), Wait, cts.Token);
        Assert.Equal("451 4.7.1 Greylisted, try again later", deferred.First(e => e.Id == id).Reply);
        Assert.Empty(refusing.Messages());
        refusing.Dispose();
        var accepting = await harness.StartSinkAsync("127.0.0.21", [], cts.Token);

        await accepting.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{rcpt}>")), Wait, cts.Token);
        var events = await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == id && e.Event == "delivered"), Wait, cts.Token);
        var delivered = Assert.Single(events, e => e.Id == id && e.Event == "delivered");
        Assert.True(delivered.Attempt >= 2, $"delivered on attempt {delivered.Attempt}");
    });

    [Fact]
    public Task Expired_message_gets_an_RFC_3464_DSN_from_the_null_sender() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        await harness.StartSinkAsync("127.0.0.24", ["-r", "RCPT", "-b", "452 4.2.2 Mailbox full"], cts.Token);
        var rcpt = $"full-{Marker()}@expire.test";

        var id = await harness.SendAsync("tenant-a", SenderA, [rcpt], "expiry-subject", cts.Token);

        var events = await harness.WaitForEventsAsync("tenant-a", es => es.Any(e => e.Id == id && e.Event == "expired"), MxHarness.MaxAge + Wait, cts.Token);
        var expired = Assert.Single(events, e => e.Id == id && e.Event == "expired");
        Assert.True(events.Count(e => e.Id == id && e.Event == "deferred") >= 2, "retried before expiring");
        Assert.NotNull(expired.DsnId);

        var dsn = await WaitForDsnAsync(id, rcpt, cts.Token);
        output.WriteLine(dsn.Content);
        Assert.Equal("<>", dsn.MailArgs.Split(' ')[0]);
        Assert.Equal([$"<{SenderA}>"], dsn.RcptArgs);
        Assert.Equal($"Mail Delivery System <MAILER-DAEMON@{MxHarness.ServerName}>", dsn.Header("From"));
        Assert.Equal($"<{SenderA}>", dsn.Header("To"));
        Assert.Equal("auto-replied", dsn.Header("Auto-Submitted"));
        Assert.StartsWith("multipart/report; report-type=delivery-status;", dsn.Header("Content-Type"), StringComparison.Ordinal);
        Assert.Contains("Content-Type: message/delivery-status\n", dsn.Content, StringComparison.Ordinal);
        Assert.Contains($"Reporting-MTA: dns; {MxHarness.ServerName}\n", dsn.Content, StringComparison.Ordinal);
        Assert.Contains($"Final-Recipient: rfc822; {rcpt}\n", dsn.Content, StringComparison.Ordinal);
        Assert.Contains("Action: failed\n", dsn.Content, StringComparison.Ordinal);
        Assert.Contains("Status: 4.4.7\n", dsn.Content, StringComparison.Ordinal);
        Assert.Contains("Remote-MTA: dns; mx.expire.test\n", dsn.Content, StringComparison.Ordinal);
        Assert.Contains("Diagnostic-Code: smtp; 452 4.2.2 Mailbox full\n", dsn.Content, StringComparison.Ordinal);
        Assert.Contains("Content-Type: text/rfc822-headers\n", dsn.Content, StringComparison.Ordinal);
        Assert.Contains("Subject: expiry-subject\n", dsn.Content, StringComparison.Ordinal);
        Assert.DoesNotContain("Body of expiry-subject", dsn.Content, StringComparison.Ordinal);

        // A DSN is never answered with a DSN: its own envelope sender is null.
        Assert.DoesNotContain(harness.Events("tenant-a"), e => e.Id == expired.DsnId && e.Event is "bounced" or "expired" && e.DsnId is not null);
    });

    [Fact]
    public Task Required_TLS_against_an_MX_without_STARTTLS_defers_and_never_sends_in_plaintext() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var plain = await harness.StartSinkAsync("127.0.0.22", [], cts.Token);
        var rcpt = $"secret-{Marker()}@tls.test";

        var id = await harness.SendAsync("tenant-a", SenderA, [rcpt], "tls required", cts.Token);

        var events = await harness.WaitForEventsAsync("tenant-a", es => es.Count(e => e.Id == id && e.Event == "deferred") >= 2, Wait, cts.Token);
        foreach (var e in events.Where(e => e.Id == id))
        {
            output.WriteLine($"event: {e}");
            Assert.Equal("deferred", e.Event);
            Assert.StartsWith("451 4.7.10 ", e.Reply);
            Assert.Contains("STARTTLS", e.Reply, StringComparison.Ordinal);
        }

        Assert.Empty(plain.Messages());
        Assert.DoesNotContain(harness.Events("tenant-a"), e => e.Id == id && e.Event == "delivered");
    });

    [Fact]
    public Task Two_tenants_to_the_same_MX_never_share_a_connection() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var mx = await harness.StartSinkAsync("127.0.0.23", [], cts.Token);
        var marker = Marker();
        var sent = new List<(string Tenant, string Rcpt)>();
        for (var i = 0; i < 4; i++)
        {
            foreach (var (tenant, sender) in new[] { ("tenant-a", SenderA), ("tenant-b", "app@tenant-b.example") })
            {
                var rcpt = $"{tenant}-{i}-{marker}@shared.test";
                await harness.SendAsync(tenant, sender, [rcpt], $"shared {i}", cts.Token);
                sent.Add((tenant, rcpt));
            }
        }

        var messages = await mx.WaitAsync(ms => sent.All(s => ms.Any(m => m.RcptArgs.Contains($"<{s.Rcpt}>"))), Wait, cts.Token);
        foreach (var (tenant, rcpt) in sent)
        {
            var message = Assert.Single(messages, m => m.RcptArgs.Contains($"<{rcpt}>"));

            // smtp-sink records the EHLO and the client address of the session that carried each message.
            var clientAddress = File.ReadLines(message.Path).First();
            output.WriteLine($"{tenant} {rcpt}: EHLO {message.HeloArgs}, {clientAddress}");
            Assert.Equal(tenant == "tenant-a" ? "egress-a.test" : "egress-b.test", message.HeloArgs);
            Assert.Equal(tenant == "tenant-a" ? "X-Client-Addr: 127.0.0.1" : "X-Client-Addr: 127.0.0.2", clientAddress);
        }
    });

    /// <summary>The DSN about <paramref name="originalId"/> reporting <paramref name="recipient"/>, as it arrived at tenant-a's MX.</summary>
    async Task<SinkMessage> WaitForDsnAsync(string originalId, string recipient, CancellationToken cancellationToken)
    {
        bool About(SinkMessage m) => m.Content.Contains($"X-Queue-ID: {originalId}\n", StringComparison.Ordinal)
            && m.Content.Contains($"Final-Recipient: rfc822; {recipient}\n", StringComparison.Ordinal);
        var messages = await harness.TenantAMailbox.WaitAsync(ms => ms.Any(About), MxHarness.MaxAge + Wait, cancellationToken);
        var dsn = Assert.Single(messages, About);
        Assert.StartsWith("<>", dsn.MailArgs, StringComparison.Ordinal);
        return dsn;
    }
}
