using System.Collections.Concurrent;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Bounces;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Envelope;
using SmtpGateway.Identity;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Spool;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Bounces;

/// <summary>Transport double: records what it was asked to deliver and answers 250 for every recipient.</summary>
public sealed class RecordingTransport : IDeliveryTransport
{
    public ConcurrentQueue<(string Id, string[] Recipients)> Calls { get; } = new();

    public Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken)
    {
        Calls.Enqueue((message.Envelope.Id, [.. recipients]));
        return Task.FromResult<IReadOnlyList<RecipientResult>>([.. recipients.Select(r => RecipientResult.FromReply(r, 250, "2.0.0 Ok " + r))]);
    }
}

/// <summary>
/// Issue #7 bounce attribution end to end below the listener: a report spooled for a tenant's return path goes through
/// <see cref="TenantRouter"/> to <see cref="BounceProcessor"/>, which names the original message and recipient, writes an
/// event and suppresses the address for that tenant only.
/// </summary>
public sealed class BounceProcessorTests : IDisposable
{
    const string BounceA = "bounces.tenant-a.example";

    readonly TempDirectory _dir = new();
    readonly FakeTimeProvider _time = new(new DateTimeOffset(2030, 1, 1, 12, 0, 0, TimeSpan.Zero));
    readonly InMemoryTenantKeys _hsm = new();
    readonly FileSpool _spool;
    readonly TenantSnapshot _tenants;
    readonly ReturnPath _returnPaths;
    readonly SuppressionList _suppression;
    readonly ConcurrentQueue<DeliveryEvent> _events = new();
    readonly RecordingTransport _outbound = new();
    readonly RecordingTransport _inbound = new();
    readonly TenantRouter _router;

    public BounceProcessorTests()
    {
        _spool = NewSpool(_dir.Combine("spool"), TimeProvider.System, fsync: false);
        var errors = new List<string>();
        _tenants = TenantSnapshot.Build(new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Domains = ["tenant-a.example"], BounceDomain = BounceA },
            ["tenant-b"] = new() { Domains = ["tenant-b.example"], BounceDomain = "bounces.tenant-b.example" },
        }, errors);
        Assert.Empty(errors);
        var data = _dir.Combine("data");
        _returnPaths = new ReturnPath(new VerpKeyStore(data, _time, _hsm));
        _suppression = new SuppressionList(data, _time);
        var reputation = new ReputationTracker(data, t => _tenants.Find(t)?.Reputation ?? new ReputationConfig(), _time);
        var processor = new BounceProcessor(_returnPaths, new TenantOutcomes(_suppression, reputation), _events.Enqueue, _time, NullLogger.Instance);
        _router = new TenantRouter(_outbound, _inbound, processor, () => _tenants);
    }

    public void Dispose()
    {
        _suppression.Dispose();
        _spool.Dispose();
        _dir.Dispose();
    }

    async Task<SpooledMessage> SpoolAsync(string content, string[] recipients, bool inbound, string tenant = "tenant-a", string mailFrom = "")
    {
        var envelope = new SpoolEnvelope(_spool.NewId(), tenant, mailFrom, recipients, _time.GetUtcNow(), "192.0.2.25", "relay", false, false, Inbound: inbound);
        await _spool.CommitAsync(envelope, Segmented(Encoding.UTF8.GetBytes(content.ReplaceLineEndings("\r\n")), 1000), CancellationToken.None);
        var message = await _spool.LoadAsync(envelope.Id, CancellationToken.None);
        Assert.NotNull(message);
        Assert.Equal(inbound, message.Envelope.Inbound);
        return message;
    }

    /// <summary>A Postfix-style RFC 3464 report: u@example.net does not exist (5.1.1), sent to <paramref name="returnPath"/>.</summary>
    static string Dsn(string returnPath, string recipient = "u@example.net") => $"""
        Return-Path: <>
        Received: by mail.example.net (Postfix)
        	id 4VfK2B0Z3Gz9sRl; Tue, 14 May 2030 10:15:02 +0000 (UTC)
        Date: Tue, 14 May 2030 10:15:02 +0000 (UTC)
        From: MAILER-DAEMON@mail.example.net (Mail Delivery System)
        Subject: Undelivered Mail Returned to Sender
        To: {returnPath}
        Auto-Submitted: auto-replied
        MIME-Version: 1.0
        Content-Type: multipart/report; report-type=delivery-status;
        	boundary="4VfK2B0Z3Gz9sRl.1715681702/mail.example.net"
        Message-Id: <20300514101502.4VfK2B0Z3Gz9sRl@mail.example.net>

        This is a MIME-encapsulated message.

        --4VfK2B0Z3Gz9sRl.1715681702/mail.example.net
        Content-Description: Notification
        Content-Type: text/plain; charset=us-ascii

        This is the mail system at host mail.example.net.

        I'm sorry to have to inform you that your message could not
        be delivered to one or more recipients. It's attached below.

        <{recipient}>: host mx1.example.net[203.0.113.25] said: 550 5.1.1
            <{recipient}>: Recipient address rejected: User unknown in virtual
            mailbox table (in reply to RCPT TO command)

        --4VfK2B0Z3Gz9sRl.1715681702/mail.example.net
        Content-Description: Delivery report
        Content-Type: message/delivery-status

        Reporting-MTA: dns; mail.example.net
        X-Postfix-Queue-ID: 4VfK2B0Z3Gz9sRl
        X-Postfix-Sender: rfc822; {returnPath}
        Arrival-Date: Tue, 14 May 2030 10:15:01 +0000 (UTC)

        Final-Recipient: rfc822; {recipient}
        Original-Recipient: rfc822;{recipient}
        Action: failed
        Status: 5.1.1
        Remote-MTA: dns; mx1.example.net
        Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected:
            User unknown in virtual mailbox table

        --4VfK2B0Z3Gz9sRl.1715681702/mail.example.net
        Content-Description: Undelivered Message Headers
        Content-Type: text/rfc822-headers

        Return-Path: <{returnPath}>
        Received: from gw.example (gw.example [192.0.2.10])
        	by mail.example.net (Postfix) with ESMTPS id 4VfK2B0Z3Gz9sRl
        	for <{recipient}>; Tue, 14 May 2030 10:15:01 +0000 (UTC)
        From: Newsletter <news@tenant-a.example>
        To: {recipient}
        Subject: May newsletter
        Message-ID: <m1@tenant-a.example>

        --4VfK2B0Z3Gz9sRl.1715681702/mail.example.net--
        """;

    /// <summary>The RFC 5965 appendix B example (as the parser tests use it), about u@example.net and sent to <paramref name="returnPath"/>.</summary>
    static string Arf(string returnPath) => BounceParserTests.ArfComplete
        .Replace("To: <abuse@example.net>", $"To: <{returnPath}>", StringComparison.Ordinal)
        .Replace("Original-Mail-From: <somespammer@example.net>", $"Original-Mail-From: <{returnPath}>", StringComparison.Ordinal)
        .Replace("Original-Rcpt-To: <user@example.com>", "Original-Rcpt-To: <u@example.net>", StringComparison.Ordinal)
        .Replace("Removal-Recipient: user@example.com", "Removal-Recipient: u@example.net", StringComparison.Ordinal);

    [Fact]
    public async Task A_dsn_at_a_return_path_is_attributed_and_suppresses_for_that_tenant_only()
    {
        var original = _spool.NewId();
        var returnPath = _returnPaths.For("tenant-a", BounceA, original, "u@example.net");
        string[] recipients = [returnPath, "info@tenant-a.example"];
        var report = await SpoolAsync(Dsn(returnPath), recipients, inbound: true);

        var results = await _router.DeliverAsync(report, recipients, CancellationToken.None);

        Assert.Equal(recipients, results.Select(r => r.Recipient));
        Assert.Equal(DeliveryOutcome.Delivered, results[0].Outcome);
        Assert.StartsWith("250 2.0.0 Report processed", results[0].Reply, StringComparison.Ordinal);
        Assert.Equal("250 2.0.0 Ok info@tenant-a.example", results[1].Reply); // from the inbound route

        // The report is not forwarded as mail, the other recipient is, and nothing leaves by the outbound transport.
        var call = Assert.Single(_inbound.Calls);
        Assert.Equal(report.Envelope.Id, call.Id);
        Assert.Equal(["info@tenant-a.example"], call.Recipients);
        Assert.Empty(_outbound.Calls);

        var e = Assert.Single(_events);
        Assert.Equal(("bounced", "report", original, "tenant-a", "u@example.net"), (e.Event, e.Source, e.Id, e.Tenant, e.Recipient));
        Assert.True(e.Suppressed);
        Assert.Equal(report.Envelope.Id, e.ReportId);
        Assert.Contains("5.1.1", e.Reply, StringComparison.Ordinal);
        Assert.Equal(_time.GetUtcNow(), e.Time);

        Assert.True(_suppression.Contains("tenant-a", "u@example.net"));
        Assert.False(_suppression.Contains("tenant-b", "u@example.net"));
        var entry = Assert.Single(_suppression.List("tenant-a"));
        Assert.Equal("hard-bounce", entry.Reason);
        Assert.Contains(original, entry.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_report_that_cannot_be_checked_while_the_hsm_token_is_down_is_deferred_not_dropped_as_forged()
    {
        var original = _spool.NewId();
        var returnPath = _returnPaths.For("tenant-a", BounceA, original, "u@example.net");
        var report = await SpoolAsync(Dsn(returnPath), [returnPath], inbound: true);

        // A restarted gateway (nothing remembered): the tag can only be checked in the token, which does not answer.
        var data = _dir.Combine("data");
        var outcomes = new TenantOutcomes(_suppression, new ReputationTracker(data, t => _tenants.Find(t)?.Reputation ?? new ReputationConfig(), _time));
        var restarted = new BounceProcessor(new ReturnPath(new VerpKeyStore(data, _time, _hsm)), outcomes, _events.Enqueue, _time, NullLogger.Instance);
        _hsm.Unavailable = true;

        var deferred = Assert.Single(await restarted.ProcessAsync(report, [returnPath], CancellationToken.None));
        Assert.Equal(DeliveryOutcome.Deferred, deferred.Outcome);
        Assert.StartsWith("451 4.3.0", deferred.Reply, StringComparison.Ordinal);
        Assert.Empty(_events);
        Assert.False(_suppression.Contains("tenant-a", "u@example.net"));

        // The retry after the token is back attributes it as usual.
        _hsm.Unavailable = false;
        var processed = Assert.Single(await restarted.ProcessAsync(report, [returnPath], CancellationToken.None));
        Assert.StartsWith("250 2.0.0 Report processed", processed.Reply, StringComparison.Ordinal);
        Assert.True(_suppression.Contains("tenant-a", "u@example.net"));
    }

    [Fact]
    public async Task A_return_path_upper_cased_by_a_remote_mta_is_still_attributed()
    {
        var original = _spool.NewId();
        var returnPath = _returnPaths.For("tenant-a", BounceA, original, "u@example.net").ToUpperInvariant();
        var report = await SpoolAsync(Dsn(returnPath), [returnPath], inbound: true);

        var result = Assert.Single(await _router.DeliverAsync(report, [returnPath], CancellationToken.None));

        Assert.StartsWith("250 2.0.0 Report processed", result.Reply, StringComparison.Ordinal);
        var e = Assert.Single(_events);
        Assert.Equal((original, "u@example.net", true), (e.Id, e.Recipient, e.Suppressed));
        Assert.Empty(_inbound.Calls);
    }

    [Fact]
    public async Task Outbound_mail_goes_only_to_the_outbound_transport_even_to_a_return_path_address()
    {
        var returnPath = _returnPaths.For("tenant-a", BounceA, _spool.NewId(), "u@example.net");
        string[] recipients = [returnPath, "someone@example.org"];
        var message = await SpoolAsync(Dsn(returnPath), recipients, inbound: false, mailFrom: "news@tenant-a.example");

        var results = await _router.DeliverAsync(message, recipients, CancellationToken.None);

        Assert.Equal(recipients, results.Select(r => r.Recipient));
        var call = Assert.Single(_outbound.Calls);
        Assert.Equal(recipients, call.Recipients);
        Assert.Empty(_inbound.Calls);
        Assert.Empty(_events);
        Assert.Empty(_suppression.List("tenant-a"));
    }

    [Fact]
    public async Task An_arf_report_is_a_complaint_and_suppresses()
    {
        var original = _spool.NewId();
        var returnPath = _returnPaths.For("tenant-a", BounceA, original, "u@example.net");
        var report = await SpoolAsync(Arf(returnPath), [returnPath], inbound: true);

        var result = Assert.Single(await _router.DeliverAsync(report, [returnPath], CancellationToken.None));

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        var e = Assert.Single(_events);
        Assert.Equal(("complained", "report", original, "u@example.net", "abuse"), (e.Event, e.Source, e.Id, e.Recipient, e.FeedbackType));
        Assert.True(e.Suppressed);
        var entry = Assert.Single(_suppression.List("tenant-a"));
        Assert.Equal(("u@example.net", "complaint"), (entry.Address, entry.Reason));
        Assert.Empty(_suppression.List("tenant-b"));
    }

    [Fact]
    public async Task A_report_whose_tag_names_another_recipient_is_recorded_without_recipient_and_suppresses_nothing()
    {
        var original = _spool.NewId();
        var returnPath = _returnPaths.For("tenant-a", BounceA, original, "other@example.net");
        var report = await SpoolAsync(Dsn(returnPath), [returnPath], inbound: true);

        var result = Assert.Single(await _router.DeliverAsync(report, [returnPath], CancellationToken.None));

        Assert.StartsWith("250 2.0.0 Report processed", result.Reply, StringComparison.Ordinal);
        // A report that does not name the recipient the tag was made for counts for nothing (no bounce, no suppression).
        var e = Assert.Single(_events);
        Assert.Equal(("unrecognized-report", original, ""), (e.Event, e.Id, e.Recipient));
        Assert.Null(e.Suppressed);
        Assert.False(_suppression.Contains("tenant-a", "u@example.net"));
        Assert.False(_suppression.Contains("tenant-a", "other@example.net"));
        Assert.Empty(_suppression.List("tenant-a"));
    }

    [Fact]
    public async Task One_report_sent_to_a_return_path_a_hundred_times_or_replayed_counts_once()
    {
        var original = _spool.NewId();
        var returnPath = _returnPaths.For("tenant-a", BounceA, original, "u@example.net");
        var many = Enumerable.Repeat(returnPath, 99).Append(returnPath.ToUpperInvariant()).ToArray();
        var report = await SpoolAsync(Dsn(returnPath), many, inbound: true);

        var results = await _router.DeliverAsync(report, many, CancellationToken.None);
        Assert.Equal(100, results.Count);
        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));

        var replay = await SpoolAsync(Dsn(returnPath), [returnPath], inbound: true);
        await _router.DeliverAsync(replay, [returnPath], CancellationToken.None);

        var e = Assert.Single(_events);
        Assert.Equal(("bounced", original, "u@example.net"), (e.Event, e.Id, e.Recipient));
    }

    [Fact]
    public async Task A_report_to_a_forged_or_retired_tag_is_discarded_without_attribution()
    {
        var returnPath = _returnPaths.For("tenant-a", BounceA, _spool.NewId(), "u@example.net");
        var at = returnPath.IndexOf('@', StringComparison.Ordinal);
        var forged = string.Concat(returnPath.AsSpan(0, at - 1), returnPath[at - 1] == 'a' ? "b" : "a", returnPath.AsSpan(at));
        var report = await SpoolAsync(Dsn(forged), [forged], inbound: true);

        var result = Assert.Single(await _router.DeliverAsync(report, [forged], CancellationToken.None));

        // Done with (no bounce of a bounce), but nothing attributed to anyone.
        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        Assert.Contains("discarded", result.Reply, StringComparison.OrdinalIgnoreCase);
        Assert.Empty(_events);
        Assert.Empty(_suppression.List("tenant-a"));
        Assert.Empty(_inbound.Calls);
    }

    [Fact]
    public async Task A_tenant_a_tag_received_for_tenant_b_is_not_attributed_to_either()
    {
        // Tenant B's key cannot verify a tag tenant A's key made, even at B's own bounce domain.
        var original = _spool.NewId();
        var tagA = _returnPaths.For("tenant-a", BounceA, original, "u@example.net");
        var atB = tagA[..tagA.IndexOf('@', StringComparison.Ordinal)] + "@bounces.tenant-b.example";
        var report = await SpoolAsync(Dsn(atB), [atB], inbound: true, tenant: "tenant-b");

        var result = Assert.Single(await _router.DeliverAsync(report, [atB], CancellationToken.None));

        Assert.Contains("discarded", result.Reply, StringComparison.OrdinalIgnoreCase);
        Assert.Empty(_events);
        Assert.Empty(_suppression.List("tenant-a"));
        Assert.Empty(_suppression.List("tenant-b"));
    }

    [Fact]
    public void Return_path_addresses_are_recognised_only_at_the_tenants_bounce_domain()
    {
        var a = _tenants.Find("tenant-a")!;

        Assert.True(BounceProcessor.IsReturnPathAddress(a, "b+anything@bounces.tenant-a.example"));
        Assert.True(BounceProcessor.IsReturnPathAddress(a, "B+ANYTHING@BOUNCES.TENANT-A.EXAMPLE"));
        Assert.False(BounceProcessor.IsReturnPathAddress(a, "postmaster@bounces.tenant-a.example"));
        Assert.False(BounceProcessor.IsReturnPathAddress(a, "b+anything@tenant-a.example"));
        Assert.False(BounceProcessor.IsReturnPathAddress(a, "b+anything@bounces.tenant-b.example"));
        Assert.False(BounceProcessor.IsReturnPathAddress(_tenants.Find("tenant-b")!, "b+anything@bounces.tenant-a.example"));
    }
}
