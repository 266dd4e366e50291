using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Spool;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Delivery;

/// <summary>DeliveryService with the event log and DSNs: what is recorded per recipient, and when a report is queued.</summary>
public sealed class DeliveryEventsTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly ManualTimeProvider _time = new();
    readonly FileSpool _spool;
    readonly ScriptedTransport _transport = new();
    readonly DeliveryEventLog _events;
    readonly DeliveryService _service;

    public DeliveryEventsTests()
    {
        _spool = NewSpool(_dir.Combine("spool"), _time);
        _events = new DeliveryEventLog(_dir.Combine("events"), NullLogger.Instance);
        var config = new DeliveryConfig { Retry = new RetryConfig { Schedule = [TimeSpan.FromMinutes(1)], Jitter = 0, MaxAge = TimeSpan.FromMinutes(10) } };
        _service = new DeliveryService(_spool, _transport, config, _time, NullLogger.Instance, () => 0.5, _events,
            new DsnGenerator(_spool, "gw.example", 65536, _time, NullLogger.Instance));
    }

    public void Dispose()
    {
        _service.Dispose();
        _spool.Dispose();
        _dir.Dispose();
    }

    async Task<string> CommitAsync(string[] recipients, string mailFrom = "sender@tenant-a.example")
    {
        var envelope = NewEnvelope(_spool, _time, recipients, mailFrom, "tenant-a");
        await _spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
        return envelope.Id;
    }

    List<JsonElement> Events() => File.ReadAllLines(_events.PathFor("tenant-a")).Select(l => JsonDocument.Parse(l).RootElement).ToList();

    IReadOnlyList<SpoolEntry> Dsns() => _spool.List(SpoolArea.Queue).Where(e => e.Envelope.MailFrom.Length == 0).ToList();

    [Fact]
    public async Task Each_recipient_gets_an_event_and_a_permanent_failure_queues_one_DSN_to_the_sender()
    {
        _transport.Reply = (rcpt, _) => rcpt.StartsWith("gone", StringComparison.Ordinal) ? "550 5.1.1 No such user" : rcpt.StartsWith("busy", StringComparison.Ordinal) ? "450 4.2.1 Busy" : "250 2.0.0 Ok";
        var id = await CommitAsync(["ok@example.net", "gone@example.net", "busy@example.net"]);

        await _service.ProcessAsync(id, CancellationToken.None);

        var events = Events();
        Assert.Equal(["delivered", "bounced", "deferred"], events.Select(e => e.GetProperty("event").GetString()));
        Assert.All(events, e => Assert.Equal(id, e.GetProperty("id").GetString()));
        Assert.All(events, e => Assert.Equal(1, e.GetProperty("attempt").GetInt32()));
        Assert.Equal("550 5.1.1 No such user", events[1].GetProperty("reply").GetString());
        Assert.True(events[2].TryGetProperty("nextAttemptAt", out _));
        var dsn = Assert.Single(Dsns());
        Assert.Equal(dsn.Id, events[1].GetProperty("dsnId").GetString());
        Assert.Equal(["sender@tenant-a.example"], dsn.Envelope.Recipients);
        Assert.Equal("tenant-a", dsn.Envelope.TenantId);
    }

    [Fact]
    public void Event_lines_keep_plus_signs_readable_and_escape_control_characters()
    {
        _events.Write(new DeliveryEvent
        {
            Time = new DateTimeOffset(2030, 1, 1, 12, 0, 0, TimeSpan.Zero), Event = "delivered", Id = "X", Tenant = "tenant-a", From = "a@tenant-a.example",
            Recipient = "r@example.net", Reply = "250 ok\r\nInjected: yes", Attempt = 1, ReturnPath = "b+tag@bounces.tenant-a.example",
        });

        var line = Assert.Single(File.ReadAllLines(_events.PathFor("tenant-a")));
        Assert.Contains("\"returnPath\":\"b+tag@bounces.tenant-a.example\"", line, StringComparison.Ordinal);
        Assert.Contains("+00:00", line, StringComparison.Ordinal);
        Assert.Contains("250 ok\\r\\nInjected: yes", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Expiry_is_an_expired_event_with_a_DSN()
    {
        _transport.Reply = (_, _) => "451 4.4.1 Cannot connect";
        var id = await CommitAsync(["slow@example.net"]);
        await _service.ProcessAsync(id, CancellationToken.None);
        Assert.Empty(Dsns());

        _time.Advance(TimeSpan.FromMinutes(11));
        await _service.ProcessAsync(id, CancellationToken.None);

        var events = Events();
        Assert.Equal(["deferred", "expired"], events.Select(e => e.GetProperty("event").GetString()));
        Assert.Equal(Assert.Single(Dsns()).Id, events[1].GetProperty("dsnId").GetString());
    }

    [Fact]
    public async Task A_bounce_of_a_null_sender_message_queues_no_DSN()
    {
        _transport.Reply = (_, _) => "550 5.1.1 No such user";
        var id = await CommitAsync(["gone@example.net"], mailFrom: "");

        await _service.ProcessAsync(id, CancellationToken.None);

        Assert.Equal("bounced", Assert.Single(Events()).GetProperty("event").GetString());
        Assert.Empty(Dsns());
        Assert.Single(_spool.List(SpoolArea.Failed));
    }

    sealed class FullSpool(IMessageSpool inner) : IMessageSpool
    {
        public string NewId() => inner.NewId();

        public Task CommitAsync(SpoolEnvelope envelope, MessageContent content, CancellationToken cancellationToken) =>
            throw new SpoolWriteException("disk full");
    }

    [Fact]
    public async Task When_the_DSN_cannot_be_stored_the_failure_stays_pending_and_delivered_recipients_stay_delivered()
    {
        using var service = new DeliveryService(_spool, _transport, new DeliveryConfig { Retry = new RetryConfig { Schedule = [TimeSpan.FromMinutes(1)], Jitter = 0 } },
            _time, NullLogger.Instance, () => 0.5, _events, new DsnGenerator(new FullSpool(_spool), "gw.example", 65536, _time, NullLogger.Instance));
        _transport.Reply = (rcpt, _) => rcpt.StartsWith("gone", StringComparison.Ordinal) ? "550 5.1.1 No such user" : "250 2.0.0 Ok";
        var id = await CommitAsync(["ok@example.net", "gone@example.net"]);

        await service.ProcessAsync(id, CancellationToken.None);

        var state = (await _spool.LoadAsync(id, CancellationToken.None))!.State;
        Assert.Equal([RecipientStatus.Delivered, RecipientStatus.Pending], state.Recipients.Select(r => r.Status));
        Assert.Equal("550 5.1.1 No such user", state.Recipients[1].LastReply);
        Assert.True(state.NextAttemptAt >= _time.GetUtcNow() + TimeSpan.FromMinutes(1));
        Assert.Equal(["delivered"], Events().Select(e => e.GetProperty("event").GetString()));

        // Next time only the failed recipient is attempted.
        _time.Advance(TimeSpan.FromMinutes(2));
        await service.ProcessAsync(id, CancellationToken.None);
        Assert.Equal(["gone@example.net"], _transport.Calls.Last());
    }
}
