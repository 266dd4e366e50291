using System.Net;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Listener;

/// <summary>
/// Issue 12 over the wire: per-tenant limits as an SMTP client meets them (exact replies), and session slots that go
/// back however a session ends. Relay clients from 127.0.0.1 act for tenant-a, from 127.0.0.2 for tenant-b.
/// </summary>
public sealed class TenantLimitsTranscriptTests
{
    static readonly IPAddress TenantB = IPAddress.Parse("127.0.0.2");
    const string MessageRate = "450 4.7.1 Message rate limit for this account reached, try again later";
    const string JunkClosed = "421 4.7.0 Too many commands without a message, closing connection";

    static async Task<string?> SendAsync(RawSmtpClient c, string from, string to = "bob@example.net", string body = "hello\r\n")
    {
        var mail = await c.CommandAsync($"MAIL FROM:<{from}>");
        if (!mail!.StartsWith("250", StringComparison.Ordinal))
        {
            return mail;
        }

        Assert.StartsWith("250 2.1.5", await c.CommandAsync($"RCPT TO:<{to}>"));
        Assert.StartsWith("354 ", await c.CommandAsync("DATA"));
        await c.SendRawAsync($"From: <{from}>\r\nSubject: limits\r\n\r\n{body}.\r\n");
        return await c.ReadReplyAsync();
    }

    [Fact]
    public async Task Over_MessagesPerMinute_MAIL_gets_450_4_7_1_without_using_the_error_budget_and_the_other_tenant_still_sends()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await TestGateway.StartAsync(time: clock, limits: l => l.MaxErrors = 3,
            tenantLimits: (id, l) => l.MessagesPerMinute = id == "tenant-a" ? 2 : null);
        await using var a = await gw.ConnectAsync(gw.Relay);
        await a.HelloAsync();
        Assert.StartsWith("250 2.0.0", await SendAsync(a, "alice@tenant-a.example"));
        Assert.StartsWith("250 2.0.0", await SendAsync(a, "alice@tenant-a.example"));
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal("450 4.7.1 Message rate limit for this account reached, try again later", await a.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        }

        await using (var b = await gw.ConnectAsync(gw.Relay, source: TenantB))
        {
            await b.HelloAsync();
            Assert.StartsWith("250 2.0.0", await SendAsync(b, "bob@tenant-b.example"));
            Assert.StartsWith("250 2.0.0", await SendAsync(b, "bob@tenant-b.example"));
            Assert.StartsWith("250 2.0.0", await SendAsync(b, "bob@tenant-b.example"));
        }

        // The same session, a minute later: the window has moved on.
        clock.Advance(TimeSpan.FromMinutes(1));
        Assert.StartsWith("250 2.0.0", await SendAsync(a, "alice@tenant-a.example"));
        Assert.Equal(6, gw.Spool.Commits.Count);
    }

    [Fact]
    public async Task A_rate_limit_refusal_is_answered_only_after_RateLimitReplyDelay_pipelined_ones_one_delay_each_up_to_five_and_other_replies_are_not_held()
    {
        var clock = new TimerWatch(DateTimeOffset.UtcNow);
        await using var gw = await TestGateway.StartAsync(time: clock, limits: l => l.RateLimitReplyDelay = TimeSpan.FromSeconds(1),
            tenantLimits: (id, l) => l.MessagesPerMinute = id == "tenant-a" ? 1 : null);
        await using var a = await gw.ConnectAsync(gw.Relay);
        await a.HelloAsync();
        Assert.StartsWith("250 2.0.0", await SendAsync(a, "alice@tenant-a.example"));

        await a.SendRawAsync("MAIL FROM:<alice@tenant-a.example>\r\n");
        // Held: once the session has armed its 1 s hold, no reply while the fake clock stands still (a tight retry loop
        // gets one refusal a second at most).
        var reply = a.ReadReplyAsync();
        await clock.WaitForTimersAsync(TimeSpan.FromSeconds(1));
        Assert.False(reply.IsCompleted);
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(MessageRate, await reply);

        // The hold is for that reply only: the next command is answered at once.
        Assert.StartsWith("250", await a.CommandAsync("NOOP"));

        // Ten refused MAILs in one write (RFC 2920): one flush of ten replies, held 5 s (the cap), not 1 s nor 10 s.
        await a.SendRawAsync(string.Concat(Enumerable.Repeat("MAIL FROM:<alice@tenant-a.example>\r\n", 10)));
        var first = a.ReadReplyAsync();
        await clock.WaitForTimersAsync(TimeSpan.FromSeconds(5));
        clock.Advance(TimeSpan.FromSeconds(4));
        Assert.False(first.IsCompleted);
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(MessageRate, await first);
        for (var i = 1; i < 10; i++)
        {
            Assert.Equal(MessageRate, await a.ReadReplyAsync());
        }

        Assert.StartsWith("250", await a.CommandAsync("NOOP"));
    }

    [Fact]
    public async Task Over_RecipientsPerMinute_RCPT_gets_452_4_5_3_and_the_accepted_ones_are_sent()
    {
        await using var gw = await TestGateway.StartAsync(tenantLimits: (id, l) => l.RecipientsPerMinute = id == "tenant-a" ? 2 : null);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<r1@example.net>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<r2@example.net>"));
        Assert.Equal("452 4.5.3 Recipient rate limit for this account reached, send the remaining recipients later", await c.CommandAsync("RCPT TO:<r3@example.net>"));
        Assert.StartsWith("354 ", await c.CommandAsync("DATA"));
        await c.SendRawAsync("From: <alice@tenant-a.example>\r\nSubject: two\r\n\r\nbody\r\n.\r\n");
        Assert.StartsWith("250 2.0.0", await c.ReadReplyAsync());
        Assert.Equal(["r1@example.net", "r2@example.net"], Assert.Single(gw.Spool.Commits).Envelope.Recipients);
    }

    [Fact]
    public async Task Over_the_tenant_MaxMessageSize_is_552_5_3_4_at_MAIL_SIZE_and_at_DATA_while_EHLO_announces_the_gateway_size()
    {
        await using var gw = await TestGateway.StartAsync(tenantLimits: (id, l) => l.MaxMessageSize = id == "tenant-a" ? 200 : null);
        await using var c = await gw.ConnectAsync(gw.Relay);
        var ehlo = await c.HelloAsync();
        Assert.Contains("250-SIZE 26214400", ehlo);
        const string tooBig = "552 5.3.4 Message size exceeds this account's maximum message size";
        Assert.Equal(tooBig, await c.CommandAsync("MAIL FROM:<alice@tenant-a.example> SIZE=201"));
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<alice@tenant-a.example> SIZE=200"));
        Assert.StartsWith("250", await c.CommandAsync("RSET"));
        Assert.Equal(tooBig, await SendAsync(c, "alice@tenant-a.example", body: new string('x', 300) + "\r\n"));
        Assert.StartsWith("250 2.0.0", await SendAsync(c, "alice@tenant-a.example"));

        // tenant-b keeps the gateway's size.
        await using var b = await gw.ConnectAsync(gw.Relay, source: TenantB);
        await b.HelloAsync();
        Assert.StartsWith("250 2.0.0", await SendAsync(b, "bob@tenant-b.example", body: new string('x', 300) + "\r\n"));
    }

    [Fact]
    public async Task Over_MaxSessions_a_relay_client_gets_421_4_7_0_instead_of_the_banner_and_a_closed_session_frees_its_slot()
    {
        await using var gw = await TestGateway.StartAsync(tenantLimits: (id, l) => l.MaxSessions = id == "tenant-a" ? 1 : null);
        var first = await gw.ConnectAsync(gw.Relay);
        await first.HelloAsync();
        Assert.Equal(1, gw.RateLimits.OpenSessions("tenant-a"));

        await using (var second = await gw.ConnectAsync(gw.Relay))
        {
            Assert.Equal("421 4.7.0 Too many concurrent sessions for this account, try again later\r\n", await second.ReadToEndAsync());
        }

        await using (var b = await gw.ConnectAsync(gw.Relay, source: TenantB))
        {
            await b.HelloAsync();
        }

        Assert.StartsWith("221", await first.CommandAsync("QUIT"));
        await first.DisposeAsync();
        await Poll.UntilAsync(() => gw.RateLimits.OpenSessions("tenant-a") == 0);
        await using var third = await gw.ConnectAsync(gw.Relay);
        await third.HelloAsync();
    }

    [Fact]
    public async Task A_session_that_drops_mid_transaction_gives_its_slot_back()
    {
        await using var gw = await TestGateway.StartAsync(tenantLimits: (id, l) => l.MaxSessions = id == "tenant-a" ? 1 : null);
        var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<bob@example.net>"));
        Assert.StartsWith("354", await c.CommandAsync("DATA"));
        await c.SendRawAsync("From: <alice@tenant-a.example>\r\nSubject: cut\r\n\r\nhalf a bo");
        await c.DisposeAsync();

        await Poll.UntilAsync(() => gw.RateLimits.OpenSessions("tenant-a") == 0 && gw.Service.ActiveSessions == 0);
        await using var again = await gw.ConnectAsync(gw.Relay);
        await again.HelloAsync();
        Assert.Empty(gw.Spool.Commits);
    }

    [Fact]
    public async Task A_session_closed_by_the_command_timeout_gives_its_slot_back()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await TestGateway.StartAsync(time: clock, tenantLimits: (id, l) => l.MaxSessions = id == "tenant-a" ? 1 : null);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.Equal(1, gw.RateLimits.OpenSessions("tenant-a"));

        // The session may start its read timer after a first move of the clock: move it until the 421 comes.
        var reply = c.ReadReplyAsync(TimeSpan.FromSeconds(10));
        await Poll.UntilAsync(() =>
        {
            clock.Advance(TimeSpan.FromMinutes(6));
            return reply.IsCompleted;
        });

        Assert.StartsWith("421 4.4.2", await reply);
        await Poll.UntilAsync(() => gw.RateLimits.OpenSessions("tenant-a") == 0);
    }

    [Fact]
    public async Task Over_MaxSessions_AUTH_gets_454_4_7_0_and_no_strike_then_succeeds_once_a_session_ends()
    {
        await using var gw = await TestGateway.StartAsync(tenantLimits: (id, l) => l.MaxSessions = id == "tenant-a" ? 1 : null,
            identity: i => i.AuthFailuresBeforeDisconnect = 2);
        var token = gw.Tokens.Mint("tenant-a", null, [], "agent").Token;
        var first = await IdentityTranscriptTests.SubmissionAsync(gw);
        Assert.StartsWith("235 2.7.0", await first.CommandAsync("AUTH PLAIN " + IdentityTranscriptTests.Plain("", "tenant-a", token)));

        await using var second = await IdentityTranscriptTests.SubmissionAsync(gw);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal("454 4.7.0 Too many concurrent sessions for this account, try again later", await second.CommandAsync("AUTH PLAIN " + IdentityTranscriptTests.Plain("", "tenant-a", token)));
        }

        await first.DisposeAsync();
        await Poll.UntilAsync(() => gw.RateLimits.OpenSessions("tenant-a") == 0);
        Assert.StartsWith("235 2.7.0", await second.CommandAsync("AUTH PLAIN " + IdentityTranscriptTests.Plain("", "tenant-a", token)));
        Assert.StartsWith("250 2.1.0", await second.CommandAsync("MAIL FROM:<agent@tenant-a.example>"));
    }

    [Fact]
    public async Task A_client_looping_on_a_rate_limited_MAIL_is_closed_at_the_junk_limit_and_an_accepted_message_restores_the_budget()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await TestGateway.StartAsync(time: clock, limits: l => l.MaxJunkCommands = 5,
            tenantLimits: (id, l) => l.MessagesPerMinute = id == "tenant-a" ? 1 : null);
        await using var a = await gw.ConnectAsync(gw.Relay);
        await a.HelloAsync();
        Assert.StartsWith("250 2.0.0", await SendAsync(a, "alice@tenant-a.example"));
        for (var i = 0; i < 4; i++)
        {
            Assert.Equal(MessageRate, await a.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        }

        // A client that waits for the window and retries is not cut off: its accepted message starts the budget afresh.
        clock.Advance(TimeSpan.FromMinutes(1));
        Assert.StartsWith("250 2.0.0", await SendAsync(a, "alice@tenant-a.example"));
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(MessageRate, await a.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        }

        Assert.Equal(JunkClosed, await a.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        Assert.True(await a.IsClosedAsync());
        Assert.Equal(2, gw.Spool.Commits.Count);
    }

    [Fact]
    public async Task A_client_looping_on_a_rate_limited_RCPT_is_closed_at_the_junk_limit()
    {
        await using var gw = await TestGateway.StartAsync(limits: l => l.MaxJunkCommands = 5,
            tenantLimits: (id, l) => l.RecipientsPerMinute = id == "tenant-a" ? 1 : null);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<r0@example.net>"));
        for (var i = 1; i <= 5; i++)
        {
            Assert.StartsWith("452 4.5.3", await c.CommandAsync($"RCPT TO:<r{i}@example.net>"));
        }

        Assert.Equal(JunkClosed, await c.CommandAsync("RCPT TO:<r6@example.net>"));
        Assert.True(await c.IsClosedAsync());
    }

    [Fact]
    public async Task AUTH_looping_at_MaxSessions_is_closed_at_the_junk_limit()
    {
        await using var gw = await TestGateway.StartAsync(tenantLimits: (id, l) => l.MaxSessions = id == "tenant-a" ? 1 : null);
        var token = gw.Tokens.Mint("tenant-a", null, [], "agent").Token;
        await using var first = await IdentityTranscriptTests.SubmissionAsync(gw);
        Assert.StartsWith("235 2.7.0", await first.CommandAsync("AUTH PLAIN " + IdentityTranscriptTests.Plain("", "tenant-a", token)));

        // Each refusal may cost an HSM MAC: 100 (Limits:MaxJunkCommands, the default) are answered 454, the next closes.
        await using var second = await IdentityTranscriptTests.SubmissionAsync(gw);
        var auth = "AUTH PLAIN " + IdentityTranscriptTests.Plain("", "tenant-a", token);
        for (var i = 0; i < 100; i++)
        {
            Assert.Equal("454 4.7.0 Too many concurrent sessions for this account, try again later", await second.CommandAsync(auth));
        }

        Assert.Equal(JunkClosed, await second.CommandAsync(auth));
        Assert.True(await second.IsClosedAsync());
        Assert.Equal(1, gw.RateLimits.OpenSessions("tenant-a"));
    }
}
