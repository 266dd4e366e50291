using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using SmtpGateway.Bounces;
using SmtpGateway.Envelope;
using SmtpGateway.Submission;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Listener;

/// <summary>
/// Issue #7 over real sockets: return-path checks at the bounce domain, per-tenant suppression at RCPT, and header
/// hygiene (trust headers, Return-Path, Bcc, Message-ID) on what is queued.
/// </summary>
public sealed class EnvelopeIsolationTranscriptTests : IDisposable
{
    const string QueueId = "018F6B2C3D4E0000001A";
    const string SuppressedReply = "550 5.7.1 Recipient is on this account's suppression list (earlier hard bounce or complaint); not sent";

    readonly TempDirectory _dir = new();
    readonly InMemoryTenantKeys _hsm = new();
    readonly ReturnPath _returnPaths;
    readonly SuppressionList _suppression;
    readonly ConcurrentQueue<(string Tenant, string Address, string Session)> _refusals = new();
    readonly EnvelopeServices _envelope;

    public EnvelopeIsolationTranscriptTests()
    {
        _returnPaths = new ReturnPath(new VerpKeyStore(_dir.Path, TimeProvider.System, _hsm));
        _suppression = new SuppressionList(_dir.Path, TimeProvider.System);
        _envelope = new EnvelopeServices(_returnPaths, _suppression, new HeaderHygiene(new HeaderHygieneOptions()),
            (tenant, address, session) => _refusals.Enqueue((tenant, address, session)));
    }

    public void Dispose()
    {
        _suppression.Dispose();
        _dir.Dispose();
    }

    Task<TestGateway> StartAsync() => TestGateway.StartAsync(envelope: _envelope);

    /// <summary>Unauthenticated client (inbound): the submission listener without AUTH.</summary>
    static async Task<RawSmtpClient> InboundAsync(TestGateway gw)
    {
        var c = await gw.ConnectAsync(gw.Submission);
        await c.HelloAsync();
        return c;
    }

    /// <summary>A tenant's legacy app on the relay listener: 127.0.0.1 is tenant-a, 127.0.0.2 tenant-b.</summary>
    static async Task<RawSmtpClient> TenantAsync(TestGateway gw, string tenant = "tenant-a")
    {
        var c = await gw.ConnectAsync(gw.Relay, source: IPAddress.Parse(tenant == "tenant-a" ? "127.0.0.1" : "127.0.0.2"));
        await c.HelloAsync();
        return c;
    }

    static async Task<string?> DataAsync(RawSmtpClient c, string message)
    {
        Assert.StartsWith("354", await c.CommandAsync("DATA"));
        await c.SendRawAsync(message + ".\r\n");
        return await c.ReadReplyAsync();
    }

    /// <summary>Splits the spooled text into our Received header (with its continuation lines) and the rest.</summary>
    static (string Received, string Body) SplitReceived(byte[] message)
    {
        var text = Encoding.UTF8.GetString(message);
        Assert.StartsWith("Received: from client.test.example ([127.0.0.", text, StringComparison.Ordinal);
        var end = 0;
        do
        {
            end = text.IndexOf("\r\n", end, StringComparison.Ordinal) + 2;
        }
        while (end > 1 && end < text.Length && text[end] is '\t' or ' ');

        return (text[..end], text[end..]);
    }

    static int CountHeader(string text, string name) =>
        Regex.Matches(text, $"^{Regex.Escape(name)}:", RegexOptions.Multiline | RegexOptions.IgnoreCase).Count;

    [Fact]
    public async Task At_the_bounce_domain_only_valid_return_paths_and_role_mailboxes_are_accepted()
    {
        await using var gw = await StartAsync();
        var valid = _returnPaths.For("tenant-a", "bounces.tenant-a.example", QueueId, "u@example.net");
        var at = valid.IndexOf('@', StringComparison.Ordinal);
        var forged = string.Concat(valid.AsSpan(0, at - 1), valid[at - 1] == 'a' ? "b" : "a", valid.AsSpan(at));
        await using var c = await InboundAsync(gw);

        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<>"));
        Assert.StartsWith("550 5.1.1", await c.CommandAsync("RCPT TO:<b+garbage@bounces.tenant-a.example>"));
        Assert.StartsWith("550 5.1.1", await c.CommandAsync($"RCPT TO:<{forged}>"));
        Assert.StartsWith("550 5.1.1", await c.CommandAsync("RCPT TO:<anyone@bounces.tenant-a.example>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync($"RCPT TO:<{valid}>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync($"RCPT TO:<{valid.ToUpperInvariant()}>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<postmaster@bounces.tenant-a.example>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<Abuse@Bounces.Tenant-A.example>"));
        Assert.StartsWith("554 5.7.1", await c.CommandAsync("RCPT TO:<someone@nowhere.example>"));
        Assert.StartsWith("250 2.0.0", await DataAsync(c, "Subject: report\r\n\r\nbody\r\n"));

        var (envelope, _) = Assert.Single(gw.Spool.Commits);
        Assert.Equal("tenant-a", envelope.TenantId);
        Assert.True(envelope.Inbound);
        Assert.Equal([valid, valid.ToUpperInvariant(), "postmaster@bounces.tenant-a.example", "Abuse@Bounces.Tenant-A.example"], envelope.Recipients);
        Assert.Empty(_refusals);
    }

    [Fact]
    public async Task A_return_path_the_hsm_token_cannot_check_now_is_answered_451_not_refused_as_forged()
    {
        var made = _returnPaths.For("tenant-a", "bounces.tenant-a.example", QueueId, "u@example.net");
        // The gateway side is a fresh ReturnPath (a restarted process): nothing remembered, every check needs the token.
        var restarted = new EnvelopeServices(new ReturnPath(new VerpKeyStore(_dir.Path, TimeProvider.System, _hsm)), _suppression,
            new HeaderHygiene(new HeaderHygieneOptions()));
        await using var gw = await TestGateway.StartAsync(envelope: restarted);
        await using var c = await InboundAsync(gw);
        _hsm.Unavailable = true;

        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<>"));
        Assert.StartsWith("451 4.3.0", await c.CommandAsync($"RCPT TO:<{made}>"));
        Assert.StartsWith("550 5.1.1", await c.CommandAsync("RCPT TO:<b+garbage@bounces.tenant-a.example>")); // no token needed
        _hsm.Unavailable = false;
        Assert.StartsWith("250 2.1.5", await c.CommandAsync($"RCPT TO:<{made}>"));
    }

    [Fact]
    public async Task A_suppressed_recipient_of_a_tenant_session_is_refused_and_reported()
    {
        Assert.True(_suppression.Add("tenant-a", "gone@example.net", "hard-bounce", "5.1.1 in reply to Q1"));
        await using var gw = await StartAsync();
        await using var c = await TenantAsync(gw);

        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<app@tenant-a.example>"));
        Assert.Equal(SuppressedReply, await c.CommandAsync("RCPT TO:<Gone@Example.NET>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<ok@example.net>"));
        Assert.StartsWith("250 2.0.0", await DataAsync(c, "From: app@tenant-a.example\r\nSubject: hi\r\n\r\nbody\r\n"));

        var (tenant, address, session) = Assert.Single(_refusals);
        Assert.Equal(("tenant-a", "Gone@Example.NET"), (tenant, address));
        Assert.Matches("^[0-9a-f]{12}$", session);
        Assert.Equal(["ok@example.net"], Assert.Single(gw.Spool.Commits).Envelope.Recipients);
    }

    [Fact]
    public async Task Another_tenants_suppression_list_does_not_apply()
    {
        Assert.True(_suppression.Add("tenant-a", "gone@example.net", "complaint", null));
        await using var gw = await StartAsync();
        await using var b = await TenantAsync(gw, "tenant-b");

        Assert.StartsWith("250", await b.CommandAsync("MAIL FROM:<app@tenant-b.example>"));
        Assert.StartsWith("250 2.1.5", await b.CommandAsync("RCPT TO:<gone@example.net>"));
        Assert.StartsWith("250 2.0.0", await DataAsync(b, "From: app@tenant-b.example\r\nSubject: hi\r\n\r\nbody\r\n"));

        var (envelope, _) = Assert.Single(gw.Spool.Commits);
        Assert.Equal("tenant-b", envelope.TenantId);
        Assert.Equal(["gone@example.net"], envelope.Recipients);
        Assert.Empty(_refusals);
    }

    [Fact]
    public async Task Thirty_suppressed_recipients_do_not_spend_the_session_error_budget()
    {
        for (var i = 0; i < 30; i++)
        {
            Assert.True(_suppression.Add("tenant-a", $"s{i}@example.net", "hard-bounce", null));
        }

        await using var gw = await StartAsync(); // MaxErrors is 20
        await using var c = await TenantAsync(gw);

        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<app@tenant-a.example>"));
        for (var i = 0; i < 30; i++)
        {
            Assert.Equal(SuppressedReply, await c.CommandAsync($"RCPT TO:<s{i}@example.net>"));
        }

        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<ok@example.net>"));
        Assert.StartsWith("250 2.0.0", await DataAsync(c, "From: app@tenant-a.example\r\nSubject: hi\r\n\r\nbody\r\n"));
        Assert.StartsWith("250", await c.CommandAsync("NOOP"));

        Assert.Equal(30, _refusals.Count);
        Assert.Single(_refusals.Select(r => r.Session).Distinct());
        Assert.Equal(Enumerable.Range(0, 30).Select(i => $"s{i}@example.net"), _refusals.Select(r => r.Address));
    }

    [Fact]
    public async Task A_tenants_message_is_queued_without_trust_headers_return_path_and_bcc()
    {
        await using var gw = await StartAsync();
        await using var c = await TenantAsync(gw);
        const string message =
            "From: app@tenant-a.example\r\n" +
            "To: r@example.net\r\n" +
            "X-Tenant: tenant-b\r\n" +
            "X-Tenant-Id: b\r\n" +
            "  folded continuation\r\n" +
            "Return-Path: <evil@x>\r\n" +
            "Bcc: hidden@x\r\n" +
            "Subject: hi\r\n" +
            "Message-ID: <m1@tenant-a.example>\r\n" +
            "\r\n" +
            "X-Tenant: in the body stays\r\n" +
            "Bcc: so does this\r\n";

        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<app@tenant-a.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<r@example.net>"));
        Assert.StartsWith("250 2.0.0", await DataAsync(c, message));

        var (envelope, bytes) = Assert.Single(gw.Spool.Commits);
        Assert.Equal("tenant-a", envelope.TenantId);
        var (received, rest) = SplitReceived(bytes); // no signer: our Received is the first field
        Assert.Contains($"id {envelope.Id};", received, StringComparison.Ordinal);
        Assert.Equal(
            "From: app@tenant-a.example\r\n" +
            "To: r@example.net\r\n" +
            "Subject: hi\r\n" +
            "Message-ID: <m1@tenant-a.example>\r\n" +
            "\r\n" +
            "X-Tenant: in the body stays\r\n" +
            "Bcc: so does this\r\n", rest);
        Assert.DoesNotContain("hidden@x", rest, StringComparison.Ordinal);
        Assert.DoesNotContain("evil@x", rest, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_tenants_message_without_message_id_gets_exactly_one()
    {
        await using var gw = await StartAsync();
        await using var c = await TenantAsync(gw);
        const string message = "From: app@tenant-a.example\r\nTo: r@example.net\r\nSubject: no id\r\n\r\nbody\r\n";

        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<app@tenant-a.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<r@example.net>"));
        Assert.StartsWith("250 2.0.0", await DataAsync(c, message));

        var (envelope, bytes) = Assert.Single(gw.Spool.Commits);
        var (_, rest) = SplitReceived(bytes);
        // Named after the tenant's own From domain, not the gateway: a shared Message-ID domain would link tenants.
        Assert.Matches($"^Message-ID: <{Regex.Escape(envelope.Id)}\\.[0-9a-f]{{16}}@tenant-a\\.example>\r\n", rest);
        Assert.Equal(message, rest[(rest.IndexOf("\r\n", StringComparison.Ordinal) + 2)..]);
        Assert.Equal(1, CountHeader(Encoding.UTF8.GetString(bytes), "Message-ID"));
    }

    [Theory]
    [InlineData("Message-ID: <m1@tenant-a.example>")]
    [InlineData("message-id:<m1@tenant-a.example>")]
    [InlineData("Message-Id: \r\n <m1@tenant-a.example>")]
    public async Task A_tenants_message_with_a_message_id_is_queued_byte_for_byte(string messageId)
    {
        await using var gw = await StartAsync();
        await using var c = await TenantAsync(gw);
        var message = $"From: app@tenant-a.example\r\n{messageId}\r\nTo: r@example.net\r\nSubject: kept  \r\n\r\nbody\r\n\r\nend\r\n";

        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<app@tenant-a.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<r@example.net>"));
        Assert.StartsWith("250 2.0.0", await DataAsync(c, message));

        var (_, rest) = SplitReceived(Assert.Single(gw.Spool.Commits).Message);
        Assert.Equal(message, rest);
    }

    [Fact]
    public async Task Inbound_mail_keeps_its_bcc_but_loses_trust_headers_and_gets_no_message_id()
    {
        await using var gw = await StartAsync();
        await using var c = await InboundAsync(gw);

        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<someone@elsewhere.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<info@tenant-a.example>"));
        Assert.StartsWith("250 2.0.0", await DataAsync(c,
            "From: someone@elsewhere.example\r\n" +
            "To: info@tenant-a.example\r\n" +
            "Bcc: boss@tenant-a.example\r\n" +
            "X-Tenant: tenant-b\r\n" +
            "X-Tenant-Id: b\r\n" +
            "Return-Path: <evil@x>\r\n" +
            "Subject: hi\r\n" +
            "\r\n" +
            "body\r\n"));

        var (envelope, bytes) = Assert.Single(gw.Spool.Commits);
        Assert.True(envelope.Inbound);
        var (_, rest) = SplitReceived(bytes);
        Assert.Equal(
            "From: someone@elsewhere.example\r\n" +
            "To: info@tenant-a.example\r\n" +
            "Bcc: boss@tenant-a.example\r\n" +
            "Subject: hi\r\n" +
            "\r\n" +
            "body\r\n", rest);
    }
}
