using System.Buffers;
using System.Net;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Policy;
using SmtpGateway.Smtp;
using SmtpGateway.Submission;
using SmtpGateway.Tests.Listener;

namespace SmtpGateway.Tests.Submission;

/// <summary>
/// Issue 12: the per-tenant limits as the pipeline applies them, so a message built in code (MCP, admin API) meets the
/// same limits as an SMTP transaction. tenant-a is limited, tenant-b keeps the defaults.
/// </summary>
public sealed class TenantLimitsPipelineTests
{
    static readonly IPAddress TenantAClient = IPAddress.Parse("127.0.0.1");
    static readonly IPAddress TenantBClient = IPAddress.Parse("127.0.0.2");
    static readonly IPAddress Nobody = IPAddress.Parse("192.0.2.9");

    readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
    readonly RecordingSpool _spool = new();
    readonly TenantRateLimits _rates;
    TenantSnapshot _tenants;

    public TenantLimitsPipelineTests()
    {
        _rates = new TenantRateLimits(_clock, NullLogger.Instance);
        _tenants = Tenants(new TenantLimitsConfig { MessagesPerMinute = 3, RecipientsPerMinute = 5, MaxSessions = 2, MaxMessageSize = 2_000 });
    }

    static TenantSnapshot Tenants(TenantLimitsConfig tenantA)
    {
        var errors = new List<string>();
        var tenants = TenantSnapshot.Build(new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Domains = ["tenant-a.example"], Networks = ["127.0.0.1/32"], Limits = tenantA },
            ["tenant-b"] = new() { Domains = ["tenant-b.example"], Networks = ["127.0.0.2/32"] },
        }, errors);
        Assert.Empty(errors);
        return tenants;
    }

    SubmissionPipeline Pipeline()
    {
        var identity = new IdentityConfig { Audience = "gw-test" };
        var limits = new LimitsConfig();
        return new SubmissionPipeline(
            new SubmissionServices(
                "gw.test.example",
                limits,
                new IdentityServices(() => _tenants, new AnyTenantAuthenticator(), _ => new SmtpGateway.Identity.Tokens.TokenCheck(true, null, null),
                    new AuthThrottle(1, 2, TimeSpan.FromMinutes(5), _clock), new RecordingAudit(), identity),
                _spool,
                _clock,
                new MessageMemoryBudget(limits.MaxInFlightMemory),
                RateLimits: _rates),
            NullLoggerFactory.Instance);
    }

    /// <summary>Succeeds for any user name that is a tenant id: these tests are about what happens after AUTH.</summary>
    sealed class AnyTenantAuthenticator : ISmtpAuthenticator
    {
        public ValueTask<AuthResult> AuthenticateAsync(AuthRequest request, CancellationToken cancellationToken) =>
            ValueTask.FromResult(new AuthResult(true, new TenantSession(request.UserName, TenantSessionKind.Token, null, []), null));
    }

    static SubmissionContext Open(SubmissionPipeline pipeline, IPAddress client) =>
        pipeline.Open("mcp-1", SubmissionChannel.Mcp, client, "mcp", identifyByNetwork: true);

    static SmtpPath Path(string address)
    {
        Assert.Equal(PathError.None, SmtpGrammar.TryParsePath($"<{address}>", "", allowNull: false, out var path));
        return path!;
    }

    /// <summary>A body of about <paramref name="bodyOctets"/> octets in lines of 76 (a longer line is refused as on the wire).</summary>
    static ReadOnlySequence<byte> Message(string from, int bodyOctets = 10) =>
        new(Encoding.ASCII.GetBytes($"From: <{from}>\r\nTo: <bob@example.net>\r\nSubject: limits\r\n\r\n{string.Join("\r\n", new string('x', bodyOctets).Chunk(76).Select(c => new string(c)))}\r\n"));

    static async Task<SmtpReply> SendAsync(SubmissionPipeline pipeline, SubmissionContext context, string from, int recipients = 1, int bodyOctets = 10) =>
        (await pipeline.SubmitAsync(context, Path(from), [.. Enumerable.Range(0, recipients).Select(i => Path($"bob{i}@example.net"))], Message(from, bodyOctets))).Reply;

    [Fact]
    public async Task The_fourth_message_in_a_minute_gets_450_4_7_1_while_the_other_tenant_still_sends_and_it_refills()
    {
        var pipeline = Pipeline();
        var a = Open(pipeline, TenantAClient);
        var b = Open(pipeline, TenantBClient);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(250, (await SendAsync(pipeline, a, "alice@tenant-a.example")).Code);
        }

        var refused = await SendAsync(pipeline, a, "alice@tenant-a.example");
        Assert.Equal(SmtpReplies.TenantMessageRate, refused);
        Assert.Equal("450 4.7.1 Message rate limit for this account reached, try again later", refused.ToString());
        Assert.Equal(250, (await SendAsync(pipeline, b, "bob@tenant-b.example")).Code);
        Assert.Equal(4, _spool.Commits.Count);

        _clock.Advance(TenantRateLimits.Window);
        Assert.Equal(250, (await SendAsync(pipeline, a, "alice@tenant-a.example")).Code);
    }

    [Fact]
    public async Task Recipients_over_the_rate_get_452_4_5_3_as_an_answer_not_an_error()
    {
        var pipeline = Pipeline();
        var a = Open(pipeline, TenantAClient);
        Assert.True(pipeline.Mail(a, Path("alice@tenant-a.example"), false, false).Accepted);

        for (var i = 0; i < 5; i++)
        {
            Assert.True(pipeline.Recipient(a, Path($"r{i}@example.net")).Accepted);
        }

        var verdict = pipeline.Recipient(a, Path("r5@example.net"));
        Assert.False(verdict.Accepted);
        Assert.False(verdict.CountsAsError);
        Assert.Equal("452 4.5.3 Recipient rate limit for this account reached, send the remaining recipients later", verdict.Reply.ToString());
        Assert.Equal(5, a.Recipients.Count);

        // A message built in code is refused whole when one of its recipients is over the rate; tenant-b is not affected.
        Assert.Equal(SmtpReplies.TenantRecipientRate, await SendAsync(pipeline, a, "alice@tenant-a.example"));
        Assert.Empty(_spool.Commits);
        var b = Open(pipeline, TenantBClient);
        Assert.Equal(250, (await SendAsync(pipeline, b, "bob@tenant-b.example", recipients: 6)).Code);
    }

    [Fact]
    public async Task Over_the_tenant_message_size_is_552_5_3_4_at_MAIL_SIZE_and_for_a_built_message_without_using_a_permit()
    {
        var pipeline = Pipeline();
        var a = Open(pipeline, TenantAClient);
        var mail = pipeline.Mail(a, Path("alice@tenant-a.example"), false, false, declaredSize: 2_001);
        Assert.False(mail.Accepted);
        Assert.Equal("552 5.3.4 Message size exceeds this account's maximum message size", mail.Reply.ToString());
        Assert.Equal(SmtpReplies.TenantMessageTooBig, await SendAsync(pipeline, a, "alice@tenant-a.example", bodyOctets: 3_000));

        // tenant-b has the gateway's size; and tenant-a's three messages of the minute are all still there.
        Assert.Equal(250, (await SendAsync(pipeline, Open(pipeline, TenantBClient), "bob@tenant-b.example", bodyOctets: 3_000)).Code);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(250, (await SendAsync(pipeline, a, "alice@tenant-a.example")).Code);
        }
    }

    [Fact]
    public void A_message_begun_for_a_tenant_carries_its_smaller_size_limit()
    {
        var pipeline = Pipeline();
        var a = Open(pipeline, TenantAClient);
        var inbound = Open(pipeline, Nobody);
        using var forA = pipeline.BeginMessage(a, out _);
        using var forInbound = pipeline.BeginMessage(inbound, out _);
        Assert.Equal(2_000, forA!.MaxSize);
        Assert.Equal(new LimitsConfig().MaxMessageSize, forInbound!.MaxSize);
        Assert.Equal(SmtpReplies.TenantMessageTooBig, pipeline.MessageTooBig(a, forA));
        Assert.Equal(SmtpReplies.MessageTooBig, pipeline.MessageTooBig(inbound, forInbound));
    }

    [Fact]
    public void Unauthenticated_inbound_mail_is_not_counted_against_the_tenant()
    {
        var pipeline = Pipeline();
        var inbound = Open(pipeline, Nobody);
        Assert.Null(inbound.Tenant);
        for (var i = 0; i < 10; i++)
        {
            Assert.True(pipeline.Mail(inbound, Path("someone@example.net"), false, false).Accepted);
            Assert.True(pipeline.Recipient(inbound, Path($"user{i}@tenant-a.example")).Accepted);
        }

        Assert.Equal(0, _rates.OpenSessions("tenant-a"));
        var a = Open(pipeline, TenantAClient);
        Assert.True(pipeline.Mail(a, Path("alice@tenant-a.example"), false, false).Accepted);
    }

    [Fact]
    public void Network_sessions_over_MaxSessions_are_refused_with_421_before_the_banner_and_a_closed_one_frees_its_slot()
    {
        var pipeline = Pipeline();
        var first = Open(pipeline, TenantAClient);
        var second = Open(pipeline, TenantAClient);
        Assert.Equal("tenant-a", second.Tenant?.TenantId);
        var third = Open(pipeline, TenantAClient);
        Assert.Null(third.Tenant);
        Assert.Equal("421 4.7.0 Too many concurrent sessions for this account, try again later", third.ConnectRefusal?.ToString());
        Assert.Null(Open(pipeline, TenantBClient).ConnectRefusal);

        SubmissionPipeline.Close(first);
        SubmissionPipeline.Close(first);
        SubmissionPipeline.Close(third);
        Assert.Equal(1, _rates.OpenSessions("tenant-a"));
        Assert.Equal("tenant-a", Open(pipeline, TenantAClient).Tenant?.TenantId);
        Assert.NotNull(Open(pipeline, TenantAClient).ConnectRefusal);
    }

    [Fact]
    public async Task AUTH_over_MaxSessions_is_a_454_4_7_0_without_a_strike_and_does_not_name_the_tenant()
    {
        var pipeline = Pipeline();
        var open = new List<SubmissionContext>();
        for (var i = 0; i < 2; i++)
        {
            var context = pipeline.Open($"s{i}", SubmissionChannel.Smtp, Nobody, "submission", identifyByNetwork: false);
            Assert.True((await pipeline.AuthenticateAsync(context, "PLAIN", "", "tenant-a", "token", CancellationToken.None)).Succeeded);
            open.Add(context);
        }

        // The throttle blocks after two failures: three refusals here would block the address if they were strikes.
        for (var i = 0; i < 3; i++)
        {
            var over = pipeline.Open("s-over", SubmissionChannel.Smtp, Nobody, "submission", identifyByNetwork: false);
            var verdict = await pipeline.AuthenticateAsync(over, "PLAIN", "", "tenant-a", "token", CancellationToken.None);
            Assert.False(verdict.Succeeded);
            Assert.True(verdict.Temporary);
            Assert.Equal("454 4.7.0 Too many concurrent sessions for this account, try again later", verdict.Refusal?.ToString());
            Assert.Null(over.Tenant);
            Assert.False(pipeline.AuthBlocked(over));
        }

        var other = pipeline.Open("s-b", SubmissionChannel.Smtp, Nobody, "submission", identifyByNetwork: false);
        Assert.True((await pipeline.AuthenticateAsync(other, "PLAIN", "", "tenant-b", "token", CancellationToken.None)).Succeeded);

        SubmissionPipeline.Close(open[0]);
        var again = pipeline.Open("s-again", SubmissionChannel.Smtp, Nobody, "submission", identifyByNetwork: false);
        Assert.True((await pipeline.AuthenticateAsync(again, "PLAIN", "", "tenant-a", "token", CancellationToken.None)).Succeeded);
    }

    [Fact]
    public async Task A_reload_that_changes_the_limit_applies_to_sessions_already_open()
    {
        var pipeline = Pipeline();
        var a = Open(pipeline, TenantAClient);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(250, (await SendAsync(pipeline, a, "alice@tenant-a.example")).Code);
        }

        Assert.Equal(SmtpReplies.TenantMessageRate, await SendAsync(pipeline, a, "alice@tenant-a.example"));

        _tenants = Tenants(new TenantLimitsConfig { MessagesPerMinute = 10, MaxMessageSize = 500 });
        Assert.Equal(250, (await SendAsync(pipeline, a, "alice@tenant-a.example")).Code);
        Assert.Equal(SmtpReplies.TenantMessageTooBig, await SendAsync(pipeline, a, "alice@tenant-a.example", bodyOctets: 600));
    }
}
