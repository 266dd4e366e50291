using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Spool;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Delivery;

/// <summary>
/// One tenant's backlog does not starve the others: ready messages are served per tenant in turn with a per-tenant worker
/// share; workers that waited for a connection slot check the backoff again; a full backoff table evicts from the tenant
/// with the most entries.
/// </summary>
public sealed class DeliveryFairnessTests : IDisposable
{
    const string TenantA = "tenant-a";
    const string TenantB = "tenant-b";

    readonly TempDirectory _dir = new();
    readonly ManualTimeProvider _time = new();
    readonly FileSpool _spool;

    public DeliveryFairnessTests() => _spool = NewSpool(_dir.Combine("spool"), _time);

    public void Dispose()
    {
        _spool.Dispose();
        _dir.Dispose();
    }

    /// <summary>Tenant A's deliveries hang on a gate (a tarpit that would answer 250 in the end); everyone else's go through.</summary>
    sealed class TarpitForTenantA : IDeliveryTransport
    {
        int _active;
        int _maxActive;

        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int MaxActive => Volatile.Read(ref _maxActive);

        public async Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken)
        {
            if (message.Envelope.TenantId == TenantA)
            {
                var active = Interlocked.Increment(ref _active);
                InterlockedMax(ref _maxActive, active);
                try
                {
                    await Gate.Task.WaitAsync(cancellationToken);
                }
                finally
                {
                    Interlocked.Decrement(ref _active);
                }
            }

            return recipients.Select(r => RecipientResult.FromReply(r, 250, "2.0.0 Ok")).ToArray();
        }

        static void InterlockedMax(ref int target, int value)
        {
            int current;
            while (value > (current = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, current) != current)
            {
            }
        }
    }

    async Task<string> CommitAsync(string tenant)
    {
        var envelope = NewEnvelope(_spool, _time, ["rcpt@example.net"], $"sender@{tenant}.example", tenant);
        await _spool.CommitAsync(envelope, Segmented(SampleMessage()), CancellationToken.None);
        return envelope.Id;
    }

    [Fact]
    public async Task Tenant_Bs_message_is_delivered_while_tenant_As_backlog_is_stuck_at_a_slow_host()
    {
        var transport = new TarpitForTenantA();
        using var service = new DeliveryService(_spool, transport, new DeliveryConfig { Workers = 4 }, _time, NullLogger.Instance, () => 0.5);
        await _spool.RecoverAsync(CancellationToken.None);

        // A's backlog is ready first, B's one message behind all of it.
        for (var i = 0; i < 20; i++)
        {
            await CommitAsync(TenantA);
        }

        var ofB = await CommitAsync(TenantB);
        await service.StartAsync(CancellationToken.None);
        try
        {
            await Poll.UntilAsync(() => _spool.List(SpoolArea.Queue).All(e => e.Id != ofB));

            // At most half of the workers (the default share) are held by A; the rest stay free for everyone else.
            await Poll.UntilAsync(() => service.Ready.InFlight(TenantA) == 2);
            Assert.Equal(2, transport.MaxActive);
            Assert.Equal(18, service.Ready.ReadyCount(TenantA));
            Assert.Equal(20, _spool.List(SpoolArea.Queue).Count);

            transport.Gate.SetResult();
            await Poll.UntilAsync(() => _spool.List(SpoolArea.Queue).Count == 0);
            Assert.Equal(2, transport.MaxActive);
        }
        finally
        {
            await service.StopAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task Ready_ids_are_served_per_tenant_in_turn_and_in_order_within_a_tenant()
    {
        var queue = new FairReadyQueue(maxPerTenant: 10);
        foreach (var (id, tenant) in new[] { ("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c"), ("b2", "b") })
        {
            queue.Add(id, tenant);
        }

        var order = new List<string>();
        for (var i = 0; i < 6; i++)
        {
            order.Add((await queue.TakeAsync(CancellationToken.None)).Id);
        }

        Assert.Equal(["a1", "b1", "c1", "a2", "b2", "a3"], order);
    }

    [Fact]
    public async Task A_tenant_at_its_share_waits_while_others_are_served()
    {
        var queue = new FairReadyQueue(maxPerTenant: 2);
        foreach (var id in new[] { "a1", "a2", "a3", "a4" })
        {
            queue.Add(id, "a");
        }

        Assert.Equal("a1", (await queue.TakeAsync(CancellationToken.None)).Id);
        Assert.Equal("a2", (await queue.TakeAsync(CancellationToken.None)).Id);
        var third = queue.TakeAsync(CancellationToken.None);
        Assert.False(third.IsCompleted); // a is at its share: the worker is not given a third of a's messages

        queue.Add("b1", "b");
        Assert.Equal(("b1", "b"), await third.WaitAsync(TimeSpan.FromSeconds(10)));

        var fourth = queue.TakeAsync(CancellationToken.None);
        Assert.False(fourth.IsCompleted);
        queue.Done("a");
        Assert.Equal(("a3", "a"), await fourth.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(2, queue.InFlight("a"));
        Assert.Equal(1, queue.ReadyCount("a"));
    }

    [Fact]
    public async Task Workers_that_waited_for_the_slot_of_a_host_that_went_into_backoff_do_not_connect()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
        var egress = EgressDirectoryTests.NewDirectory("gw.test", null, new Dictionary<string, TenantConfig> { [TenantA] = new() });
        var delivery = new DeliveryConfig
        {
            Backoff = new DestinationBackoffConfig { FailuresBeforeBackoff = 1, InitialDelay = TimeSpan.FromMinutes(1), MaxDelay = TimeSpan.FromMinutes(10) },
        };
        var refuse = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var connects = 0;
        await using var engine = new OutboundDelivery(new SmarthostConfig { Host = "dead.example.net", Port = 25, MaxConnections = 1 }, new MxConfig(), null, egress,
            delivery, async (_, _, _, cancellationToken) =>
            {
                Interlocked.Increment(ref connects);
                await refuse.Task.WaitAsync(cancellationToken);
                throw new SmtpConnectException(DeliveryReplies.CannotConnect("dead.example.net:25", "ConnectionRefused"));
            }, time, NullLogger.Instance);

        var messages = new List<SpooledMessage>();
        for (var i = 0; i < 6; i++)
        {
            var id = await CommitAsync(TenantA);
            messages.Add((await _spool.LoadAsync(id, CancellationToken.None))!);
        }

        // Six concurrent attempts: the first holds the one slot and connects, the five others queue for the slot.
        var attempts = messages.Select(m => engine.DeliverAsync(m, m.Envelope.Recipients, CancellationToken.None)).ToArray();
        await Poll.UntilAsync(() => Volatile.Read(ref connects) == 1);
        refuse.SetResult();
        var results = (await Task.WhenAll(attempts).WaitAsync(TimeSpan.FromSeconds(10))).Select(r => Assert.Single(r)).ToArray();

        Assert.Equal(1, connects);
        Assert.Single(results, r => r.Reply.Contains("Cannot connect", StringComparison.Ordinal));
        Assert.Equal(5, results.Count(r => r.Outcome == DeliveryOutcome.Deferred && r.Reply.Contains("not tried", StringComparison.Ordinal)));
    }

    [Fact]
    public void After_a_backoff_ends_only_one_probe_goes_through()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
        var backoff = new DestinationBackoff(new DestinationBackoffConfig { FailuresBeforeBackoff = 1, InitialDelay = TimeSpan.FromMinutes(1), MaxDelay = TimeSpan.FromMinutes(10) },
            time, NullLogger.Instance);
        var a = new EgressIdentity(TenantA, null, "mx.example.net", 25);
        backoff.Failure(a);
        time.Advance(TimeSpan.FromMinutes(1));

        Assert.False(backoff.IsBackedOff(a, out _)); // looking does not claim the probe
        Assert.False(backoff.ClaimProbe(a, out _)); // the probe
        Assert.True(backoff.ClaimProbe(a, out var until)); // everyone else waits for its outcome ...
        Assert.True(backoff.IsBackedOff(a, out _));
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(1), until); // ... or at most InitialDelay

        backoff.Failure(a); // the probe failed: backed off for longer
        Assert.True(backoff.IsBackedOff(a, out until));
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(2), until);

        time.Advance(TimeSpan.FromMinutes(2));
        Assert.False(backoff.ClaimProbe(a, out _));
        backoff.Success(a); // the probe got through: cleared for everyone
        Assert.False(backoff.ClaimProbe(a, out _));
        Assert.False(backoff.ClaimProbe(a, out _));
    }

    [Fact]
    public void A_full_backoff_table_evicts_from_the_tenant_with_the_most_entries()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
        var backoff = new DestinationBackoff(new DestinationBackoffConfig { FailuresBeforeBackoff = 1, InitialDelay = TimeSpan.FromMinutes(1), MaxDelay = TimeSpan.FromMinutes(10), MaxEntries = 4 },
            time, NullLogger.Instance);
        var b = new EgressIdentity(TenantB, IPAddress.Parse("192.0.2.20"), "mx.example.org", 25);
        backoff.Failure(b); // B's entry is the oldest in the table
        time.Advance(TimeSpan.FromSeconds(1));

        // A floods the table with dead destinations: its own oldest entries make room, never B's.
        for (var i = 0; i < 10; i++)
        {
            backoff.Failure(new EgressIdentity(TenantA, null, $"mx{i}.dead.example", 25));
            time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.Equal(4, backoff.Count);
        Assert.Equal(7, backoff.Evicted);
        Assert.True(backoff.IsBackedOff(b, out _));
        Assert.True(backoff.IsBackedOff(new EgressIdentity(TenantA, null, "mx9.dead.example", 25), out _));
        Assert.False(backoff.IsBackedOff(new EgressIdentity(TenantA, null, "mx0.dead.example", 25), out _));
    }
}
