using System.Net;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Audit;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Listener;

/// <summary>
/// Issue #3 two-tenant matrix over real sockets: everything tenant A may do, tried as tenant B (B's token with A's
/// user name, B's token sending as A, B's legacy address sending as A, expired, revoked and rotated-out tokens).
/// Each refusal has its exact reply and an audit event.
/// </summary>
public sealed class IdentityTranscriptTests
{
    static string Plain(string authzid, string user, string password) =>
        Convert.ToBase64String(Encoding.UTF8.GetBytes($"{authzid}\0{user}\0{password}"));

    internal static async Task<RawSmtpClient> SubmissionAsync(TestGateway gw)
    {
        var c = await gw.ConnectAsync(gw.Submission);
        await c.HelloAsync();
        Assert.StartsWith("220 2.0.0", await c.CommandAsync("STARTTLS"));
        await c.StartTlsAsync();
        Assert.StartsWith("250", await c.CommandAsync("EHLO agent.example"));
        return c;
    }

    static async Task<string?> DataAsync(RawSmtpClient c, string message)
    {
        Assert.StartsWith("354", await c.CommandAsync("DATA"));
        await c.SendRawAsync(message + ".\r\n");
        return await c.ReadReplyAsync();
    }

    [Fact]
    public async Task Tenant_a_token_sends_as_tenant_a_and_the_message_is_queued_for_tenant_a()
    {
        await using var gw = await TestGateway.StartAsync();
        var token = gw.Tokens.Mint("tenant-a", null, [], "agent").Token;
        await using var c = await SubmissionAsync(gw);
        Assert.StartsWith("235 2.7.0", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", token)));
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<agent@Tenant-A.example>"));
        Assert.StartsWith("250 2.1.5", await c.CommandAsync("RCPT TO:<someone@elsewhere.example>"));
        Assert.StartsWith("250 2.0.0", await DataAsync(c, "From: Agent <agent@tenant-a.example>\r\nX-Tenant: tenant-b\r\nSubject: hi\r\n\r\nbody\r\n"));
        var (envelope, message) = Assert.Single(gw.Spool.Commits);
        Assert.Equal("tenant-a", envelope.TenantId); // X-Tenant in the content changes nothing
        Assert.Contains("with ESMTPSA", Encoding.UTF8.GetString(message));
        var auth = Assert.Single(gw.Audit.Events, e => e.Action == AuditActions.Auth);
        Assert.Equal(("ok", "tenant-a", false), (auth.Result, auth.Tenant, auth.CrossTenant));
        Assert.NotNull(auth.TokenId);
        Assert.DoesNotContain(gw.Audit.Events, e => (e.Reason + e.Subject + e.TokenId).Contains(token.Split('.')[2], StringComparison.Ordinal));
    }

    [Fact]
    public async Task An_unreachable_hsm_token_at_auth_answers_454_not_bad_credentials_and_the_client_may_retry()
    {
        var hsm = new InMemoryTenantKeys();
        await using var gw = await TestGateway.StartAsync(tenantKeys: hsm);
        var token = gw.Tokens.Mint("tenant-a", null, [], "agent").Token;
        await using var c = await SubmissionAsync(gw);

        hsm.Unavailable = true;
        Assert.Equal("454 4.7.0 Temporary authentication failure, try again later", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", token)));
        Assert.Equal("454 4.7.0 Temporary authentication failure, try again later", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", token)));
        Assert.Equal("454 4.7.0 Temporary authentication failure, try again later", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", token)));
        Assert.Equal("535 5.7.8 Authentication credentials invalid", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", "guess")));

        // The token comes back: same session, no throttle strikes from the outage.
        hsm.Unavailable = false;
        Assert.StartsWith("235 2.7.0", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", token)));
        Assert.Equal(3, gw.Audit.Events.Count(e => e.Action == AuditActions.Auth && e.Result == "error"));
    }

    [Fact]
    public async Task Auth_login_works_the_same()
    {
        await using var gw = await TestGateway.StartAsync();
        var token = gw.Tokens.Mint("tenant-b", null, [], null).Token;
        await using var c = await SubmissionAsync(gw);
        Assert.StartsWith("334 VXNlcm5hbWU6", await c.CommandAsync("AUTH LOGIN"));
        Assert.StartsWith("334 UGFzc3dvcmQ6", await c.CommandAsync(Convert.ToBase64String("tenant-b"u8)));
        Assert.StartsWith("235 2.7.0", await c.CommandAsync(Convert.ToBase64String(Encoding.UTF8.GetBytes(token))));
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<x@tenant-b.example>"));
    }

    [Fact]
    public async Task Tenant_b_token_with_tenant_a_user_name_is_refused_uniformly_and_audited_as_cross_tenant()
    {
        await using var gw = await TestGateway.StartAsync();
        var tokenB = gw.Tokens.Mint("tenant-b", null, [], null);
        var tokenA = gw.Tokens.Mint("tenant-a", null, [], null);
        await using var c = await SubmissionAsync(gw);
        Assert.Equal("535 5.7.8 Authentication credentials invalid", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", tokenB.Token)));
        Assert.Equal("535 5.7.8 Authentication credentials invalid", await c.CommandAsync("AUTH PLAIN " + Plain("tenant-b", "tenant-a", tokenA.Token)));
        Assert.Equal("535 5.7.8 Authentication credentials invalid", await c.CommandAsync("AUTH PLAIN " + Plain("", "nobody", tokenA.Token)));
        Assert.Equal("535 5.7.8 Authentication credentials invalid", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", "guess")));
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<x@elsewhere.example>")); // still unauthenticated: inbound only
        Assert.StartsWith("554 5.7.1", await c.CommandAsync("RCPT TO:<victim@elsewhere.example>"));

        var refusals = gw.Audit.Events.Where(e => e.Action == AuditActions.Auth).ToList();
        Assert.All(refusals, e => Assert.Equal("refused", e.Result));
        var cross = Assert.Single(refusals, e => e.CrossTenant);
        Assert.Equal(("tenant-b", tokenB.Record.Id, "token tenant differs from user name"), (cross.Tenant, cross.TokenId, cross.Reason));
        Assert.Contains(refusals, e => e.Reason == "authorization identity differs from user name");
        Assert.Contains(refusals, e => e.Reason == "unknown tenant" && e.Tenant is null);
        Assert.Contains(refusals, e => e.Reason == "malformed token");
    }

    [Fact]
    public async Task Tenant_b_token_cannot_send_as_tenant_a_in_envelope_or_header()
    {
        await using var gw = await TestGateway.StartAsync();
        var token = gw.Tokens.Mint("tenant-b", null, [], null).Token;
        await using var c = await SubmissionAsync(gw);
        Assert.StartsWith("235", await c.CommandAsync("AUTH PLAIN " + Plain("tenant-b", "tenant-b", token)));
        Assert.StartsWith("550 5.7.1", await c.CommandAsync("MAIL FROM:<ceo@tenant-a.example>"));
        Assert.StartsWith("550 5.7.1", await c.CommandAsync("MAIL FROM:<ceo@tenаnt-b.example> SMTPUTF8")); // Cyrillic lookalike of B's own
        Assert.StartsWith("550 5.7.1", await c.CommandAsync("MAIL FROM:<>")); // no null sender on submission
        Assert.StartsWith("250 2.1.0", await c.CommandAsync("MAIL FROM:<ok@tenant-b.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<r@elsewhere.example>"));
        Assert.StartsWith("550 5.7.1", await DataAsync(c, "From: ceo@tenant-a.example\r\nSubject: spoof\r\n\r\nx\r\n"));
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<ok@tenant-b.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<r@elsewhere.example>"));
        Assert.StartsWith("550 5.7.1", await DataAsync(c, "Subject: no from\r\n\r\nx\r\n"));
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<ok@tenant-b.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<r@elsewhere.example>"));
        Assert.StartsWith("550 5.7.1", await DataAsync(c, "From: ok@tenant-b.example\r\nFrom: ceo@tenant-a.example\r\n\r\nx\r\n"));
        Assert.Empty(gw.Spool.Commits);

        var sendAs = gw.Audit.Events.Where(e => e.Action == AuditActions.SendAs).ToList();
        Assert.Equal(3, sendAs.Count);
        Assert.Single(sendAs, e => e.CrossTenant && e.Tenant == "tenant-b" && e.Subject == "ceo@tenant-a.example");
        Assert.Single(gw.Audit.Events, e => e.Action == AuditActions.HeaderFrom && e.CrossTenant);
        Assert.Equal(3, gw.Audit.Events.Count(e => e.Action == AuditActions.HeaderFrom));
    }

    [Fact]
    public async Task Sender_and_Resent_headers_are_bound_to_the_tenant_like_From()
    {
        await using var gw = await TestGateway.StartAsync();
        var token = gw.Tokens.Mint("tenant-b", null, [], null).Token;
        await using var c = await SubmissionAsync(gw);
        Assert.StartsWith("235", await c.CommandAsync("AUTH PLAIN " + Plain("tenant-b", "tenant-b", token)));
        foreach (var spoof in new[]
                 {
                     "Sender: ceo@tenant-a.example\r\n",
                     "Resent-From: Boss <ceo@tenant-a.example>\r\n",
                     "Resent-Sender: ceo@tenant-a.example\r\n",
                     "Sender: ok@tenant-b.example, ceo@tenant-a.example\r\n",
                     "Sender: not an address\r\n",
                 })
        {
            Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<ok@tenant-b.example>"));
            Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<r@elsewhere.example>"));
            var reply = await DataAsync(c, "From: ok@tenant-b.example\r\n" + spoof + "Subject: on behalf of\r\n\r\nx\r\n");
            Assert.StartsWith("550 5.7.1 Sender or Resent header", reply);
        }

        Assert.Empty(gw.Spool.Commits);
        Assert.Equal(4, gw.Audit.Events.Count(e => e.Action == AuditActions.HeaderFrom && e.CrossTenant));
        Assert.Equal(5, gw.Audit.Events.Count(e => e.Action == AuditActions.HeaderFrom));

        // Its own addresses in those fields are fine.
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<ok@tenant-b.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<r@elsewhere.example>"));
        Assert.StartsWith("250 2.0.0", await DataAsync(c, "From: Team <team@tenant-b.example>\r\nSender: ok@tenant-b.example\r\nSubject: ok\r\n\r\nx\r\n"));
    }

    [Fact]
    public async Task Sender_scope_of_the_token_is_enforced()
    {
        await using var gw = await TestGateway.StartAsync();
        var token = gw.Tokens.Mint("tenant-a", null, ["alerts@tenant-a.example"], null).Token;
        await using var c = await SubmissionAsync(gw);
        Assert.StartsWith("235", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", token)));
        Assert.StartsWith("550 5.7.1", await c.CommandAsync("MAIL FROM:<ceo@tenant-a.example>"));
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<alerts@tenant-a.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RCPT TO:<r@elsewhere.example>"));
        Assert.StartsWith("550 5.7.1", await DataAsync(c, "From: ceo@tenant-a.example\r\n\r\nx\r\n"));
    }

    [Fact]
    public async Task Legacy_address_of_tenant_b_acts_for_b_only_and_unknown_addresses_only_reach_tenant_domains()
    {
        await using var gw = await TestGateway.StartAsync();
        await using (var b = await gw.ConnectAsync(gw.Relay, source: IPAddress.Parse("127.0.0.2")))
        {
            await b.HelloAsync();
            Assert.StartsWith("550 5.7.1", await b.CommandAsync("MAIL FROM:<ceo@tenant-a.example>"));
            Assert.StartsWith("250", await b.CommandAsync("MAIL FROM:<app@tenant-b.example>"));
            Assert.StartsWith("250", await b.CommandAsync("RCPT TO:<customer@elsewhere.example>"));
            Assert.StartsWith("250 2.0.0", await DataAsync(b, "From: app@tenant-b.example\r\n\r\nx\r\n"));
        }

        Assert.Equal("tenant-b", Assert.Single(gw.Spool.Commits).Envelope.TenantId);
        Assert.Single(gw.Audit.Events, e => e.Action == AuditActions.SendAs && e.CrossTenant && e.Tenant == "tenant-b");
        Assert.Single(gw.Audit.Events, e => e.Action == AuditActions.LegacyRelay && e.Tenant == "tenant-b");

        await using var stranger = await gw.ConnectAsync(gw.Relay, source: IPAddress.Parse("127.0.0.3"));
        await stranger.HelloAsync();
        Assert.StartsWith("250", await stranger.CommandAsync("MAIL FROM:<someone@elsewhere.example>"));
        foreach (var trick in new[]
        {
            "victim@elsewhere.example", "\"victim@elsewhere.example\"@tenant-a.example", "victim%elsewhere.example@tenant-a.example",
            "elsewhere.example!victim@tenant-a.example", "victim@[127.0.0.1]",
        })
        {
            Assert.Equal("554 5.7.1 Relay access denied", await stranger.CommandAsync($"RCPT TO:<{trick}>"));
        }

        Assert.StartsWith("501 5.1.3", await stranger.CommandAsync("RCPT TO:<@tenant-a.example:victim@elsewhere.example>"));
        Assert.StartsWith("501 5.1.3", await stranger.CommandAsync("RCPT TO:<victim@elsewhere.example.>"));
        Assert.StartsWith("250", await stranger.CommandAsync("RCPT TO:<bob@TENANT-A.example>"));
        Assert.StartsWith("452 4.5.3", await stranger.CommandAsync("RCPT TO:<carol@tenant-b.example>"));
        Assert.StartsWith("250 2.0.0", await DataAsync(stranger, "Subject: inbound\r\n\r\nhello\r\n"));
        Assert.Equal("tenant-a", gw.Spool.Commits.Last().Envelope.TenantId);
        Assert.Equal(5, gw.Audit.Events.Count(e => e.Action == AuditActions.Relay && e.Result == "refused"));
    }

    [Fact]
    public async Task Expired_token_is_refused_at_auth_and_a_token_that_expires_mid_session_at_the_next_mail()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await TestGateway.StartAsync(time: clock);
        var shortLived = gw.Tokens.Mint("tenant-a", TimeSpan.FromMinutes(1), [], null).Token;
        await using var c = await SubmissionAsync(gw);
        Assert.StartsWith("235", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", shortLived)));
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<a@tenant-a.example>"));
        Assert.StartsWith("250", await c.CommandAsync("RSET"));
        clock.Advance(TimeSpan.FromMinutes(1));
        Assert.StartsWith("530 5.7.0", await c.CommandAsync("MAIL FROM:<a@tenant-a.example>"));
        Assert.Single(gw.Audit.Events, e => e.Action == AuditActions.TokenCheck && e.Reason == "expired");

        await using var again = await SubmissionAsync(gw);
        Assert.StartsWith("535 5.7.8", await again.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", shortLived)));
        Assert.Contains(gw.Audit.Events, e => e.Action == AuditActions.Auth && e.Reason == "expired");
    }

    [Fact]
    public async Task Revocation_reaches_a_live_session_at_its_next_mail()
    {
        await using var gw = await TestGateway.StartAsync();
        var minted = gw.Tokens.Mint("tenant-a", null, [], null);
        await using var c = await SubmissionAsync(gw);
        Assert.StartsWith("235", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", minted.Token)));
        gw.Tokens.Revoke(minted.Record.Id);
        gw.Tokens.Store.Refresh();
        Assert.StartsWith("530 5.7.0", await c.CommandAsync("MAIL FROM:<a@tenant-a.example>"));
        await using var again = await SubmissionAsync(gw);
        Assert.StartsWith("535 5.7.8", await again.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", minted.Token)));
    }

    [Fact]
    public async Task Rotated_out_token_is_refused_after_the_grace_window_while_the_other_tenant_is_unaffected()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await TestGateway.StartAsync(time: clock, identity: i => i.KeyRotationGrace = TimeSpan.FromMinutes(10));
        var oldA = gw.Tokens.Mint("tenant-a", TimeSpan.FromHours(1), [], null).Token;
        var b = gw.Tokens.Mint("tenant-b", TimeSpan.FromHours(1), [], null).Token;
        gw.Tokens.RotateKey("tenant-a", null);
        var newA = gw.Tokens.Mint("tenant-a", TimeSpan.FromHours(1), [], null).Token;

        await using (var c = await SubmissionAsync(gw))
        {
            Assert.StartsWith("235", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", oldA)));
        }

        clock.Advance(TimeSpan.FromMinutes(10));
        foreach (var (user, token, expected) in new[] { ("tenant-a", oldA, "535 5.7.8"), ("tenant-a", newA, "235 2.7.0"), ("tenant-b", b, "235 2.7.0") })
        {
            await using var c = await SubmissionAsync(gw);
            Assert.StartsWith(expected, await c.CommandAsync("AUTH PLAIN " + Plain("", user, token)));
        }
    }

    [Fact]
    public async Task Repeated_failures_from_one_address_are_slowed_then_disconnected()
    {
        await using var gw = await TestGateway.StartAsync(identity: i => { i.AuthFailuresBeforeDelay = 1; i.AuthFailuresBeforeDisconnect = 3; });
        await using (var c = await SubmissionAsync(gw))
        {
            Assert.StartsWith("535", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", "x1")));
            Assert.StartsWith("535", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", "x2")));
            Assert.StartsWith("535", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", "x3")));
            Assert.StartsWith("421 4.7.0", await c.ReadReplyAsync());
            Assert.True(await c.IsClosedAsync());
        }

        await using var next = await SubmissionAsync(gw);
        var token = gw.Tokens.Mint("tenant-a", null, [], null).Token;
        Assert.StartsWith("421 4.7.0", await next.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", token)));
    }

    [Fact]
    public async Task Plaintext_auth_is_refused_unless_the_loopback_development_switch_is_on()
    {
        await using (var gw = await TestGateway.StartAsync())
        {
            await using var c = await gw.ConnectAsync(gw.Submission);
            Assert.DoesNotContain("AUTH", await c.HelloAsync());
            Assert.StartsWith("538 5.7.11", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", "x")));
        }

        await using (var gw = await TestGateway.StartAsync(identity: i => i.AllowPlaintextAuthOnLoopback = true))
        {
            var token = gw.Tokens.Mint("tenant-a", null, [], null).Token;
            await using var c = await gw.ConnectAsync(gw.Submission);
            Assert.Contains("AUTH PLAIN LOGIN", await c.HelloAsync());
            Assert.StartsWith("235", await c.CommandAsync("AUTH PLAIN " + Plain("", "tenant-a", token)));
        }
    }
}
