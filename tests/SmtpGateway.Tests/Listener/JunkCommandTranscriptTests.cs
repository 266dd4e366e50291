using SmtpGateway.Diagnostics;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Listener;

/// <summary>
/// Gateway:Limits:MaxJunkCommands (issue 12): NOOP, RSET, VRFY, HELP and repeated EHLO/HELO are answered up to the budget,
/// then the session gets 421 4.7.0 and is closed; an accepted message starts the budget afresh.
/// </summary>
public sealed class JunkCommandTranscriptTests
{
    static async Task<string?> SendMessageAsync(RawSmtpClient c, int n)
    {
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<bob@example.net>"));
        Assert.StartsWith("354 ", await c.CommandAsync("DATA"));
        await c.SendRawAsync($"From: <alice@tenant-a.example>\r\nSubject: {n}\r\n\r\nbody {n}\r\n.\r\n");
        return await c.ReadReplyAsync();
    }

    [Fact]
    public async Task A_client_looping_noop_is_closed_at_the_limit_and_counted()
    {
        // Only this test's listener name counts (other tests may close sessions in parallel).
        using var closed = new MeterCounter(Telemetry.SessionsJunkClosed, "listener", "relay");

        await using var gw = await TestGateway.StartAsync(limits: l => l.MaxJunkCommands = 10);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal("250 2.0.0 Ok", await c.CommandAsync("NOOP"));
        }

        Assert.Equal("421 4.7.0 Too many commands without a message, closing connection", await c.CommandAsync("NOOP"));
        Assert.True(await c.IsClosedAsync());
        Assert.True(closed.Total >= 1);
        Assert.Empty(gw.Spool.Commits);
    }

    [Theory]
    [InlineData("RSET")]
    [InlineData("VRFY bob")]
    [InlineData("HELP")]
    [InlineData("EHLO again.example")]
    [InlineData("HELO again.example")]
    public async Task Every_junk_verb_counts(string junk)
    {
        await using var gw = await TestGateway.StartAsync(limits: l => l.MaxJunkCommands = 3);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        for (var i = 0; i < 3; i++)
        {
            Assert.Matches("^2", await c.CommandAsync(junk));
        }

        Assert.StartsWith("421 4.7.0 ", await c.CommandAsync(junk));
        Assert.True(await c.IsClosedAsync());
    }

    [Fact]
    public async Task Mixed_junk_shares_one_budget_but_the_first_greeting_is_free()
    {
        await using var gw = await TestGateway.StartAsync(limits: l => l.MaxJunkCommands = 4);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync(); // the first EHLO is the greeting, not junk
        Assert.StartsWith("250 ", await c.CommandAsync("NOOP"));
        Assert.StartsWith("250 ", await c.CommandAsync("RSET"));
        Assert.StartsWith("252 ", await c.CommandAsync("VRFY bob"));
        Assert.StartsWith("214 ", await c.CommandAsync("HELP"));
        Assert.StartsWith("421 4.7.0 ", await c.CommandAsync("EHLO client.test.example"));
        Assert.True(await c.IsClosedAsync());
    }

    [Fact]
    public async Task The_greeting_after_starttls_is_not_junk()
    {
        // RFC 3207 section 4.2: the client must greet again after the handshake; that EHLO is required, not junk.
        await using var gw = await TestGateway.StartAsync(limits: l => l.MaxJunkCommands = 1);
        await using var c = await gw.ConnectAsync(gw.Submission);
        await c.HelloAsync();
        Assert.StartsWith("220 2.0.0", await c.CommandAsync("STARTTLS"));
        await c.StartTlsAsync();
        Assert.StartsWith("250", await c.CommandAsync("EHLO client.test.example"));
        Assert.StartsWith("250 ", await c.CommandAsync("NOOP"));
        Assert.StartsWith("421 4.7.0 ", await c.CommandAsync("NOOP"));
    }

    [Fact]
    public async Task A_client_sending_many_messages_with_rset_and_noop_between_is_never_closed()
    {
        // The budget is far smaller than the junk this client sends in total: each accepted message starts it afresh.
        await using var gw = await TestGateway.StartAsync(limits: l => l.MaxJunkCommands = 3);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        for (var n = 0; n < 25; n++)
        {
            Assert.StartsWith("250 2.0.0", await c.CommandAsync("RSET"));
            Assert.StartsWith("250 2.0.0", await c.CommandAsync("NOOP"));
            Assert.StartsWith("250 2.0.0 Ok: queued", await SendMessageAsync(c, n));
        }

        Assert.Equal(25, gw.Spool.Commits.Count);
        Assert.StartsWith("221 ", await c.CommandAsync("QUIT"));
    }

    [Fact]
    public async Task A_refused_message_does_not_reset_the_budget()
    {
        // Only mail that got through resets the count: a client cannot buy more idling with messages we refuse.
        await using var gw = await TestGateway.StartAsync(limits: l => l.MaxJunkCommands = 2);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250 ", await c.CommandAsync("NOOP"));
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<bob@example.net>"));
        Assert.StartsWith("354 ", await c.CommandAsync("DATA"));
        await c.SendRawAsync("From: <alice@tenant-a.example>\r\n\r\nbare\nLF\r\n.\r\n");
        Assert.StartsWith("550 5.6.0", await c.ReadReplyAsync());
        Assert.StartsWith("250 ", await c.CommandAsync("RSET"));
        Assert.StartsWith("421 4.7.0 ", await c.CommandAsync("NOOP"));
    }

    [Fact]
    public void A_budget_below_one_is_a_config_error_and_the_default_is_postfix_s()
    {
        Assert.Equal(100, new SmtpGateway.Configuration.LimitsConfig().MaxJunkCommands);
        var config = new SmtpGateway.Configuration.GatewayConfig { Limits = new() { MaxJunkCommands = 0 } };
        Assert.Contains(SmtpGateway.Configuration.GatewayConfigValidator.Collect(config), e => e.StartsWith("Gateway:Limits:MaxJunkCommands:", StringComparison.Ordinal));
    }
}
