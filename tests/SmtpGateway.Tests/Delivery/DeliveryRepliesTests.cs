using System.Reflection;
using SmtpGateway.Delivery;
using SmtpGateway.Smtp;

namespace SmtpGateway.Tests.Delivery;

/// <summary>
/// The delivery section of the reply catalogue records exactly the strings the call sites wrote before it existed:
/// event logs, delivery state files and DSN Diagnostic-Codes compare them, so the expected values here are literals.
/// </summary>
public sealed class DeliveryRepliesTests
{
    const string Peer = "mx.example.net[192.0.2.1]:25";

    public static TheoryData<string, string, DeliveryOutcome> Pinned => new()
    {
        { "drop-failed", "451 4.3.0 Drop directory not writable", DeliveryOutcome.Deferred },
        { "dropped", "250 2.0.0 Written to drop directory", DeliveryOutcome.Delivered },
        { "inbound-drop-failed", "451 4.3.0 Inbound drop directory not writable", DeliveryOutcome.Deferred },
        { "nxdomain", "550 5.4.4 Domain nx.example does not exist (NXDOMAIN)", DeliveryOutcome.Bounced },
        { "host-nxdomain", "550 5.4.4 Host mx.nx.example does not exist (NXDOMAIN)", DeliveryOutcome.Bounced },
        { "null-mx", "556 5.1.10 Domain nullmx.example does not accept mail (null MX, RFC 7505)", DeliveryOutcome.Bounced },
        { "dns-timeout", "451 4.4.3 DNS lookup of MX for slowdns.example failed (timeout)", DeliveryOutcome.Deferred },
        { "aaaa-servfail", "451 4.4.3 DNS lookup of AAAA for mx.example.net failed (ServerFailure)", DeliveryOutcome.Deferred },
        { "webhook-timeout", "451 4.4.1 Webhook did not answer within 2.5s", DeliveryOutcome.Deferred },
        { "webhook-timeout-rounded", "451 4.4.1 Webhook did not answer within 0.123s", DeliveryOutcome.Deferred },
        { "webhook-2xx", "250 2.0.0 Webhook answered 204", DeliveryOutcome.Delivered },
        { "webhook-5xx", "451 4.4.1 Webhook answered 503", DeliveryOutcome.Deferred },
        { "no-greeting", $"451 4.4.1 No greeting from {Peer} within 30s", DeliveryOutcome.Deferred },
        { "starttls", $"451 4.7.10 {Peer} does not offer STARTTLS, which the TLS policy (Required) requires", DeliveryOutcome.Deferred },
        { "backed-off", "451 4.4.1 mx.example.net:25 not tried: it kept failing; next try after 2025-01-02T03:04:05Z", DeliveryOutcome.Deferred },
        { "no-result-from-transport", "451 4.3.0 No result from transport", DeliveryOutcome.Deferred },
        { "report-discarded", "250 2.0.0 Report discarded: return path no longer valid", DeliveryOutcome.Delivered },
        { "bad-sender", "553 5.1.7 Bad sender address syntax", DeliveryOutcome.Bounced },
        { "connection-lost", "451 4.4.2 Connection to next hop failed (IOException: Connection reset by peer)", DeliveryOutcome.Deferred },
        { "auth-required-empty", "530 5.7.0", DeliveryOutcome.Bounced },

        // A refused or missing upstream credential defers, even when the smarthost said 5yz.
        { "upstream-535", $"454 4.7.0 {Peer} refused upstream credential relay#v2 (535 5.7.8 Authentication credentials invalid)", DeliveryOutcome.Deferred },
        { "upstream-454", $"454 4.7.0 {Peer} refused upstream credential relay#v2 (454 4.7.0 Temporary authentication failure)", DeliveryOutcome.Deferred },
        { "upstream-432", $"432 4.7.12 {Peer} refused upstream credential relay#v2 (432 4.7.12 A password transition is needed)", DeliveryOutcome.Deferred },
        { "upstream-no-code", $"454 4.7.0 {Peer} refused upstream credential relay#v2 (Mechanism too weak)", DeliveryOutcome.Deferred },
        { "upstream-unavailable", "454 4.7.0 Upstream credential relay#v1 unavailable (HSM token not present)", DeliveryOutcome.Deferred },
        { "upstream-missing", "454 4.7.0 Upstream credential relay has no usable version in the vault", DeliveryOutcome.Deferred },
        { "upstream-not-offered", $"454 4.7.0 {Peer} does not offer AUTH XOAUTH2", DeliveryOutcome.Deferred },
        { "upstream-needs-tls", $"454 4.7.11 {Peer}: session is not encrypted; the credential is not sent", DeliveryOutcome.Deferred },
    };

    static SmtpReply Reply(string name) => name switch
    {
        "drop-failed" => DeliveryReplies.DropFailed,
        "dropped" => DeliveryReplies.Dropped,
        "inbound-drop-failed" => DeliveryReplies.InboundDropFailed,
        "nxdomain" => DeliveryReplies.DomainNotFound("nx.example"),
        "host-nxdomain" => DeliveryReplies.HostNotFound("mx.nx.example"),
        "null-mx" => DeliveryReplies.NullMx("nullmx.example"),
        "dns-timeout" => DeliveryReplies.DnsLookupFailed("slowdns.example", "timeout"),
        "aaaa-servfail" => DeliveryReplies.AddressLookupFailed("AAAA", "mx.example.net", "ServerFailure"),
        "webhook-timeout" => DeliveryReplies.WebhookTimeout(TimeSpan.FromSeconds(2.5)),
        "webhook-timeout-rounded" => DeliveryReplies.WebhookTimeout(TimeSpan.FromMilliseconds(123.4)),
        "webhook-2xx" => DeliveryReplies.WebhookAccepted(204),
        "webhook-5xx" => DeliveryReplies.WebhookNotAccepted(503),
        "no-greeting" => DeliveryReplies.NoGreeting(Peer, TimeSpan.FromSeconds(30)),
        "starttls" => DeliveryReplies.StartTlsNotOffered(Peer, "Required"),
        "backed-off" => DeliveryReplies.HopBackedOff("mx.example.net", 25, new DateTimeOffset(2025, 1, 2, 3, 4, 5, TimeSpan.Zero)),
        "no-result-from-transport" => DeliveryReplies.NoResultFromTransport,
        "report-discarded" => DeliveryReplies.ReportDiscarded,
        "bad-sender" => DeliveryReplies.BadSenderSyntax,

        // A multi-line exception message is flattened into one line, as before.
        "connection-lost" => DeliveryReplies.ConnectionLost("IOException", "Connection reset\r\n by peer"),
        "auth-required-empty" => DeliveryReplies.AuthenticationRequired(""),
        "upstream-535" => DeliveryReplies.UpstreamAuthRefused(Peer, "relay#v2", 535, "5.7.8 Authentication credentials invalid"),
        "upstream-454" => DeliveryReplies.UpstreamAuthRefused(Peer, "relay#v2", 454, "4.7.0 Temporary authentication failure"),
        "upstream-432" => DeliveryReplies.UpstreamAuthRefused(Peer, "relay#v2", 432, "4.7.12 A password transition is needed"),
        "upstream-no-code" => DeliveryReplies.UpstreamAuthRefused(Peer, "relay#v2", 0, "Mechanism too weak"),
        "upstream-unavailable" => DeliveryReplies.UpstreamCredentialUnavailable("relay#v1", "HSM token not present"),
        "upstream-missing" => DeliveryReplies.UpstreamCredentialMissing("relay"),
        "upstream-not-offered" => DeliveryReplies.UpstreamAuthNotOffered(Peer, "XOAUTH2"),
        "upstream-needs-tls" => DeliveryReplies.UpstreamAuthNeedsTls(Peer),
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, null),
    };

    [Theory]
    [MemberData(nameof(Pinned))]
    public void Recorded_reply_is_unchanged(string name, string expected, DeliveryOutcome outcome)
    {
        var reply = Reply(name);
        var result = RecipientResult.FromReply("rcpt@example.net", reply);

        Assert.Equal(expected, result.Reply);
        Assert.Equal(outcome, result.Outcome);
        Assert.Equal(expected, DeliveryOutcomes.FormatReply(reply));

        // Through the catalogue or through the old (code, "enhanced text") form: the same result.
        Assert.Equal(RecipientResult.FromReply("rcpt@example.net", reply.Code, reply.Enhanced + " " + reply.Text), result);
    }

    [Fact]
    public void Connect_exception_keeps_code_text_and_message()
    {
        var ex = new SmtpConnectException(DeliveryReplies.CannotConnect(Peer, "ConnectionRefused"));

        Assert.Equal(451, ex.Code);
        Assert.Equal($"4.4.1 Cannot connect to {Peer} (ConnectionRefused)", ex.Text);
        Assert.Equal($"451 4.4.1 Cannot connect to {Peer} (ConnectionRefused)", ex.Message);
        Assert.Equal($"451 4.4.1 Cannot connect to {Peer} (ConnectionRefused)", RecipientResult.FromReply("rcpt@example.net", ex.Reply).Reply);
    }

    [Fact]
    public void Mx_route_failure_keeps_code_and_text()
    {
        var route = MxRoute.Fail(DeliveryReplies.DomainNotFound("nx.example"));

        Assert.True(route.Failed);
        Assert.Equal(550, route.FailureCode);
        Assert.Equal("5.4.4 Domain nx.example does not exist (NXDOMAIN)", route.FailureText);
        Assert.Equal(MxRoute.Fail(550, "5.4.4 Domain nx.example does not exist (NXDOMAIN)").FailureText, route.FailureText);
    }

    [Fact]
    public void Fixed_replies_have_an_enhanced_code_of_their_class()
    {
        var fields = typeof(DeliveryReplies).GetFields(BindingFlags.Public | BindingFlags.Static);
        Assert.NotEmpty(fields);
        foreach (var field in fields)
        {
            var reply = Assert.IsType<SmtpReply>(field.GetValue(null));
            Assert.NotNull(reply.Enhanced);
            Assert.StartsWith($"{reply.Code / 100}.", reply.Enhanced, StringComparison.Ordinal);
            Assert.DoesNotContain('\n', reply.Text);
        }
    }
}
