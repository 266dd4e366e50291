using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using MimeKit;
using SmtpGateway.Delivery;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Spool;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Delivery;

public sealed class DsnMessageTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly FileSpool _spool;

    public DsnMessageTests() => _spool = NewSpool(_dir.Combine("spool"), TimeProvider.System, fsync: false);

    public void Dispose()
    {
        _spool.Dispose();
        _dir.Dispose();
    }

    async Task<SpooledMessage> SpoolAsync(string mailFrom, string[] recipients, string tenant = "tenant-a", bool inbound = false)
    {
        var envelope = NewEnvelope(_spool, TimeProvider.System, recipients, mailFrom, tenant) with { Inbound = inbound };
        await _spool.CommitAsync(envelope, Segmented(Encoding.ASCII.GetBytes(
            "From: <sender@tenant-a.example>\r\nTo: <x@example.net>\r\nSubject: original subject\r\nMessage-ID: <orig@tenant-a.example>\r\n\r\nsecret body text\r\n"), 1000),
            CancellationToken.None);
        while (_spool.Ready.TryRead(out _))
        {
        }

        return (await _spool.LoadAsync(envelope.Id, CancellationToken.None))!;
    }

    [Fact]
    public async Task DSN_is_a_multipart_report_to_the_sender_from_the_null_sender_in_the_same_tenant()
    {
        var original = await SpoolAsync("sender@tenant-a.example", ["gone@example.net", "full@example.org"]);
        var generator = new DsnGenerator(_spool, "gw.example", 65536, TimeProvider.System, NullLogger.Instance);

        var id = await generator.QueueAsync(original,
        [
            new DsnRecipient("gone@example.net", "550 5.1.1 No such user", "mx.example.net[192.0.2.1]:25", Expired: false),
            new DsnRecipient("full@example.org", "452 4.2.2 Mailbox full", "mx.example.org[192.0.2.2]:25", Expired: true),
        ], CancellationToken.None);

        var dsn = (await _spool.LoadAsync(id!, CancellationToken.None))!;
        Assert.Equal("", dsn.Envelope.MailFrom);
        Assert.Equal(["sender@tenant-a.example"], dsn.Envelope.Recipients);
        Assert.Equal("tenant-a", dsn.Envelope.TenantId);

        using var content = dsn.OpenContent();
        var mime = await MimeMessage.LoadAsync(content);
        var report = Assert.IsType<MultipartReport>(mime.Body);
        Assert.Equal("delivery-status", report.ReportType);
        Assert.Equal("auto-replied", mime.Headers["Auto-Submitted"]);
        Assert.Equal("MAILER-DAEMON@gw.example", ((MailboxAddress)mime.From[0]).Address);
        var status = Assert.IsType<MessageDeliveryStatus>(report[1]);
        Assert.Equal("dns; gw.example", status.StatusGroups[0]["Reporting-MTA"]);
        Assert.Equal(2, status.StatusGroups.Count - 1);
        Assert.Equal("rfc822; gone@example.net", status.StatusGroups[1]["Final-Recipient"]);
        Assert.Equal("failed", status.StatusGroups[1]["Action"]);
        Assert.Equal("5.1.1", status.StatusGroups[1]["Status"]);
        Assert.Equal("dns; mx.example.net", status.StatusGroups[1]["Remote-MTA"]);
        Assert.Equal("smtp; 550 5.1.1 No such user", status.StatusGroups[1]["Diagnostic-Code"]);
        Assert.Equal("4.4.7", status.StatusGroups[2]["Status"]);
        var headers = Assert.IsType<TextRfc822Headers>(report[2]);
        Assert.Equal("original subject", headers.Message?.Subject);
        Assert.DoesNotContain("secret body text", mime.ToString());
    }

    [Fact]
    public async Task No_DSN_for_a_message_from_the_null_sender()
    {
        var original = await SpoolAsync("", ["gone@example.net"]);
        var generator = new DsnGenerator(_spool, "gw.example", 65536, TimeProvider.System, NullLogger.Instance);

        var id = await generator.QueueAsync(original, [new DsnRecipient("gone@example.net", "550 5.1.1 No such user", null, false)], CancellationToken.None);

        Assert.Null(id);
        Assert.Single(_spool.List(SpoolArea.Queue));
    }

    [Fact]
    public async Task No_DSN_for_inbound_mail_whose_sender_nobody_verified()
    {
        // Unauthenticated mail for a tenant domain: a DSN would be backscatter in the tenant's name.
        var original = await SpoolAsync("forged@victim.example", ["bob@tenant-a.example"], inbound: true);
        Assert.True(original.Envelope.Inbound); // the flag survives the spool file
        var generator = new DsnGenerator(_spool, "gw.example", 65536, TimeProvider.System, NullLogger.Instance);
        Assert.Null(await generator.QueueAsync(original, [new DsnRecipient("bob@tenant-a.example", "550 5.1.1 No such user", null, false)], CancellationToken.None));
        Assert.Single(_spool.List(SpoolArea.Queue));
    }

    [Theory]
    [InlineData("550 5.1.1 bad\r\nBcc: victim@example.com\r\n\r\n--boundary\r\nContent-Type: text/html")]
    [InlineData("550 5.1.1 bad\nX-Injected: yes")]
    [InlineData("550 5.1.1 bad\u0000\u001b[31m\u007f\u00e9 end")]
    public void Remote_reply_cannot_inject_header_fields_or_parts(string reply)
    {
        var envelope = new SpoolEnvelope("ID1", "tenant-a", "sender@tenant-a.example", ["x@example.net"], DateTimeOffset.UtcNow, "127.0.0.1", "relay", false, false);

        var bytes = DsnGenerator.Build("DSN1", "gw.example", envelope, [new DsnRecipient("x@example.net", reply, "evil\r\nX-Host: 1[1.2.3.4]:25", false)], [],
            DateTimeOffset.UtcNow);

        var text = Encoding.ASCII.GetString(bytes);
        var lines = text.Split("\r\n");
        Assert.DoesNotContain(lines, l => l.StartsWith("Bcc:", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(lines, l => l.StartsWith("X-Injected:", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(lines, l => l.StartsWith("X-Host:", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(lines, l => l.StartsWith("--boundary", StringComparison.Ordinal));
        Assert.DoesNotContain(lines, l => l.StartsWith("Content-Type: text/html", StringComparison.Ordinal));
        var diagnostic = Assert.Single(lines, l => l.StartsWith("Diagnostic-Code: smtp; ", StringComparison.Ordinal));
        Assert.StartsWith("Diagnostic-Code: smtp; 550 5.1.1 bad", diagnostic);
        Assert.All(bytes, b => Assert.True(b is (>= 0x20 and < 0x7f) or (byte)'\r' or (byte)'\n' or (byte)'\t', $"byte {b:X2}"));
    }

    [Theory]
    [InlineData("550 5.1.1 No such user", false, "5.1.1")]
    [InlineData("554 Transaction failed", false, "5.0.0")]
    [InlineData("450 4.2.1 Busy", true, "4.4.7")]
    [InlineData("556 5.1.10 null MX", false, "5.1.10")]
    public void Status_comes_from_the_enhanced_code_or_the_reply_class(string reply, bool expired, string status) =>
        Assert.Equal(status, DsnGenerator.Status(new DsnRecipient("x@example.net", reply, null, expired)));
}
