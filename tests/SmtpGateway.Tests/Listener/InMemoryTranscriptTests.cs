using System.Text;
using SmtpGateway.Submission;

namespace SmtpGateway.Tests.Listener;

/// <summary>
/// Byte-exact transcripts over the in-memory transport (no sockets): what the session writes is compared octet for octet,
/// as Kestrel's in-memory transport tests do. Also the streaming DATA path and the memory budget, seen from the wire.
/// </summary>
public sealed class InMemoryTranscriptTests
{
    [Fact]
    public async Task A_pipelined_session_gets_exactly_these_octets()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);

        // RFC 2920: the whole transaction in one write; replies come back in order, batched.
        await c.SendRawAsync(
            "EHLO client.test.example\r\n" +
            "MAIL FROM:<alice@tenant-a.example>\r\n" +
            "RCPT TO:<bob@example.net>\r\n" +
            "RCPT TO:<carol@example.net>\r\n" +
            "DATA\r\n");
        await c.ReadReplyAsync();
        await c.ReadReplyAsync();
        await c.ReadReplyAsync();
        await c.ReadReplyAsync();
        await c.ReadReplyAsync();
        await c.ReadReplyAsync();
        await c.SendRawAsync("From: <alice@tenant-a.example>\r\nSubject: exact\r\n\r\n..dot\r\n.\r\nNOOP\r\nVRFY bob\r\nQUIT\r\n");

        var rest = await c.ReadToEndAsync();
        Assert.Equal(
            "250 2.0.0 Ok: queued as T000001\r\n" +
            "250 2.0.0 Ok\r\n" +
            "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n" +
            "221 2.0.0 mx.test.example closing connection\r\n",
            rest);

        var (envelope, message) = Assert.Single(gw.Spool.Commits);
        Assert.Equal(["bob@example.net", "carol@example.net"], envelope.Recipients);
        var text = Encoding.UTF8.GetString(message);
        Assert.StartsWith("Received: from client.test.example ([127.0.0.1])\r\n\tby mx.test.example with ESMTP id T000001;\r\n\t", text, StringComparison.Ordinal);
        Assert.EndsWith("\r\nFrom: <alice@tenant-a.example>\r\nSubject: exact\r\n\r\n.dot\r\n", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_greeting_and_ehlo_are_exactly_these_octets()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.SendRawAsync("EHLO client.test.example\r\nQUIT\r\n");

        Assert.Equal(
            "220 mx.test.example ESMTP\r\n" +
            "250-mx.test.example\r\n" +
            "250-PIPELINING\r\n" +
            "250-SIZE 26214400\r\n" +
            "250-8BITMIME\r\n" +
            "250-SMTPUTF8\r\n" +
            "250 ENHANCEDSTATUSCODES\r\n" +
            "221 2.0.0 mx.test.example closing connection\r\n",
            await c.ReadToEndAsync());
    }

    [Fact]
    public async Task A_message_over_the_memory_threshold_streams_to_disk_and_is_spooled_byte_exact()
    {
        await using var gw = await TestGateway.StartAsync(limits: l => l.MessageMemoryThreshold = 16 * 1024);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        var body = new StringBuilder();
        for (var i = 0; i < 20_000; i++)
        {
            body.Append(i % 97 == 0 ? ".leading dot " : "line ").Append(i).Append(' ').Append('x', 60).Append("\r\n");
        }

        var content = $"From: <alice@tenant-a.example>\r\nSubject: large\r\n\r\n{body}";
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<bob@example.net>"));
        Assert.StartsWith("354 ", await c.CommandAsync("DATA"));
        await c.SendRawAsync(content.Replace("\r\n.", "\r\n..", StringComparison.Ordinal) + ".\r\n");
        Assert.StartsWith("250 2.0.0 Ok: queued as ", await c.ReadReplyAsync());

        var (envelope, message) = Assert.Single(gw.Spool.Commits);
        Assert.True(gw.Spool.Spilled[envelope.Id], "a 1.5 MB body stayed in memory");
        Assert.EndsWith(content, Encoding.UTF8.GetString(message), StringComparison.Ordinal);
    }

    [Fact]
    public async Task With_the_memory_budget_spent_DATA_gets_452_4_3_1_and_a_new_connection_421()
    {
        var budget = new MessageMemoryBudget(2 * 1024 * 1024);
        await using var gw = await TestGateway.StartAsync(limits: l => { l.MaxHeaderSectionSize = 1024 * 1024; l.MaxInFlightMemory = 2 * 1024 * 1024; }, budget: budget);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<bob@example.net>"));

        Assert.True(budget.TryTake(1536 * 1024)); // other sessions' messages hold most of it
        Assert.Equal("452 4.3.1 Insufficient system storage, try again later", await c.CommandAsync("DATA"));
        await using (var late = await gw.ConnectAsync(gw.Relay))
        {
            Assert.Equal("421 4.3.2 Too busy: insufficient system storage, try again later\r\n", await late.ReadToEndAsync());
        }

        budget.Return(1536 * 1024); // they finished: the same transaction goes through
        Assert.StartsWith("354 ", await c.CommandAsync("DATA"));
        Assert.StartsWith("250 2.0.0", await c.CommandAsync("From: <alice@tenant-a.example>\r\n\r\nhi\r\n."));
        Assert.Equal(0, budget.Used);
    }

    [Fact]
    public async Task A_scratch_file_that_cannot_be_written_is_451_and_the_session_goes_on()
    {
        await using var gw = await TestGateway.StartAsync(limits: l => l.MessageMemoryThreshold = 8 * 1024);
        gw.Spool.FailScratch = true;
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<bob@example.net>"));
        Assert.StartsWith("354 ", await c.CommandAsync("DATA"));
        await c.SendRawAsync("From: <alice@tenant-a.example>\r\n\r\n" + string.Concat(Enumerable.Repeat(new string('b', 98) + "\r\n", 200)) + ".\r\n");

        Assert.Equal("451 4.3.0 Temporary failure storing the message, try again later", await c.ReadReplyAsync());
        Assert.Empty(gw.Spool.Commits);

        // Small messages never need the scratch file: the next one goes through on the same connection, disk still broken.
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<bob@example.net>"));
        Assert.StartsWith("354 ", await c.CommandAsync("DATA"));
        Assert.StartsWith("250 2.0.0", await c.CommandAsync("From: <alice@tenant-a.example>\r\n\r\nsmall\r\n."));
    }

    [Fact]
    public async Task A_message_that_begins_with_a_continuation_line_gets_550_5_6_0_and_nothing_is_queued()
    {
        // Under our Received field " x" would continue it, and the fields after it would slip past hygiene (inbound, no AUTH).
        await using var gw = await TestGateway.StartAsync(tenantANetworks: ["10.99.0.0/16"]);
        await using var c = await InboundDataAsync(gw);
        await c.SendRawAsync(" x\r\nX-Tenant-Id: tenant-b\r\nReturn-Path: <forged@example.net>\r\n\r\nbody\r\n.\r\n");

        Assert.Equal("550 5.6.0 Message must begin with a header field or an empty line, not a continuation line", await c.ReadReplyAsync());
        Assert.Empty(gw.Spool.Commits);
        Assert.StartsWith("250 ", await c.CommandAsync("NOOP")); // the session goes on
    }

    [Fact]
    public async Task A_header_section_ended_by_a_line_that_is_no_field_gets_its_empty_line_so_later_fields_are_body()
    {
        await using var gw = await TestGateway.StartAsync(tenantANetworks: ["10.99.0.0/16"]);
        await using var c = await InboundDataAsync(gw);
        Assert.StartsWith("250 2.0.0", await c.CommandAsync("Subject: hi\r\nnot a field\r\nX-Tenant: tenant-b\r\n."));

        var (_, message) = Assert.Single(gw.Spool.Commits);
        var text = Encoding.UTF8.GetString(message);
        // Every parser now ends the header section where hygiene and sender binding did: X-Tenant is body text.
        Assert.EndsWith("\r\nSubject: hi\r\n\r\nnot a field\r\nX-Tenant: tenant-b\r\n", text, StringComparison.Ordinal);
    }

    /// <summary>An unauthenticated (inbound) client at the start of DATA for a tenant's domain: hygiene applies, no From binding.</summary>
    static async Task<RawSmtpClient> InboundDataAsync(TestGateway gw)
    {
        var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<someone@example.net>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<info@tenant-a.example>"));
        Assert.StartsWith("354 ", await c.CommandAsync("DATA"));
        return c;
    }
}
