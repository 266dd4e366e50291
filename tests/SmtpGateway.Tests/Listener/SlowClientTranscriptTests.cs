using System.Net;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Spool;

namespace SmtpGateway.Tests.Listener;

/// <summary>
/// Slow clients (issue 12): a client trickling octets must be closed at a limit, not held until SessionTimeout. The
/// command timeout already runs from the start of the line (it is not restarted per octet); the DATA block timeout is,
/// so DATA has a minimum rate too (Limits:MinDataRate, Kestrel's MinRequestBodyDataRate with DataTimeout as grace).
/// Time is the fake clock's: the tests move it, they never wait for it.
/// </summary>
public sealed class SlowClientTranscriptTests
{
    static readonly IPAddress TenantB = IPAddress.Parse("127.0.0.2"); // Dkim:Unsigned, so a finished message is 250

    /// <summary>
    /// Sends one octet, waits until the session has taken it and waits for more, then moves the fake clock by
    /// <paramref name="step"/>; stops at the first reply. After a move the session either had nothing due (and waits on)
    /// or closes, and then the next octet's wait ends with the reply.
    /// </summary>
    /// <returns>The pending (or received) reply, and the fake time the trickle took.</returns>
    static async Task<(Task<string?> Reply, TimeSpan Elapsed)> TrickleAsync(RawSmtpClient c, FakeTimeProvider clock, TimeSpan step, int maxOctets)
    {
        var started = clock.GetUtcNow();
        var reply = c.ReadReplyAsync(TimeSpan.FromSeconds(30));
        for (var i = 0; i < maxOctets && !reply.IsCompleted; i++)
        {
            try
            {
                await c.SendAndSettleAsync("x", reply);
            }
            catch (IOException)
            {
                break; // closed under us: the reply is already there
            }

            if (reply.IsCompleted)
            {
                break;
            }

            clock.Advance(step);
        }

        return (reply, clock.GetUtcNow() - started);
    }

    /// <summary>A tenant-b session on the relay listener, after the 354 to DATA.</summary>
    static async Task<RawSmtpClient> OpenDataAsync(TestGateway gw)
    {
        var c = await gw.ConnectAsync(gw.Relay, source: TenantB);
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<carol@tenant-b.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<bob@example.net>"));
        Assert.StartsWith("354", await c.CommandAsync("DATA"));
        return c;
    }

    [Fact]
    public async Task A_DATA_trickler_is_closed_with_421_4_4_2_once_below_the_minimum_rate_after_the_grace()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await TestGateway.StartAsync(time: clock);
        await using var c = await OpenDataAsync(gw);

        // One octet every 10 s never trips the 3-minute block timeout, but is far below 240 octets/s.
        var (pending, elapsed) = await TrickleAsync(c, clock, TimeSpan.FromSeconds(10), maxOctets: 100);

        Assert.True(pending.IsCompleted, "still open after 100 octets");
        var reply = await pending;
        Assert.StartsWith("421 4.4.2", reply);
        Assert.Contains("too slowly", reply, StringComparison.Ordinal);
        // Closed at the limit: the grace (DataTimeout, 3 minutes) plus what its few octets bought, plus one step.
        Assert.InRange(elapsed, TimeSpan.FromMinutes(3), TimeSpan.FromMinutes(3) + TimeSpan.FromSeconds(30));
        Assert.True(await c.IsClosedAsync());
        Assert.Empty(gw.Spool.Commits);
    }

    [Fact]
    public async Task With_MinDataRate_0_a_DATA_trickler_is_bounded_only_by_the_block_timeout()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await TestGateway.StartAsync(l => l.MinDataRate = 0, time: clock);
        await using var c = await OpenDataAsync(gw);
        await c.SendRawAsync("From: <carol@tenant-b.example>\r\n\r\n");

        // Five minutes of one octet every 10 s: past the rate's deadline, but the rate is off, so the session stays.
        var (reply, _) = await TrickleAsync(c, clock, TimeSpan.FromSeconds(10), maxOctets: 30);
        Assert.False(reply.IsCompleted, "closed although MinDataRate is 0");

        await c.SendRawAsync("\r\n.\r\n");
        Assert.StartsWith("250 2.0.0", await reply);
        Assert.Single(gw.Spool.Commits);
    }

    [Fact]
    public async Task A_DATA_client_at_a_normal_rate_after_a_long_pause_is_not_closed()
    {
        // The grace is the RFC 5321 block timeout: a client may think for almost 3 minutes after the 354, then send.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await TestGateway.StartAsync(time: clock);
        await using var c = await OpenDataAsync(gw);
        clock.Advance(TimeSpan.FromMinutes(3) - TimeSpan.FromSeconds(5));
        var body = "From: <carol@tenant-b.example>\r\n\r\n" + string.Concat(Enumerable.Repeat(new string('a', 70) + "\r\n", 40));
        await c.SendRawAsync(body);
        Assert.StartsWith("250 2.0.0", await c.CommandAsync("."));
    }

    [Fact]
    public async Task A_command_trickler_is_closed_at_the_command_timeout_counted_from_the_start_of_the_line()
    {
        // The command timer is not restarted by each octet: a line must be complete within CommandTimeout.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await TestGateway.StartAsync(time: clock);
        await using var c = await gw.ConnectAsync(gw.Relay, source: TenantB);
        await c.HelloAsync();

        var (pending, elapsed) = await TrickleAsync(c, clock, TimeSpan.FromSeconds(30), maxOctets: 100);

        Assert.True(pending.IsCompleted, "still open after 100 octets");
        var reply = await pending;
        Assert.StartsWith("421 4.4.2", reply);
        Assert.InRange(elapsed, TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(5) + TimeSpan.FromSeconds(30));
        Assert.True(await c.IsClosedAsync());
    }

    [Fact]
    public void A_negative_MinDataRate_is_refused_at_validation()
    {
        var config = new SmtpGateway.Configuration.GatewayConfig { Limits = new SmtpGateway.Configuration.LimitsConfig { MinDataRate = -1 } };
        Assert.Contains(SmtpGateway.Configuration.GatewayConfigValidator.Collect(config), e => e.StartsWith("Gateway:Limits:MinDataRate:", StringComparison.Ordinal));
        config.Limits.MinDataRate = 0;
        Assert.DoesNotContain(SmtpGateway.Configuration.GatewayConfigValidator.Collect(config), e => e.Contains("MinDataRate", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(28, true)]   // ENOSPC
    [InlineData(122, true)]  // EDQUOT
    [InlineData(5, false)]   // EIO: a generic 451, not "mail system full"
    public void A_full_file_system_is_told_apart_from_other_IO_errors_through_wrapping(int errno, bool full)
    {
        var wrapped = new SpoolWriteException("Could not spool message X.", new IOException("write failed", errno));
        Assert.Equal(full, StorageErrors.IsFull(wrapped));
        Assert.False(StorageErrors.IsFull(new IOException("No space left on device (test)")));
    }
}
