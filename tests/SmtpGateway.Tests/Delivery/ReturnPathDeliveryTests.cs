using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Spool;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Delivery;

/// <summary>
/// Issue #7 outbound VERP: a return path names one recipient, so recipients with different return paths go in separate
/// transactions, one after another on the same pooled connection; results stay in recipient order.
/// </summary>
public sealed class ReturnPathDeliveryTests : IAsyncLifetime
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

    SmarthostTransport NewTransport(ReturnPathResolver? returnPaths)
    {
        var transport = new SmarthostTransport(new SmarthostConfig
        {
            Host = "127.0.0.1",
            Port = _server.Port,
            AllowPrivateDestinations = true,
            StartTls = StartTlsMode.None,
            MaxConnections = 4,
            MaxMessagesPerConnection = 100,
            IdleTimeout = TimeSpan.FromSeconds(30),
            ConnectTimeout = TimeSpan.FromSeconds(10),
            HeloName = "gw.test",
        }, "smtpgw.localhost", TimeProvider.System, NullLogger.Instance);
        transport.Engine.ReturnPaths = returnPaths;
        return transport;
    }

    async Task<SpooledMessage> SpoolAsync(byte[] bytes, string[] recipients)
    {
        var envelope = NewEnvelope(_spool, TimeProvider.System, recipients, "news@tenant-a.example", "tenant-a");
        await _spool.CommitAsync(envelope, Segmented(bytes, 1000), CancellationToken.None);
        return (await _spool.LoadAsync(envelope.Id, CancellationToken.None))!;
    }

    /// <summary>A stand-in for ReturnPath.For: one address per (message, recipient).</summary>
    static string Verp(SpoolEnvelope envelope, string recipient) =>
        $"b+{envelope.Id.ToLowerInvariant()}.{recipient[..recipient.IndexOf('@', StringComparison.Ordinal)]}@bounces.tenant-a.example";

    [Fact]
    public async Task Each_recipient_gets_its_own_transaction_with_its_own_return_path_over_one_connection()
    {
        var calls = new List<(string Id, string Recipient)>();
        await using var transport = NewTransport((envelope, recipient) =>
        {
            calls.Add((envelope.Id, recipient));
            return Verp(envelope, recipient);
        });
        var bytes = SampleMessage();
        string[] recipients = ["one@example.net", "two@example.org", "three@example.net"];
        var message = await SpoolAsync(bytes, recipients);

        var results = await transport.DeliverAsync(message, recipients, CancellationToken.None);

        Assert.Equal(recipients, results.Select(r => r.Recipient));
        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));
        var received = _server.Messages.ToArray();
        Assert.Equal(3, received.Length);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(Verp(message.Envelope, recipients[i]), received[i].MailFrom);
            Assert.Equal([recipients[i]], received[i].Recipients);
            Assert.Equal(bytes, received[i].Data);
            Assert.Equal(1, received[i].Connection);
        }

        Assert.Equal(1, _server.Connections);
        Assert.Equal(3, _server.Commands.Count(c => c.StartsWith("MAIL FROM:", StringComparison.OrdinalIgnoreCase)));
        Assert.Equal(recipients, calls.Select(c => c.Recipient).Distinct());
        Assert.All(calls, c => Assert.Equal(message.Envelope.Id, c.Id));
    }

    [Fact]
    public async Task A_return_path_that_cannot_be_made_defers_that_recipient_and_never_sends_the_clients_sender()
    {
        await using var transport = NewTransport((envelope, rcpt) =>
            rcpt.StartsWith("broken", StringComparison.Ordinal) ? throw new IOException("key file damaged") : Verp(envelope, rcpt));
        string[] recipients = ["broken@example.net", "ok@example.net"];
        var message = await SpoolAsync(SampleMessage(), recipients);

        var results = await transport.DeliverAsync(message, recipients, CancellationToken.None);

        Assert.Equal([DeliveryOutcome.Deferred, DeliveryOutcome.Delivered], results.Select(r => r.Outcome));
        Assert.Equal("451 4.3.0 Return path unavailable (local configuration)", results[0].Reply);
        var sent = Assert.Single(_server.Messages);
        Assert.Equal(["ok@example.net"], sent.Recipients);
        Assert.DoesNotContain(_server.Commands, c => c.Contains("news@tenant-a.example", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public async Task A_tenant_hsm_token_that_cannot_make_return_paths_defers_the_recipients()
    {
        var hsm = new InMemoryTenantKeys();
        var returnPaths = new SmtpGateway.Envelope.ReturnPath(new SmtpGateway.Envelope.VerpKeyStore(_dir.Combine("data"), TimeProvider.System, hsm));
        await using var transport = NewTransport((envelope, rcpt) => returnPaths.For(envelope.TenantId!, "bounces.tenant-a.example", envelope.Id, rcpt));
        string[] recipients = ["a@example.net", "b@example.net"];
        var message = await SpoolAsync(SampleMessage(), recipients);
        hsm.Unavailable = true;

        var results = await transport.DeliverAsync(message, recipients, CancellationToken.None);

        Assert.All(results, r => Assert.Equal((DeliveryOutcome.Deferred, "451 4.3.0 Return path unavailable (local configuration)"), (r.Outcome, r.Reply)));
        Assert.Empty(_server.Messages);
        Assert.DoesNotContain(_server.Commands, c => c.Contains("news@tenant-a.example", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public async Task Results_stay_in_recipient_order_when_one_transaction_is_refused()
    {
        _server.RcptReply = rcpt => rcpt == "two@example.org" ? "550 5.1.1 No such user" : "250 2.1.5 Ok";
        await using var transport = NewTransport(Verp);
        string[] recipients = ["one@example.net", "two@example.org", "three@example.net"];
        var message = await SpoolAsync(SampleMessage(), recipients);

        var results = await transport.DeliverAsync(message, recipients, CancellationToken.None);

        Assert.Equal(recipients, results.Select(r => r.Recipient));
        Assert.Equal([DeliveryOutcome.Delivered, DeliveryOutcome.Bounced, DeliveryOutcome.Delivered], results.Select(r => r.Outcome));
        Assert.StartsWith("550 5.1.1", results[1].Reply, StringComparison.Ordinal);

        // Each result names the reverse-path its transaction used (the event log records it without recomputing).
        Assert.Equal(recipients.Select(r => Verp(message.Envelope, r)), results.Select(r => r.ReturnPath));
        Assert.Equal(["one@example.net", "three@example.net"], _server.Messages.SelectMany(m => m.Recipients));
        Assert.Equal([Verp(message.Envelope, "one@example.net"), Verp(message.Envelope, "three@example.net")], _server.Messages.Select(m => m.MailFrom));
        Assert.Equal(1, _server.Connections);
    }

    [Fact]
    public async Task Recipients_with_the_same_return_path_share_one_transaction()
    {
        // E.g. a resolver that falls back to the envelope sender for some recipients.
        await using var transport = NewTransport((envelope, recipient) =>
            recipient.EndsWith("@example.net", StringComparison.Ordinal) ? envelope.MailFrom : Verp(envelope, recipient));
        string[] recipients = ["one@example.net", "two@example.org", "three@example.net"];
        var message = await SpoolAsync(SampleMessage(), recipients);

        var results = await transport.DeliverAsync(message, recipients, CancellationToken.None);

        Assert.Equal(recipients, results.Select(r => r.Recipient));
        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));
        var received = _server.Messages.ToArray();
        Assert.Equal(2, received.Length);
        Assert.Equal("news@tenant-a.example", received[0].MailFrom);
        Assert.Equal(["one@example.net", "three@example.net"], received[0].Recipients);
        Assert.Equal(Verp(message.Envelope, "two@example.org"), received[1].MailFrom);
        Assert.Equal(["two@example.org"], received[1].Recipients);
        Assert.Equal(1, _server.Connections);
    }

    [Fact]
    public async Task Without_a_resolver_one_transaction_carries_every_recipient_with_the_envelope_sender()
    {
        await using var transport = NewTransport(null);
        string[] recipients = ["one@example.net", "two@example.org", "three@example.net"];
        var bytes = Encoding.ASCII.GetBytes("From: news@tenant-a.example\r\nSubject: x\r\n\r\nbody\r\n");
        var message = await SpoolAsync(bytes, recipients);

        var results = await transport.DeliverAsync(message, recipients, CancellationToken.None);

        Assert.Equal(recipients, results.Select(r => r.Recipient));
        Assert.All(results, r => Assert.Equal(DeliveryOutcome.Delivered, r.Outcome));
        var received = Assert.Single(_server.Messages);
        Assert.Equal("news@tenant-a.example", received.MailFrom);
        Assert.Equal(recipients, received.Recipients);
        Assert.Equal(bytes, received.Data);
    }
}
