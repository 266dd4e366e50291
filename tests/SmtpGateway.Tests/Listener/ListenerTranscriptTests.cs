using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Listener;

/// <summary>
/// Transcript tests: a real listener on loopback, a raw client, exact reply codes (RFC 5321 + RFC 3463).
/// </summary>
public sealed partial class ListenerTranscriptTests
{
    static async Task<string?> SendMessageAsync(RawSmtpClient c, string body, string from = "alice@tenant-a.example", string to = "bob@example.net")
    {
        Assert.StartsWith("250 2.1.0", await c.CommandAsync($"MAIL FROM:<{from}>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync($"RCPT TO:<{to}>"));
        Assert.StartsWith("354 ", await c.CommandAsync("DATA"));

        // Tenant sessions must carry a From header of their own domain (sender binding); add one unless the test wrote its own.
        await c.SendRawAsync(body.StartsWith("From:", StringComparison.Ordinal) || body == ".\r\n" ? body : $"From: <{from}>\r\n{body}");
        return await c.ReadReplyAsync();
    }

    [Fact]
    public async Task Greeting_names_the_server_without_a_version()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        var banner = await c.ReadReplyAsync();
        Assert.Equal("220 mx.test.example ESMTP", banner);
        Assert.DoesNotMatch(@"\d+\.\d+", banner!);
    }

    [Fact]
    public async Task Ehlo_advertises_extensions_and_starttls_only_where_it_applies()
    {
        await using var gw = await TestGateway.StartAsync();
        await using (var c = await gw.ConnectAsync(gw.Submission))
        {
            var ehlo = await c.HelloAsync();
            foreach (var ext in new[] { "PIPELINING", "SIZE 26214400", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "STARTTLS" })
            {
                Assert.Contains($"250-{ext}", ehlo.Replace("250 ", "250-", StringComparison.Ordinal));
            }

            Assert.DoesNotContain("AUTH", ehlo); // never offered in clear text
            Assert.StartsWith("220 2.0.0", await c.CommandAsync("STARTTLS"));
            await c.StartTlsAsync();
            var secure = await c.CommandAsync("EHLO client.test.example");
            Assert.Contains("AUTH PLAIN LOGIN", secure);
            Assert.DoesNotContain("STARTTLS", secure);
        }

        await using (var r = await gw.ConnectAsync(gw.Relay))
        {
            var ehlo = await r.HelloAsync();
            Assert.DoesNotContain("STARTTLS", ehlo);
            Assert.DoesNotContain("AUTH", ehlo);
        }
    }

    [Fact]
    public async Task Accepted_message_is_spooled_byte_for_byte_behind_one_received_header()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        const string body = "From: alice@tenant-a.example\r\nTo: bob@example.net\r\nSubject: hi \u00e9\r\n\r\nline one\r\n..dot line\r\n\r\nlast\r\n";
        var reply = await SendMessageAsync(c, body + ".\r\n");
        var match = QueuedReply().Match(reply!);
        Assert.True(match.Success, reply);

        var (envelope, message) = Assert.Single(gw.Spool.Commits);
        Assert.Equal(match.Groups[1].Value, envelope.Id);
        Assert.Equal("alice@tenant-a.example", envelope.MailFrom);
        Assert.False(envelope.Inbound); // sent by the tenant (legacy network): DSNs go back to it
        Assert.Equal(["bob@example.net"], envelope.Recipients);
        var text = Encoding.UTF8.GetString(message);
        Assert.StartsWith("Received: from client.test.example ([127.0.0.1])\r\n\tby mx.test.example with ESMTP id " + envelope.Id + ";\r\n\t", text);
        var afterReceived = text[(text.IndexOf("\r\nFrom:", StringComparison.Ordinal) + 2)..];
        Assert.Equal(body.Replace("..dot", ".dot", StringComparison.Ordinal), afterReceived); // dot-stuffing removed (RFC 5321 4.5.2)
    }

    [Fact]
    public async Task Empty_body_is_accepted()
    {
        // Inbound (unauthenticated, to a tenant domain): no sender binding, so a body with no header at all is fine.
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Submission);
        await c.HelloAsync();
        Assert.StartsWith("250 2.0.0 Ok: queued as ", await SendMessageAsync(c, ".\r\n", from: "someone@elsewhere.example", to: "bob@tenant-a.example"));
        var inbound = Assert.Single(gw.Spool.Commits).Envelope;
        Assert.Equal("tenant-a", inbound.TenantId);
        Assert.True(inbound.Inbound);
        var (_, message) = Assert.Single(gw.Spool.Commits);
        Assert.StartsWith("Received: ", Encoding.UTF8.GetString(message));
        Assert.EndsWith("\r\n", Encoding.UTF8.GetString(message));
    }

    [Theory]
    [InlineData("Subject: x\r\n\r\nbare\nLF\r\n.\r\n")]
    [InlineData("Subject: x\r\n\r\nbare\rCR\r\n.\r\n")]
    [InlineData("Subject: x\n\nall bare\n.\n\r\n.\r\n")]
    public async Task Bare_cr_or_lf_in_data_is_refused_and_nothing_is_queued(string body)
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("550 5.6.0", await SendMessageAsync(c, body));
        Assert.Empty(gw.Spool.Commits);

        // The session stays usable and in sync.
        Assert.StartsWith("250 2.0.0 Ok: queued", await SendMessageAsync(c, "Subject: fine\r\n\r\nok\r\n.\r\n"));
        Assert.Single(gw.Spool.Commits);
    }

    [Theory]
    [InlineData("Subject: x\r\n\r\nnul \0 in the body\r\n.\r\n")]
    [InlineData("Subject: x\0y\r\n\r\nbody\r\n.\r\n")]
    [InlineData("Subject: x\r\n\r\n\0.\r\n.\r\n")]
    public async Task A_nul_in_data_is_refused_with_550_5_6_0_and_nothing_is_queued(string body)
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.Equal("550 5.6.0 Message contains a NUL character, which Internet mail may not carry", await SendMessageAsync(c, body));
        Assert.Empty(gw.Spool.Commits);

        // The session stays usable and in sync.
        Assert.StartsWith("250 2.0.0 Ok: queued", await SendMessageAsync(c, "Subject: fine\r\n\r\nok\r\n.\r\n"));
        Assert.Single(gw.Spool.Commits);
    }

    [Theory]
    [InlineData(50, "250 2.0.0")]
    [InlineData(51, "554 5.4.6")]
    public async Task More_than_50_received_fields_is_a_mail_loop_refused_with_554_5_4_6(int hops, string expected)
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        var received = string.Concat(Enumerable.Range(0, hops).Select(i => $"Received: from hop{i}.example.net by hop{i + 1}.example.net; Fri, 4 Dec 2026 12:00:00 +0000\r\n"));

        Assert.StartsWith(expected, await SendMessageAsync(c, $"From: <alice@tenant-a.example>\r\n{received}Subject: loop\r\n\r\nbody\r\n.\r\n"));
        Assert.Equal(hops <= 50 ? 1 : 0, gw.Spool.Commits.Count);
    }

    [Fact]
    public async Task Bare_lf_dot_smuggling_never_yields_a_second_message()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<bob@example.net>"));
        Assert.StartsWith("354", await c.CommandAsync("DATA"));
        await c.SendRawAsync("Subject: first\r\n\r\nhello\n.\nMAIL FROM:<evil@attacker.example>\nRCPT TO:<victim@example.net>\nDATA\nSubject: smuggled\n\nboo\r\n.\r\n");
        var reply = await c.ReadReplyAsync();
        Assert.StartsWith("550 5.6.0", reply);
        Assert.StartsWith("250 2.0.0", await c.CommandAsync("NOOP")); // no stray replies queued behind it
        Assert.Empty(gw.Spool.Commits);
    }

    [Theory]
    [InlineData("body\n.\r\n")]
    [InlineData("body\r\n.\n")]
    [InlineData("body\r.\r\n")]
    [InlineData("body\n.\n")]
    public async Task Lf_dot_crlf_variants_are_not_an_end_of_data(string smuggle)
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<a@tenant-a.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<b@example.net>"));
        Assert.StartsWith("354", await c.CommandAsync("DATA"));
        await c.SendRawAsync($"From: a@tenant-a.example\r\n\r\n{smuggle}MAIL FROM:<a@tenant-a.example>\r\nRCPT TO:<x@example.net>\r\nDATA\r\nFrom: a@tenant-a.example\r\n\r\nsmuggled\r\n.\r\n");
        Assert.StartsWith("550 5.6.0", await c.ReadReplyAsync());
        Assert.StartsWith("250 2.0.0 Ok\n", (await c.CommandAsync("NOOP")) + "\n"); // nothing else was executed
        Assert.Empty(gw.Spool.Commits);
    }

    [Fact]
    public async Task Crlf_dot_crlf_alone_ends_data_and_pipelined_commands_after_it_run()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        await c.SendRawAsync("MAIL FROM:<a@tenant-a.example>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
        Assert.StartsWith("250 2.1.0", await c.ReadReplyAsync());
        Assert.StartsWith("250 2.1.5", await c.ReadReplyAsync());
        Assert.StartsWith("354", await c.ReadReplyAsync());
        await c.SendRawAsync("From: a@tenant-a.example\r\nSubject: a\r\n\r\nx\r\n.\r\nMAIL FROM:<c@tenant-a.example>\r\nRCPT TO:<d@example.net>\r\nDATA\r\n");
        Assert.StartsWith("250 2.0.0", await c.ReadReplyAsync());
        Assert.StartsWith("250 2.1.0", await c.ReadReplyAsync());
        Assert.StartsWith("250 2.1.5", await c.ReadReplyAsync());
        Assert.StartsWith("354", await c.ReadReplyAsync());
        await c.SendRawAsync("From: c@tenant-a.example\r\n\r\n.\r\n");
        Assert.StartsWith("250 2.0.0", await c.ReadReplyAsync());
        Assert.Equal(2, gw.Spool.Commits.Count);
    }

    [Fact]
    public async Task Command_line_over_512_octets_gets_500_and_the_session_survives()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("NOOP " + new string('x', 505))); // 5 + 505 + 2 = 512
        Assert.StartsWith("500 5.5.2", await c.CommandAsync("NOOP " + new string('x', 506)));
        Assert.StartsWith("500 5.5.2", await c.CommandAsync("NOOP " + new string('x', 100_000)));
        Assert.StartsWith("250 2.0.0", await c.CommandAsync("NOOP"));
    }

    [Fact]
    public async Task Command_with_bare_lf_is_refused()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        await c.SendRawAsync("NOOP\n");
        Assert.StartsWith("500 5.5.2", await c.ReadReplyAsync());
    }

    [Fact]
    public async Task Text_line_over_1000_octets_is_refused()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250 2.0.0", await SendMessageAsync(c, $"Subject: ok\r\n\r\n{new string('a', 998)}\r\n.\r\n"));
        Assert.StartsWith("550 5.6.0", await SendMessageAsync(c, $"Subject: long\r\n\r\n{new string('a', 999)}\r\n.\r\n"));
        Assert.StartsWith("550 5.6.0", await SendMessageAsync(c, $"Subject: huge\r\n\r\n{new string('a', 300_000)}\r\n.\r\n"));
        Assert.Single(gw.Spool.Commits);
    }

    [Fact]
    public async Task Oversized_message_gets_552_and_declared_size_is_checked_at_mail()
    {
        await using var gw = await TestGateway.StartAsync(l => l.MaxMessageSize = 65536);
        await using var c = await gw.ConnectAsync(gw.Relay);
        var ehlo = await c.HelloAsync();
        Assert.Contains("SIZE 65536", ehlo);
        Assert.StartsWith("552 5.3.4", await c.CommandAsync("MAIL FROM:<a@tenant-a.example> SIZE=65537"));
        var big = string.Concat(Enumerable.Repeat(new string('z', 78) + "\r\n", 1000));
        Assert.StartsWith("552 5.3.4", await SendMessageAsync(c, $"Subject: big\r\n\r\n{big}.\r\n"));
        Assert.Empty(gw.Spool.Commits);
        Assert.StartsWith("250 2.0.0", await SendMessageAsync(c, "Subject: small\r\n\r\nok\r\n.\r\n"));
    }

    [Fact]
    public async Task Recipient_101_gets_452_4_5_3()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<a@tenant-a.example>"));
        for (var i = 0; i < 100; i++)
        {
            Assert.StartsWith("250 2.1.5", await c.CommandAsync($"RCPT TO:<r{i}@example.net>"));
        }

        Assert.StartsWith("452 4.5.3", await c.CommandAsync("RCPT TO:<r100@example.net>"));
        Assert.StartsWith("354", await c.CommandAsync("DATA"));
        await c.SendRawAsync("From: a@tenant-a.example\r\nSubject: many\r\n\r\n.\r\n");
        Assert.StartsWith("250 2.0.0", await c.ReadReplyAsync());
        Assert.Equal(100, Assert.Single(gw.Spool.Commits).Envelope.Recipients.Count);
    }

    [Fact]
    public async Task Client_outside_relay_networks_gets_554_5_7_1()
    {
        await using var gw = await TestGateway.StartAsync(tenantANetworks: ["10.0.0.0/16"]);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<a@tenant-a.example>"));
        Assert.StartsWith("554 5.7.1", await c.CommandAsync("RCPT TO:<b@example.net>"));
        Assert.StartsWith("554 5.5.1", await c.CommandAsync("DATA"));
        Assert.Empty(gw.Spool.Commits);
    }

    [Theory]
    [InlineData("RCPT TO:<@relay.example:bob@example.net>", "501 5.1.3")]
    [InlineData("RCPT TO:<bob@example.net.>", "501 5.1.3")]
    [InlineData("RCPT TO:<bob@example..net>", "501 5.1.3")]
    [InlineData("RCPT TO:bob@example.net", "501 5.1.3")]
    [InlineData("RCPT TO:<bob@example.net> NOTIFY=NEVER", "555 5.5.4")]
    [InlineData("RCPT TO:<b\u00f6b@example.net>", "553 5.6.7")]
    [InlineData("RCPT TO:<>", "501 5.1.3")]
    public async Task Malformed_recipients_get_exact_replies(string command, string expected)
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<a@tenant-a.example>"));
        Assert.StartsWith(expected, await c.CommandAsync(command));
    }

    [Fact]
    public async Task Smtputf8_addresses_are_accepted_with_the_parameter()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<j\u00f6rg@tenant-a.example> SMTPUTF8 BODY=8BITMIME"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<\u7528\u6237@\u4f8b\u5b50.example>"));
        Assert.StartsWith("354", await c.CommandAsync("DATA"));
        await c.SendRawAsync("From: j\u00f6rg@tenant-a.example\r\nSubject: \u00fcber\r\n\r\nk\u00e4se\r\n.\r\n");
        Assert.StartsWith("250 2.0.0", await c.ReadReplyAsync());
        var (envelope, _) = Assert.Single(gw.Spool.Commits);
        Assert.True(envelope.SmtpUtf8);
        Assert.Equal("\u7528\u6237@\u4f8b\u5b50.example", envelope.Recipients[0]);
    }

    [Theory]
    [InlineData("FOO bar", "500 5.5.2")]
    [InlineData("EXPN staff", "502 5.5.1")]
    [InlineData("VRFY bob", "252 2.5.0")]
    [InlineData("MAIL FROM:<a@tenant-a.example> FOO=1", "555 5.5.4")]
    [InlineData("MAIL FROM:<a@tenant-a.example> SIZE=abc", "501 5.5.4")]
    [InlineData("MAIL FROM:<a b@tenant-a.example>", "501 5.1.7")]
    [InlineData("RCPT TO:<b@example.net>", "503 5.5.1")]
    [InlineData("DATA", "503 5.5.1")]
    [InlineData("STARTTLS", "502 5.5.1")]
    [InlineData("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "502 5.5.1")]
    public async Task Relay_listener_command_replies(string command, string expected)
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith(expected, await c.CommandAsync(command));
        Assert.StartsWith("250 2.0.0", await c.CommandAsync("NOOP"));
    }

    [Fact]
    public async Task Commands_before_ehlo_get_503()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.ReadReplyAsync();
        Assert.StartsWith("503 5.5.1", await c.CommandAsync("MAIL FROM:<a@tenant-a.example>"));
        Assert.StartsWith("501 5.5.4", await c.CommandAsync("EHLO"));
        Assert.StartsWith("501 5.5.4", await c.CommandAsync("EHLO bad_name!"));
        Assert.StartsWith("250 mx.test.example", await c.CommandAsync("HELO [127.0.0.1]"));
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<a@tenant-a.example>"));
        Assert.StartsWith("503 5.5.1", await c.CommandAsync("MAIL FROM:<a@tenant-a.example>"));
        Assert.StartsWith("250 2.0.0", await c.CommandAsync("RSET"));
        Assert.StartsWith("221 2.0.0", await c.CommandAsync("QUIT"));
        Assert.True(await c.IsClosedAsync());
    }

    [Fact]
    public async Task Http_request_gets_5xx_and_is_disconnected()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.ReadReplyAsync();
        await c.SendRawAsync("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        Assert.StartsWith("554 5.5.2", await c.ReadReplyAsync());
        Assert.True(await c.IsClosedAsync());
    }

    [Fact]
    public async Task Auth_needs_tls_and_malformed_base64_gets_501_while_the_session_survives()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Submission);
        await c.HelloAsync();
        Assert.StartsWith("538 5.7.11", await c.CommandAsync("AUTH PLAIN AGFsaWNlAHNlY3JldA=="));
        await c.CommandAsync("STARTTLS");
        await c.StartTlsAsync();
        Assert.StartsWith("250", await c.CommandAsync("EHLO client.test.example"));

        Assert.StartsWith("501 5.5.2", await c.CommandAsync("AUTH PLAIN !!!not-base64!!!"));
        Assert.StartsWith("334 ", await c.CommandAsync("AUTH PLAIN"));
        Assert.StartsWith("501 5.5.2", await c.CommandAsync("%%%"));
        Assert.StartsWith("334 VXNlcm5hbWU6", await c.CommandAsync("AUTH LOGIN"));
        Assert.StartsWith("334 UGFzc3dvcmQ6", await c.CommandAsync(Convert.ToBase64String("alice"u8)));
        Assert.StartsWith("501 5.5.2", await c.CommandAsync("not base64 at all"));
        Assert.StartsWith("334 ", await c.CommandAsync("AUTH LOGIN"));
        Assert.StartsWith("501 5.0.0", await c.CommandAsync("*"));
        Assert.StartsWith("504 5.5.4", await c.CommandAsync("AUTH CRAM-MD5"));
        Assert.StartsWith("501 5.5.2", await c.CommandAsync("AUTH PLAIN " + Convert.ToBase64String("no-separators"u8)));

        // Well-formed credentials reach the authenticator; the trunk's rejects all with one uniform reply.
        Assert.StartsWith("535 5.7.8", await c.CommandAsync("AUTH PLAIN " + Convert.ToBase64String("\0tenant-a\0secret"u8)));
        Assert.StartsWith("250 2.0.0", await c.CommandAsync("NOOP"));
    }

    [Fact]
    public async Task Starttls_discards_pipelined_plaintext_commands()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Submission);
        await c.HelloAsync();
        await c.SendRawAsync("STARTTLS\r\nMAIL FROM:<injected@attacker.example>\r\n");
        Assert.StartsWith("220 2.0.0", await c.ReadReplyAsync());
        await c.StartTlsAsync();
        Assert.Contains(c.TlsProtocol, new[] { "Tls12", "Tls13" });
        // The injected MAIL must not have run: after EHLO a fresh MAIL is accepted, not "nested".
        Assert.StartsWith("503 5.5.1", await c.CommandAsync("MAIL FROM:<a@tenant-a.example>")); // must EHLO again (RFC 3207 4.2)
        Assert.StartsWith("250", await c.CommandAsync("EHLO client.test.example"));
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<a@tenant-a.example>"));
    }

    [Fact]
    public async Task Implicit_tls_listener_greets_after_handshake_and_accepts_mail()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.ImplicitTls, implicitTls: true);
        var ehlo = await c.HelloAsync();
        Assert.Contains("AUTH PLAIN LOGIN", ehlo);
        Assert.DoesNotContain("STARTTLS", ehlo);
        var token = gw.Tokens.Mint("tenant-a", null, [], null).Token;
        Assert.StartsWith("235 2.7.0", await c.CommandAsync("AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0tenant-a\0{token}"))));
        Assert.StartsWith("250 2.0.0 Ok: queued", await SendMessageAsync(c, "Subject: tls\r\n\r\nx\r\n.\r\n"));
        Assert.Contains("with ESMTPSA", Encoding.UTF8.GetString(Assert.Single(gw.Spool.Commits).Message));
    }

    [Fact]
    public async Task Tls_below_1_2_is_refused()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Submission);
        await c.HelloAsync();
        await c.CommandAsync("STARTTLS");
#pragma warning disable SYSLIB0039 // deliberately offering an obsolete protocol
        await Assert.ThrowsAnyAsync<Exception>(() => c.StartTlsAsync(System.Security.Authentication.SslProtocols.Tls11));
#pragma warning restore SYSLIB0039
    }

    [Fact]
    public async Task Spool_failure_answers_451_never_250_or_554()
    {
        await using var gw = await TestGateway.StartAsync();
        gw.Spool.Fail = true;
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("451 4.3.0", await SendMessageAsync(c, "Subject: x\r\n\r\ny\r\n.\r\n"));
        gw.Spool.Fail = false;
        Assert.StartsWith("250 2.0.0", await SendMessageAsync(c, "Subject: x\r\n\r\ny\r\n.\r\n"));
    }

    [Fact]
    public async Task Connections_over_the_per_ip_cap_get_421_at_the_banner()
    {
        await using var gw = await TestGateway.StartAsync(l => l.MaxConnectionsPerIp = 2);
        await using var a = await gw.ConnectAsync(gw.Relay);
        await using var b = await gw.ConnectAsync(gw.Relay);
        Assert.StartsWith("220", await a.ReadReplyAsync());
        Assert.StartsWith("220", await b.ReadReplyAsync());
        await using var third = await gw.ConnectAsync(gw.Relay);
        Assert.StartsWith("421 4.7.0", await third.ReadReplyAsync());
        Assert.True(await third.IsClosedAsync());

        await a.CommandAsync("QUIT");
        Assert.True(await a.IsClosedAsync());
        // The slot is free once the session has finished (its clean-up follows the close the client saw).
        await Poll.UntilAsync(() => gw.Service.ActiveSessions < 2);
        await using var fourth = await gw.ConnectAsync(gw.Relay);
        Assert.StartsWith("220", await fourth.ReadReplyAsync());
    }

    [Fact]
    public async Task Connections_over_the_global_cap_get_421_at_the_banner()
    {
        await using var gw = await TestGateway.StartAsync(l => l.MaxConnections = 1);
        await using var a = await gw.ConnectAsync(gw.Relay);
        Assert.StartsWith("220", await a.ReadReplyAsync());
        await using var b = await gw.ConnectAsync(gw.Submission);
        Assert.StartsWith("421 4.7.0", await b.ReadReplyAsync());
    }

    [Fact]
    public async Task Idle_client_gets_421_4_4_2_after_the_command_timeout()
    {
        // RFC 5321 section 4.5.3.2.7: 5 minutes, on the injected clock: the test moves time instead of waiting.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await TestGateway.StartAsync(time: clock);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();

        clock.Advance(TimeSpan.FromMinutes(5) - TimeSpan.FromSeconds(1));
        Assert.StartsWith("250", await c.CommandAsync("NOOP")); // not yet, and a command starts the wait again

        clock.Advance(TimeSpan.FromMinutes(5));
        Assert.StartsWith("421 4.4.2", await c.ReadReplyAsync(TimeSpan.FromSeconds(5)));
        Assert.True(await c.IsClosedAsync());
    }

    [Fact]
    public async Task A_client_that_stalls_inside_DATA_gets_421_4_4_2_after_the_data_block_timeout()
    {
        // RFC 5321 section 4.5.3.2.5/6: the limit is per block of data, restarted by every block that arrives.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await TestGateway.StartAsync(time: clock);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<alice@tenant-a.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<bob@example.net>"));
        Assert.StartsWith("354", await c.CommandAsync("DATA"));

        // The session restarts the block timer when it has read the line: once it waits for more, one block timeout later
        // (on the fake clock) it gives up.
        var reply = c.ReadReplyAsync(TimeSpan.FromSeconds(10));
        await c.SendAndSettleAsync("From: <alice@tenant-a.example>\r\n", reply);
        Assert.False(reply.IsCompleted, "a reply before the block timeout");
        clock.Advance(TimeSpan.FromMinutes(3) - TimeSpan.FromSeconds(1));
        Assert.False(reply.IsCompleted, "closed before the block timeout");
        clock.Advance(TimeSpan.FromSeconds(2));

        Assert.StartsWith("421 4.4.2", await reply);
        Assert.True(await c.IsClosedAsync());
        Assert.Empty(gw.Spool.Commits);
    }

    [Fact]
    public async Task Too_many_errors_end_the_session_with_421()
    {
        await using var gw = await TestGateway.StartAsync(l => l.MaxErrors = 3);
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("500", await c.CommandAsync("BOGUS"));
        Assert.StartsWith("500", await c.CommandAsync("BOGUS"));
        Assert.StartsWith("500", await c.CommandAsync("BOGUS"));
        Assert.StartsWith("421 4.7.0", await c.ReadReplyAsync());
        Assert.True(await c.IsClosedAsync());
    }

    [Fact]
    public async Task Shutdown_answers_421_to_idle_sessions_and_lets_a_transaction_finish()
    {
        var gw = await TestGateway.StartAsync(shutdownTimeout: TimeSpan.FromSeconds(10));
        await using var idle = await gw.ConnectAsync(gw.Relay);
        await idle.HelloAsync();
        await using var busy = await gw.ConnectAsync(gw.Relay);
        await busy.HelloAsync();
        Assert.StartsWith("250", await busy.CommandAsync("MAIL FROM:<a@tenant-a.example>"));
        Assert.StartsWith("250", await busy.CommandAsync("RCPT TO:<b@example.net>"));

        var stop = gw.Service.StopAsync(CancellationToken.None);
        Assert.StartsWith("421 4.3.2", await idle.ReadReplyAsync());
        Assert.StartsWith("354", await busy.CommandAsync("DATA"));
        await busy.SendRawAsync("From: a@tenant-a.example\r\nSubject: in flight\r\n\r\nx\r\n.\r\n");
        Assert.StartsWith("250 2.0.0", await busy.ReadReplyAsync());
        Assert.StartsWith("421 4.3.2", await busy.ReadReplyAsync());
        await stop;
        Assert.Single(gw.Spool.Commits);
        await gw.Service.DisposeAsync();
    }

    [Fact]
    public async Task Pipelined_transaction_gets_replies_in_order()
    {
        await using var gw = await TestGateway.StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.ReadReplyAsync();
        await c.SendRawAsync("EHLO c.example\r\nMAIL FROM:<a@tenant-a.example>\r\nRCPT TO:<x@example.net>\r\nRCPT TO:<bad>\r\nRCPT TO:<y@example.net>\r\nDATA\r\n");
        Assert.StartsWith("250", await c.ReadReplyAsync());
        Assert.StartsWith("250 2.1.0", await c.ReadReplyAsync());
        Assert.StartsWith("250 2.1.5", await c.ReadReplyAsync());
        Assert.StartsWith("501 5.1.3", await c.ReadReplyAsync());
        Assert.StartsWith("250 2.1.5", await c.ReadReplyAsync());
        Assert.StartsWith("354", await c.ReadReplyAsync());
        await c.SendRawAsync("From: a@tenant-a.example\r\n\r\n.\r\n");
        Assert.StartsWith("250 2.0.0", await c.ReadReplyAsync());
        Assert.Equal(["x@example.net", "y@example.net"], Assert.Single(gw.Spool.Commits).Envelope.Recipients);
    }

    [GeneratedRegex(@"^250 2\.0\.0 Ok: queued as (\S+)$")]
    private static partial Regex QueuedReply();
}
