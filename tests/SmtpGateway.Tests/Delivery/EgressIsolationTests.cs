using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Delivery;

/// <summary>
/// Issue 12 item 2: backoff and the per-destination connection cap are per egress identity (tenant, source address,
/// host, port), so one tenant's trouble at a host reaches no other tenant; backoff entries expire and the table is bounded.
/// </summary>
public sealed class EgressIsolationTests
{
    static readonly IPAddress SourceA1 = IPAddress.Parse("192.0.2.10");
    static readonly IPAddress SourceA2 = IPAddress.Parse("192.0.2.11");
    static readonly EgressIdentity A = new("tenant-a", SourceA1, "mx.example.net", 25);
    static readonly EgressIdentity B = new("tenant-b", SourceA1, "mx.example.net", 25);

    readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
    readonly CapturingLogger _log = new();

    DestinationBackoff NewBackoff(int failuresBeforeBackoff = 1, int maxEntries = 10_000) => new(new DestinationBackoffConfig
    {
        FailuresBeforeBackoff = failuresBeforeBackoff,
        InitialDelay = TimeSpan.FromMinutes(1),
        MaxDelay = TimeSpan.FromMinutes(10),
        MaxEntries = maxEntries,
    }, _time, _log);

    [Fact]
    public void A_tenants_failures_back_off_its_own_identity_only()
    {
        var backoff = NewBackoff();

        backoff.Failure(A);

        Assert.True(backoff.IsBackedOff(A, out var until));
        Assert.Equal(_time.GetUtcNow() + TimeSpan.FromMinutes(1), until);
        Assert.Contains(_log.Lines, l => l.StartsWith("Backoff for tenant tenant-a to mx.example.net:25 (source 192.0.2.10): 1 failure(s)", StringComparison.Ordinal));
        Assert.False(backoff.IsBackedOff(B, out _)); // another tenant, same host, port and source address
        Assert.False(backoff.IsBackedOff(A with { SourceAddress = SourceA2 }, out _)); // same tenant, other source address
        Assert.False(backoff.IsBackedOff(A with { SourceAddress = null }, out _));
        Assert.False(backoff.IsBackedOff(A with { Port = 587 }, out _));
        Assert.False(backoff.IsBackedOff(A with { Host = "mx2.example.net" }, out _));
    }

    [Fact]
    public void Success_of_one_identity_leaves_the_others_backed_off()
    {
        var backoff = NewBackoff();
        backoff.Failure(A);
        backoff.Failure(B);

        backoff.Success(B);

        Assert.True(backoff.IsBackedOff(A, out _));
        Assert.False(backoff.IsBackedOff(B, out _));
        Assert.Equal(1, backoff.Count);
    }

    [Fact]
    public void Backoff_doubles_up_to_MaxDelay()
    {
        var backoff = NewBackoff();
        var delays = new List<TimeSpan>();
        for (var i = 0; i < 6; i++)
        {
            backoff.Failure(A);
            Assert.True(backoff.IsBackedOff(A, out var until));
            delays.Add(until - _time.GetUtcNow());
        }

        Assert.Equal([1, 2, 4, 8, 10, 10], delays.Select(d => d.TotalMinutes));
    }

    [Fact]
    public void An_entry_is_forgotten_MaxDelay_after_its_backoff_ended_without_a_new_failure()
    {
        var backoff = NewBackoff();
        backoff.Failure(A);
        backoff.Failure(A); // 2 minutes

        _time.Advance(TimeSpan.FromMinutes(2));
        Assert.False(backoff.IsBackedOff(A, out _)); // ended: a probe may go
        Assert.Equal(1, backoff.Count); // but remembered: a failing probe doubles on
        _time.Advance(TimeSpan.FromMinutes(10) - TimeSpan.FromSeconds(1));
        Assert.False(backoff.IsBackedOff(A, out _));
        Assert.Equal(1, backoff.Count);

        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.False(backoff.IsBackedOff(A, out _));
        Assert.Equal(0, backoff.Count);

        // Forgotten: the next failure starts over at InitialDelay.
        backoff.Failure(A);
        Assert.True(backoff.IsBackedOff(A, out var until));
        Assert.Equal(TimeSpan.FromMinutes(1), until - _time.GetUtcNow());
    }

    [Fact]
    public void Failures_below_the_threshold_do_not_add_up_across_MaxDelay()
    {
        var backoff = NewBackoff(failuresBeforeBackoff: 3);
        backoff.Failure(A);
        backoff.Failure(A);

        _time.Advance(TimeSpan.FromMinutes(10));
        backoff.Failure(A);

        Assert.False(backoff.IsBackedOff(A, out _)); // one failure in a row, not three
    }

    [Fact]
    public void Expired_entries_of_other_identities_are_swept_on_any_call()
    {
        var backoff = NewBackoff();
        for (var i = 0; i < 100; i++)
        {
            backoff.Failure(A with { Host = $"mx{i}.example.net" });
        }

        Assert.Equal(100, backoff.Count);
        _time.Advance(TimeSpan.FromMinutes(20));

        Assert.False(backoff.IsBackedOff(B, out _));
        Assert.Equal(0, backoff.Count);
    }

    [Fact]
    public void The_table_is_bounded_and_evicts_the_identity_whose_last_failure_is_oldest()
    {
        var backoff = NewBackoff(maxEntries: 3);
        var identities = Enumerable.Range(0, 5).Select(i => A with { Host = $"mx{i}.example.net" }).ToArray();
        foreach (var identity in identities[..3])
        {
            backoff.Failure(identity);
            _time.Advance(TimeSpan.FromSeconds(1));
        }

        // mx0 fails again: its last failure is now the newest, so mx1 and then mx2 make room for mx3 and mx4.
        backoff.Failure(identities[0]);
        _time.Advance(TimeSpan.FromSeconds(1));
        backoff.Failure(identities[3]);
        backoff.Failure(identities[4]);

        Assert.Equal(3, backoff.Count);
        Assert.Equal(2, backoff.Evicted);
        Assert.True(backoff.IsBackedOff(identities[0], out _));
        Assert.True(backoff.IsBackedOff(identities[3], out _));
        Assert.True(backoff.IsBackedOff(identities[4], out _));
        Assert.False(backoff.IsBackedOff(identities[1], out _));
        Assert.False(backoff.IsBackedOff(identities[2], out _));

        // One warning for both evictions (at most one a minute), then another after a minute.
        Assert.Single(_log.Lines, l => l.StartsWith("Backoff table full (3 egress identities)", StringComparison.Ordinal));
        _time.Advance(TimeSpan.FromMinutes(1));
        backoff.Failure(B);
        Assert.Equal(2, _log.Lines.Count(l => l.StartsWith("Backoff table full", StringComparison.Ordinal)));
    }

    [Fact]
    public void Clear_forgets_every_identity()
    {
        var backoff = NewBackoff();
        backoff.Failure(A);
        backoff.Failure(B);

        backoff.Clear();

        Assert.Equal(0, backoff.Count);
        Assert.False(backoff.IsBackedOff(A, out _));
    }

    [Fact]
    public async Task One_tenant_at_the_destination_cap_does_not_hold_another_tenants_connections()
    {
        var opened = 0;
        await using var pool = new SmtpConnectionPool(8, _time, NullLogger.Instance, (_, _, _, _) =>
        {
            Interlocked.Increment(ref opened);
            return Task.FromResult(new GatewaySmtpClient());
        });
        var limits = new DestinationLimits(MaxConnections: 1, MaxMessagesPerConnection: 10, TimeSpan.FromMinutes(1), TimeSpan.FromSeconds(5));
        var keyA = new SmtpPoolKey("tenant-a", "out-a.example", SourceA1, "mx.example.net", 25, WireTls.Opportunistic);
        var keyB = keyA with { Tenant = "tenant-b", HeloName = "out-b.example" };

        var heldByA = await pool.RentAsync(keyA, [], limits, CancellationToken.None);
        var secondOfA = pool.RentAsync(keyA, [], limits, CancellationToken.None);
        var otherSourceOfA = pool.RentAsync(keyA with { SourceAddress = SourceA2 }, [], limits, CancellationToken.None);
        var ofB = pool.RentAsync(keyB, [], limits, CancellationToken.None);

        Assert.False(secondOfA.IsCompleted); // A waits for its own cap ...
        Assert.True(ofB.IsCompletedSuccessfully); // ... B does not wait for A's
        Assert.True(otherSourceOfA.IsCompletedSuccessfully);
        Assert.Equal(3, pool.IdentityCount);
        Assert.Equal(3, pool.OpenCount("mx.example.net", 25));

        await pool.ReturnAsync(heldByA, reusable: false);
        var next = await secondOfA.WaitAsync(TimeSpan.FromSeconds(10));
        foreach (var connection in new[] { next, await ofB, await otherSourceOfA })
        {
            await pool.ReturnAsync(connection, reusable: false);
        }

        Assert.Equal(4, opened);

        // Nothing open, nothing rented: the sweep forgets the identities.
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(0, pool.IdentityCount);
        Assert.Equal(0, pool.OpenCount("mx.example.net", 25));
    }
}
