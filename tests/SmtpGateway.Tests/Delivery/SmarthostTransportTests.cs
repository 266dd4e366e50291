using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Spool;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Delivery;

public sealed class SmarthostTransportTests : IAsyncLifetime
{
    readonly TempDirectory _dir = new();
    readonly TestSmtpServer _server = new();
    FileSpool _spool = null!;

    public Task InitializeAsync()
    {
        _spool = NewSpool(_dir.Combine("spool"), TimeProvider.System, fsync: false);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        _spool.Dispose();
        await _server.DisposeAsync();
        _dir.Dispose();
    }

    SmarthostTransport NewTransport(int maxConnections = 4, int maxMessagesPerConnection = 100, TimeProvider? time = null, TimeSpan? idleTimeout = null,
        StartTlsMode startTls = StartTlsMode.WhenAvailable, ILogger? logger = null) =>
        new(new SmarthostConfig
        {
            Host = "127.0.0.1",
            Port = _server.Port,
            StartTls = startTls,
            MaxConnections = maxConnections,
            MaxMessagesPerConnection = maxMessagesPerConnection,
            IdleTimeout = idleTimeout ?? TimeSpan.FromSeconds(30),
            ConnectTimeout = TimeSpan.FromSeconds(10),
            HeloName = "gw.test",
            AllowPrivateDestinations = true,
        }, "smtpgw.localhost", time ?? TimeProvider.System, logger ?? NullLogger.Instance);

    async Task<SpooledMessage> SpoolAsync(byte[] bytes, string[]? recipients = null, string mailFrom = "sender@tenant-a.example",
        string? tenant = null, bool eightBitMime = false, bool smtpUtf8 = false)
    {
        var envelope = NewEnvelope(_spool, TimeProvider.System, recipients, mailFrom, tenant, eightBitMime, smtpUtf8);
        await _spool.CommitAsync(envelope, Segmented(bytes, 1000), CancellationToken.None);
        return (await _spool.LoadAsync(envelope.Id, CancellationToken.None))!;
    }

    /// <summary>Everything MimeKit might be tempted to "fix": 8-bit UTF-8, a 900-octet header line, folded headers with odd
    /// spacing, lines starting with dots (including a lone dot), a multipart with transport padding after the boundary,
    /// trailing white space, a header with a space before the colon.</summary>
    static byte[] TrickyMessage()
    {
        var longValue = string.Concat(Enumerable.Repeat("x", 900));
        var text =
            "Received: from client.example ([127.0.0.1])\r\n" +
            "\tby gw.test with ESMTP id 1;  Tue, 1 Jan 2030 12:00:00 +0000\r\n" +
            "From: =?utf-8?q?J=C3=B6rg?= <sender@tenant-a.example>\r\n" +
            "To: header-only@example.org\r\n" +
            "Subject : Gr\u00fc\u00dfe aus K\u00f6ln   \r\n" +
            $"X-Long: {longValue}\r\n" +
            "X-Folded: first\r\n   second\r\n\tthird\r\n" +
            "DKIM-Signature: v=1; a=rsa-sha256; c=simple/simple; d=tenant-a.example; s=s1;\r\n" +
            "\th=from:to:subject; bh=abc=; b=def=\r\n" +
            "MIME-Version: 1.0\r\n" +
            "Content-Type: multipart/mixed; boundary=\"b1\"\r\n" +
            "\r\n" +
            "preamble\r\n" +
            "--b1   \r\n" +
            "Content-Type: text/plain; charset=utf-8\r\n" +
            "Content-Transfer-Encoding: 8bit\r\n" +
            "\r\n" +
            "\u00dcber den Wolken \u2013 \u65e5\u672c\u8a9e\r\n" +
            ".leading dot\r\n" +
            "..two dots\r\n" +
            ".\r\n" +
            "trailing spaces   \r\n" +
            "--b1--\r\n" +
            "epilogue\r\n";
        return Encoding.UTF8.GetBytes(text);
    }

    [Fact]
    public async Task Message_arrives_byte_for_byte_with_envelope_from_the_spool()
    {
        await using var transport = NewTransport();
        var bytes = TrickyMessage();
        var message = await SpoolAsync(bytes, ["env-rcpt@example.net"], eightBitMime: true);

        var results = await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        var result = Assert.Single(results);
        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        Assert.StartsWith("250", result.Reply);
        var received = Assert.Single(_server.Messages);
        Assert.Equal(Encoding.UTF8.GetString(bytes), Encoding.UTF8.GetString(received.Data));
        Assert.Equal(bytes, received.Data);
        Assert.Equal("sender@tenant-a.example", received.MailFrom);
        Assert.Equal(["env-rcpt@example.net"], received.Recipients);
        Assert.Contains("BODY=8BITMIME", received.MailParameters);
        Assert.Contains($"SIZE={bytes.Length}", received.MailParameters);
        Assert.Contains(_server.Commands, c => c == "EHLO gw.test");
    }

    [Theory]
    [InlineData("Subject: no body\r\n")]
    [InlineData("\r\nbody without headers\r\n")]
    [InlineData("Subject: no final newline\r\n\r\nlast line")]
    [InlineData("Subject: x\r\n\r\n")]
    [InlineData("Subject: x\r\nBroken header line without colon\r\n\r\nbody\r\n")]
    public async Task Odd_messages_are_delivered(string text)
    {
        await using var transport = NewTransport();
        var bytes = Encoding.ASCII.GetBytes(text);
        var message = await SpoolAsync(bytes);

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        var received = Assert.Single(_server.Messages).Data;

        // MimeKit always writes an empty line after the headers and SMTP needs a final CRLF (RFC 5321 section 4.1.1.4):
        // those are the only bytes that may be added.
        var expected = text.Contains("\r\n\r\n", StringComparison.Ordinal) || text.StartsWith("\r\n", StringComparison.Ordinal) ? text : text + "\r\n";
        if (!expected.EndsWith("\r\n", StringComparison.Ordinal))
        {
            expected += "\r\n";
        }

        Assert.Equal(expected, Encoding.ASCII.GetString(received));
    }

    [Fact]
    public async Task Message_whose_first_line_is_not_a_header_bounces()
    {
        await using var transport = NewTransport();
        var message = await SpoolAsync(Encoding.ASCII.GetBytes("Broken header line without colon\r\nSubject: x\r\n\r\nbody\r\n"));

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Bounced, result.Outcome);
        Assert.StartsWith("554 5.6.0", result.Reply);
        Assert.Empty(_server.Messages);
    }

    [Fact]
    public async Task Seven_bit_message_is_sent_without_BODY_parameter()
    {
        await using var transport = NewTransport();
        var message = await SpoolAsync(SampleMessage());
        await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);
        var received = Assert.Single(_server.Messages);
        Assert.DoesNotContain("BODY=", received.MailParameters);
        Assert.Equal(SampleMessage(), received.Data);
    }

    [Fact]
    public async Task Null_sender_is_sent_as_empty_reverse_path()
    {
        await using var transport = NewTransport();
        var message = await SpoolAsync(SampleMessage(), mailFrom: "");

        await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.Contains(_server.Commands, c => c.StartsWith("MAIL FROM:<> ", StringComparison.Ordinal));
        Assert.Equal("", Assert.Single(_server.Messages).MailFrom);
    }

    [Fact]
    public async Task SmtpUtf8_is_passed_through_when_the_server_offers_it()
    {
        _server.AdvertiseSmtpUtf8 = true;
        await using var transport = NewTransport();
        var bytes = Encoding.UTF8.GetBytes("From: J\u00f6rg <sender@tenant-a.example>\r\nTo: \u00e9l\u00e8ve@example.net\r\n\r\nHi\r\n");
        var message = await SpoolAsync(bytes, ["\u00e9l\u00e8ve@example.net"], smtpUtf8: true, eightBitMime: true);

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        var received = Assert.Single(_server.Messages);
        Assert.Contains("SMTPUTF8", received.MailParameters);
        Assert.Equal(["\u00e9l\u00e8ve@example.net"], received.Recipients);
        Assert.Equal(bytes, received.Data);
    }

    static X509Certificate2 SelfSignedCertificate()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=untrusted.test", key, HashAlgorithmName.SHA256);
        using var ephemeral = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(1));
        return X509CertificateLoader.LoadPkcs12(ephemeral.Export(X509ContentType.Pfx), null);
    }

    [Fact]
    public async Task Opportunistic_StartTls_accepts_an_unverifiable_certificate_and_stays_byte_exact()
    {
        using var certificate = SelfSignedCertificate();
        _server.StartTlsCertificate = certificate;
        await using var transport = NewTransport(startTls: StartTlsMode.WhenAvailable);
        var bytes = TrickyMessage();
        var message = await SpoolAsync(bytes, eightBitMime: true);

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        Assert.Equal(1, _server.TlsSessions);
        Assert.Equal(bytes, Assert.Single(_server.Messages).Data);
    }

    [Fact]
    public async Task Required_StartTls_validates_the_certificate_and_defers_when_it_fails()
    {
        using var certificate = SelfSignedCertificate();
        _server.StartTlsCertificate = certificate;
        await using var transport = NewTransport(startTls: StartTlsMode.Required);
        var message = await SpoolAsync(SampleMessage());

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        Assert.Empty(_server.Messages);
    }

    [Fact]
    public async Task Required_StartTls_defers_when_the_server_does_not_offer_it()
    {
        await using var transport = NewTransport(startTls: StartTlsMode.Required);
        var message = await SpoolAsync(SampleMessage());

        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        Assert.Empty(_server.Messages);
    }

    [Fact]
    public async Task Two_messages_reuse_one_connection()
    {
        await using var transport = NewTransport();
        var first = await SpoolAsync(SampleMessage("one"));
        var second = await SpoolAsync(SampleMessage("two"));

        await transport.DeliverAsync(first, first.Envelope.Recipients, CancellationToken.None);
        await transport.DeliverAsync(second, second.Envelope.Recipients, CancellationToken.None);

        Assert.Equal(1, _server.Connections);
        Assert.Equal(2, _server.Messages.Count);

        // Issue 15: nothing arrived after the first 250, so the second MAIL follows without an RSET round trip.
        Assert.DoesNotContain("RSET", _server.Commands);
        Assert.DoesNotContain("QUIT", _server.Commands);
        Assert.Equal(2, _server.Commands.Count(c => c.StartsWith("MAIL FROM:", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task A_pooled_connection_the_server_closed_is_replaced_without_a_failure()
    {
        _server.CloseAfterDataReply = n => n == 1;
        var logger = new CapturingLogger();
        await using var transport = NewTransport(logger: logger);
        var first = await SpoolAsync(SampleMessage("one"));
        var second = await SpoolAsync(SampleMessage("two"));

        Assert.Equal(DeliveryOutcome.Delivered, Assert.Single(await transport.DeliverAsync(first, first.Envelope.Recipients, CancellationToken.None)).Outcome);
        await Poll.UntilAsync(() => _server.ServerCloses == 1 && transport.Pool.IdleWithInput("127.0.0.1", _server.Port) == 1);
        var result = Assert.Single(await transport.DeliverAsync(second, second.Envelope.Recipients, CancellationToken.None));

        // The EOF waiting on the idle socket is seen before reuse (not found by a MAIL that fails and is retried): a new
        // connection, no deferral.
        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        Assert.Equal(2, _server.Connections);
        Assert.Equal(2, _server.Messages.Count);
        Assert.DoesNotContain(logger.Lines, l => l.Contains("trying once more", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Connection_is_recycled_after_MaxMessagesPerConnection()
    {
        await using var transport = NewTransport(maxMessagesPerConnection: 2);
        for (var i = 0; i < 5; i++)
        {
            var message = await SpoolAsync(SampleMessage($"m{i}"));
            await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);
        }

        Assert.Equal(3, _server.Connections);
        Assert.Equal(5, _server.Messages.Count);
    }

    [Fact]
    public async Task Mixed_recipient_replies_give_one_outcome_each()
    {
        _server.RcptReply = rcpt => rcpt switch
        {
            "busy@example.net" => "450 4.2.1 Mailbox busy",
            "nobody@example.net" => "550 5.1.1 No such user",
            _ => "250 2.1.5 Ok",
        };
        await using var transport = NewTransport();
        var message = await SpoolAsync(SampleMessage(), ["ok@example.net", "busy@example.net", "nobody@example.net"]);

        var results = await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.Equal([DeliveryOutcome.Delivered, DeliveryOutcome.Deferred, DeliveryOutcome.Bounced], results.Select(r => r.Outcome));
        Assert.Equal(["ok@example.net", "busy@example.net", "nobody@example.net"], results.Select(r => r.Recipient));
        Assert.Equal("450 4.2.1 Mailbox busy", results[1].Reply);
        Assert.Equal("550 5.1.1 No such user", results[2].Reply);
        Assert.Equal(["ok@example.net"], Assert.Single(_server.Messages).Recipients);

        // The connection is still good for the next message.
        var next = await SpoolAsync(SampleMessage());
        Assert.Equal(DeliveryOutcome.Delivered, Assert.Single(await transport.DeliverAsync(next, next.Envelope.Recipients, CancellationToken.None)).Outcome);
        Assert.Equal(1, _server.Connections);
    }

    [Fact]
    public async Task All_recipients_refused_gives_their_own_replies_and_keeps_the_connection()
    {
        _server.RcptReply = rcpt => rcpt switch
        {
            "temp@example.net" => "451 4.3.0 Try later",
            "gone@example.net" => "550 5.1.1 No such user",
            _ => "250 2.1.5 Ok",
        };
        await using var transport = NewTransport();
        var message = await SpoolAsync(SampleMessage(), ["temp@example.net", "gone@example.net"]);

        var results = await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.Equal([DeliveryOutcome.Deferred, DeliveryOutcome.Bounced], results.Select(r => r.Outcome));
        Assert.Contains("RSET", _server.Commands);
        var next = await SpoolAsync(SampleMessage(), ["ok@example.net"]);
        Assert.Equal(DeliveryOutcome.Delivered, Assert.Single(await transport.DeliverAsync(next, next.Envelope.Recipients, CancellationToken.None)).Outcome);
        Assert.Equal(1, _server.Connections);
    }

    [Theory]
    [InlineData("451 4.7.1 Greylisted", DeliveryOutcome.Deferred)]
    [InlineData("550 5.7.1 Sender rejected", DeliveryOutcome.Bounced)]
    public async Task Refused_sender_decides_for_every_recipient(string reply, DeliveryOutcome expected)
    {
        _server.MailReply = _ => reply;
        await using var transport = NewTransport();
        var message = await SpoolAsync(SampleMessage(), ["a@example.net", "b@example.net"]);

        var results = await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r => Assert.Equal(expected, r.Outcome));
        Assert.All(results, r => Assert.Equal(reply, r.Reply));
    }

    [Theory]
    [InlineData("452 4.3.1 Insufficient storage", DeliveryOutcome.Deferred)]
    [InlineData("554 5.6.0 Content refused", DeliveryOutcome.Bounced)]
    public async Task Final_reply_after_data_decides_for_accepted_recipients(string reply, DeliveryOutcome expected)
    {
        _server.DataReply = reply;
        _server.RcptReply = rcpt => rcpt == "nobody@example.net" ? "550 5.1.1 No such user" : "250 Ok";
        await using var transport = NewTransport();
        var message = await SpoolAsync(SampleMessage(), ["a@example.net", "nobody@example.net"]);

        var results = await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.Equal(expected, results[0].Outcome);
        Assert.Equal(reply, results[0].Reply);
        Assert.Equal(DeliveryOutcome.Bounced, results[1].Outcome);
    }

    [Fact]
    public async Task Dropped_connection_defers_and_next_attempt_opens_a_new_connection()
    {
        // MAIL 2 is on the pooled session, which is replaced once at once; MAIL 3, on the new session, is dropped as well.
        _server.DropOnMail = n => n is 2 or 3;
        await using var transport = NewTransport();
        var first = await SpoolAsync(SampleMessage("one"));
        var second = await SpoolAsync(SampleMessage("two"));

        Assert.Equal(DeliveryOutcome.Delivered, Assert.Single(await transport.DeliverAsync(first, first.Envelope.Recipients, CancellationToken.None)).Outcome);
        var dropped = Assert.Single(await transport.DeliverAsync(second, second.Envelope.Recipients, CancellationToken.None));
        Assert.Equal(DeliveryOutcome.Deferred, dropped.Outcome);
        Assert.StartsWith("451 4.4.2", dropped.Reply);
        Assert.Equal(0, transport.Pool.OpenCount("127.0.0.1", _server.Port));

        var retry = Assert.Single(await transport.DeliverAsync(second, second.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Delivered, retry.Outcome);
        Assert.Equal(3, _server.Connections);
        Assert.Equal(2, _server.Messages.Count);
    }

    [Fact]
    public async Task An_unsolicited_421_on_an_idle_pooled_connection_is_seen_and_the_next_message_goes_out_on_a_new_one()
    {
        var idle = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _server.AfterDataReply = async n =>
        {
            if (n != 1)
            {
                return null;
            }

            await idle.Task;
            return "421 4.4.2 test.example idle too long";
        };
        var logger = new CapturingLogger();
        await using var transport = NewTransport(logger: logger);
        var first = await SpoolAsync(SampleMessage("one"));
        var second = await SpoolAsync(SampleMessage("two"));

        await transport.DeliverAsync(first, first.Envelope.Recipients, CancellationToken.None);
        idle.SetResult();
        // Written is not yet received (loopback may defer it): wait until the client's socket has it.
        await Poll.UntilAsync(() => transport.Pool.IdleWithInput("127.0.0.1", _server.Port) == 1);
        var result = Assert.Single(await transport.DeliverAsync(second, second.Envelope.Recipients, CancellationToken.None));

        // The 421 waits on the idle socket, so the pool's poll sees it and probes with RSET (RFC 5321 section 4.1.1.5),
        // whose reply is the 421: a new session, not a retry of a broken transaction.
        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        Assert.Equal(2, _server.Connections);
        Assert.Equal([1, 2], _server.Messages.Select(m => m.Connection).Order());
        Assert.DoesNotContain(logger.Lines, l => l.Contains("trying once more", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_pooled_session_lost_before_any_reply_is_replaced_at_once_but_a_421_reply_defers(bool replies421)
    {
        // No reply (the peer's idle close racing the pool's check, MAIL meets EOF): nothing was sent, so the transaction
        // goes out at once on one new session. A 421 to MAIL is the host speaking ("later", e.g. a rate limit): deferred,
        // with no immediate second session.
        if (replies421)
        {
            _server.MailReply = _ => Interlocked.Increment(ref _mails) == 2 ? "421 4.7.0 test.example rate limited, try later" : "250 2.1.0 Ok";
        }
        else
        {
            _server.DropOnMail = n => n == 2;
        }

        await using var transport = NewTransport();
        var first = await SpoolAsync(SampleMessage("one"));
        var second = await SpoolAsync(SampleMessage("two"));

        await transport.DeliverAsync(first, first.Envelope.Recipients, CancellationToken.None);
        var result = Assert.Single(await transport.DeliverAsync(second, second.Envelope.Recipients, CancellationToken.None));

        Assert.Equal(replies421 ? DeliveryOutcome.Deferred : DeliveryOutcome.Delivered, result.Outcome);
        Assert.Equal(replies421 ? 1 : 2, _server.Connections);
        Assert.Equal(replies421 ? [1] : [1, 2], _server.Messages.Select(m => m.Connection).Order());
    }

    int _mails;

    [Fact]
    public async Task Unreachable_smarthost_defers()
    {
        var port = _server.Port;
        await _server.DisposeAsync();
        await using var transport = new SmarthostTransport(new SmarthostConfig { Host = "127.0.0.1", Port = port, ConnectTimeout = TimeSpan.FromSeconds(5), AllowPrivateDestinations = true },
            "smtpgw.localhost", TimeProvider.System, NullLogger.Instance);
        var message = await SpoolAsync(SampleMessage(), ["a@example.net", "b@example.net"]);

        var results = await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None);

        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Deferred, r.Outcome));
        Assert.All(results, r => Assert.StartsWith("451 4.4.1", r.Reply));
        Assert.Equal(0, transport.Pool.OpenCount("127.0.0.1", port));
    }

    [Fact]
    public async Task MaxConnections_cap_holds_under_concurrency()
    {
        _server.HoldDataUntilConcurrent = 3;
        await using var transport = NewTransport(maxConnections: 3);
        var messages = new List<SpooledMessage>();
        for (var i = 0; i < 24; i++)
        {
            messages.Add(await SpoolAsync(SampleMessage($"m{i}")));
        }

        var results = await Task.WhenAll(messages.Select(m => Task.Run(() => transport.DeliverAsync(m, m.Envelope.Recipients, CancellationToken.None))));

        Assert.All(results.SelectMany(r => r), r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));
        Assert.Equal(24, _server.Messages.Count);
        Assert.Equal(3, _server.MaxConcurrentConnections);
        Assert.Equal(3, _server.Connections);
    }

    [Fact]
    public async Task Connections_are_not_shared_between_tenants()
    {
        await using var transport = NewTransport();
        var a = await SpoolAsync(SampleMessage(), tenant: "tenant-a");
        var b = await SpoolAsync(SampleMessage(), tenant: "tenant-b");
        var a2 = await SpoolAsync(SampleMessage(), tenant: "tenant-a");

        foreach (var m in new[] { a, b, a2 })
        {
            await transport.DeliverAsync(m, m.Envelope.Recipients, CancellationToken.None);
        }

        Assert.Equal(2, _server.Connections);
        var byConnection = _server.Messages.GroupBy(m => m.Connection).Select(g => g.Count()).Order().ToArray();
        Assert.Equal([1, 2], byConnection);
    }

    [Fact]
    public async Task Idle_connection_is_closed_after_IdleTimeout()
    {
        var time = new ManualTimeProvider(DateTimeOffset.UtcNow);
        await using var transport = NewTransport(time: time, idleTimeout: TimeSpan.FromSeconds(30));
        var first = await SpoolAsync(SampleMessage());
        await transport.DeliverAsync(first, first.Envelope.Recipients, CancellationToken.None);
        Assert.Equal(1, transport.Pool.OpenCount("127.0.0.1", _server.Port));

        time.Advance(TimeSpan.FromSeconds(31));
        await Poll.UntilAsync(() => transport.Pool.OpenCount("127.0.0.1", _server.Port) == 0 && _server.Commands.Contains("QUIT"));

        var second = await SpoolAsync(SampleMessage());
        await transport.DeliverAsync(second, second.Envelope.Recipients, CancellationToken.None);
        Assert.Equal(2, _server.Connections);
    }

    [Fact]
    public async Task Connection_idle_for_a_while_is_checked_with_RSET_before_reuse()
    {
        var time = new ManualTimeProvider(DateTimeOffset.UtcNow);
        await using var transport = NewTransport(time: time, idleTimeout: TimeSpan.FromMinutes(5));
        var first = await SpoolAsync(SampleMessage());
        await transport.DeliverAsync(first, first.Envelope.Recipients, CancellationToken.None);

        time.Advance(TimeSpan.FromSeconds(20));
        var second = await SpoolAsync(SampleMessage());
        await transport.DeliverAsync(second, second.Envelope.Recipients, CancellationToken.None);

        Assert.Contains("RSET", _server.Commands);
        Assert.Equal(1, _server.Connections);
    }
}
