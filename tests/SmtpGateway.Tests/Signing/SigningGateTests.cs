using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Signing;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Signing;

/// <summary>
/// Issue 12: the signing gate. Deterministic: grants and refusals complete the waiter's task before the call that caused
/// them returns (continuations run later, but IsCompleted is already true), and time is a fake clock.
/// </summary>
public sealed class SigningGateTests
{
    readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
    readonly CapturingLogger _log = new();

    SigningGate Gate(int capacity = 8, int ceiling = 8, int maxWaiters = 256, TimeSpan? timeout = null) =>
        new(new SigningGateOptions(capacity, ceiling, timeout ?? TimeSpan.FromSeconds(30), maxWaiters), _clock, _log);

    List<string> Refusals() =>
        [.. _log.Entries.Where(e => e.Level == Microsoft.Extensions.Logging.LogLevel.Warning && e.Message.Contains("no signing slot", StringComparison.Ordinal)).Select(e => e.Message)];

    static SigningSlot Granted(ValueTask<SigningSlot> acquire)
    {
        Assert.True(acquire.IsCompleted, "expected a slot at once");
        var slot = acquire.Result;
        Assert.True(slot.Granted);
        return slot;
    }

    static SigningSlot Done(Task<SigningSlot> task)
    {
        Assert.True(task.IsCompletedSuccessfully);
        return task.Result;
    }

    static SigningSlot Done(ValueTask<SigningSlot> acquire)
    {
        Assert.True(acquire.IsCompletedSuccessfully);
        return acquire.Result;
    }

    /// <summary>What the Signing stage does with a slot: sign inside a using; here the HSM throws.</summary>
    static void SignWith(SigningSlot slot)
    {
        using (slot)
        {
            throw new InvalidOperationException("HSM went away");
        }
    }

    static Task<SigningSlot> Waiting(ValueTask<SigningSlot> acquire)
    {
        Assert.False(acquire.IsCompleted, "expected to wait");
        return acquire.AsTask();
    }

    [Fact]
    public void A_tenant_holds_at_most_its_share_and_the_next_waits_for_its_own_release()
    {
        var gate = Gate();
        var first = Granted(gate.AcquireAsync("a", 2));
        var second = Granted(gate.AcquireAsync("a", 2));
        var third = Waiting(gate.AcquireAsync("a", 2));
        Assert.Equal((2, 1), gate.Usage("a"));

        // Another tenant is not affected by a's share being full.
        using (Granted(gate.AcquireAsync("b", 2)))
        {
        }

        Assert.False(third.IsCompleted);
        first.Dispose();
        Assert.True(third.IsCompletedSuccessfully);
        Assert.True(Done(third).Granted);
        Assert.Equal((2, 0), gate.Usage("a"));

        second.Dispose();
        Done(third).Dispose();
        Assert.Equal(0, gate.InUse);
        Assert.Equal((0, 0), gate.Usage("a"));
    }

    [Fact]
    public void A_share_is_never_above_the_gateway_capacity_or_the_token_sessions()
    {
        var gate = Gate(capacity: 6, ceiling: 4);
        Assert.Equal(4, gate.ShareOf(100));
        Assert.Equal(1, gate.ShareOf(0));
        Assert.Equal(3, gate.ShareOf(3));
        Assert.Equal(2, Gate(capacity: 2, ceiling: 8).ShareOf(4));
    }

    [Fact]
    public void A_tenant_arriving_while_another_floods_is_granted_at_the_next_release()
    {
        // The flooding tenant's share is the whole gate: the worst case for the newcomer.
        var gate = Gate(capacity: 4);
        var held = Enumerable.Range(0, 4).Select(_ => Granted(gate.AcquireAsync("a", 4))).ToList();
        var flood = Enumerable.Range(0, 50).Select(_ => Waiting(gate.AcquireAsync("a", 4))).ToList();
        var b = Waiting(gate.AcquireAsync("b", 4));

        held[0].Dispose();
        Assert.True(b.IsCompletedSuccessfully);
        Assert.True(Done(b).Granted);
        Assert.All(flood, t => Assert.False(t.IsCompleted));

        // With b served, a's waiters take the next releases in order.
        held[1].Dispose();
        Assert.True(flood[0].IsCompletedSuccessfully);
        Assert.False(flood[1].IsCompleted);

        Done(b).Dispose();
        Assert.True(flood[1].IsCompletedSuccessfully);
        Assert.Equal((4, 48), gate.Usage("a"));
        Assert.Equal((0, 0), gate.Usage("b"));
    }

    [Fact]
    public void Waiting_tenants_with_equal_holdings_take_turns()
    {
        var gate = Gate(capacity: 2);
        var a = Granted(gate.AcquireAsync("a", 2));
        var a2 = Granted(gate.AcquireAsync("a", 2));
        var b1 = Waiting(gate.AcquireAsync("b", 2));
        var b2 = Waiting(gate.AcquireAsync("b", 2));
        var c1 = Waiting(gate.AcquireAsync("c", 2));

        a.Dispose();
        Assert.True(b1.IsCompleted); // b queued first
        a2.Dispose();
        Assert.True(c1.IsCompleted); // then c, though b has another waiter: b already holds one
        Assert.False(b2.IsCompleted);
        Done(c1).Dispose();
        Assert.True(b2.IsCompleted);
    }

    [Fact]
    public void A_cancelled_waiter_leaves_the_queue_and_is_not_given_a_slot()
    {
        var gate = Gate();
        var held = Granted(gate.AcquireAsync("a", 1));
        using var cts = new CancellationTokenSource();
        var cancelled = Waiting(gate.AcquireAsync("a", 1, cts.Token));
        var next = Waiting(gate.AcquireAsync("a", 1));

        cts.Cancel();
        Assert.True(cancelled.IsCompletedSuccessfully);
        Assert.Equal(SigningRefusal.Cancelled, Done(cancelled).Refusal);
        Assert.False(Done(cancelled).Granted);
        Done(cancelled).Dispose(); // a refusal holds nothing to give back
        Assert.Equal((1, 1), gate.Usage("a"));

        held.Dispose();
        Assert.True(Done(next).Granted);
        Done(next).Dispose();
        Assert.Equal(0, gate.InUse);

        Assert.Equal(SigningRefusal.Cancelled, Done(gate.AcquireAsync("a", 1, cts.Token)).Refusal);
        Assert.Equal(0, gate.InUse);
    }

    [Fact]
    public void A_waiter_not_granted_within_the_timeout_is_refused_and_a_later_release_is_not_lost()
    {
        var gate = Gate(timeout: TimeSpan.FromSeconds(30));
        var held = Granted(gate.AcquireAsync("a", 1));
        var late = Waiting(gate.AcquireAsync("a", 1));

        _clock.Advance(TimeSpan.FromSeconds(29));
        Assert.False(late.IsCompleted);
        _clock.Advance(TimeSpan.FromSeconds(1));
        Assert.True(late.IsCompletedSuccessfully);
        Assert.Equal(SigningRefusal.Timeout, Done(late).Refusal);
        Assert.Equal((1, 0), gate.Usage("a"));
        Assert.Contains(Refusals(), line => line.Contains("(timeout)", StringComparison.Ordinal));

        held.Dispose();
        Assert.Equal(0, gate.InUse);
        using var again = Granted(gate.AcquireAsync("a", 1));
    }

    [Fact]
    public void A_granted_waiter_is_not_refused_when_its_timeout_would_have_passed()
    {
        var gate = Gate(timeout: TimeSpan.FromSeconds(30));
        var held = Granted(gate.AcquireAsync("a", 1));
        var waiter = Waiting(gate.AcquireAsync("a", 1));
        held.Dispose();
        _clock.Advance(TimeSpan.FromMinutes(1));
        Assert.True(Done(waiter).Granted);
        Assert.Equal((1, 0), gate.Usage("a"));
        Done(waiter).Dispose();
        Assert.Equal(0, gate.InUse);
    }

    [Fact]
    public void Over_the_waiter_cap_a_message_is_refused_at_once_and_the_warning_is_rate_limited()
    {
        var gate = Gate(maxWaiters: 2, timeout: TimeSpan.FromHours(1));
        using var held = Granted(gate.AcquireAsync("a", 1));
        _ = Waiting(gate.AcquireAsync("a", 1));
        _ = Waiting(gate.AcquireAsync("a", 1));
        for (var i = 0; i < 5; i++)
        {
            var refused = gate.AcquireAsync("a", 1);
            Assert.True(refused.IsCompleted);
            Assert.Equal(SigningRefusal.QueueFull, Done(refused).Refusal);
        }

        Assert.Single(Refusals());
        _clock.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(SigningRefusal.QueueFull, Done(gate.AcquireAsync("a", 1)).Refusal);
        var entries = Refusals();
        Assert.Equal(2, entries.Count);
        Assert.Contains("4 more", entries[1], StringComparison.Ordinal);
        Assert.Equal((1, 2), gate.Usage("a"));
    }

    [Fact]
    public void A_slot_comes_back_once_when_signing_throws_and_when_disposed_twice()
    {
        var gate = Gate(capacity: 2);
        Assert.Throws<InvalidOperationException>(() => SignWith(Granted(gate.AcquireAsync("a", 2))));
        Assert.Equal(0, gate.InUse);

        var twice = Granted(gate.AcquireAsync("a", 2));
        twice.Dispose();
        twice.Dispose();
        Assert.Equal(0, gate.InUse);

        // The capacity is intact: both slots can still be taken, and not a third.
        using var one = Granted(gate.AcquireAsync("a", 2));
        using var two = Granted(gate.AcquireAsync("b", 2));
        _ = Waiting(gate.AcquireAsync("c", 2));
    }

    [Fact]
    public async Task Under_concurrent_use_no_tenant_exceeds_its_share_and_every_slot_comes_back()
    {
        var gate = Gate(capacity: 4, timeout: TimeSpan.FromHours(1));
        var active = new int[3];
        var worst = new int[3];
        var tasks = Enumerable.Range(0, 600).Select(i => Task.Run(async () =>
        {
            var tenant = i % 3;
            using var slot = await gate.AcquireAsync($"t{tenant}", 2);
            Assert.True(slot.Granted);
            var now = Interlocked.Increment(ref active[tenant]);
            InterlockedMax(ref worst[tenant], now);
            await Task.Yield();
            Interlocked.Decrement(ref active[tenant]);
        })).ToArray();
        await Task.WhenAll(tasks);

        Assert.Equal(0, gate.InUse);
        Assert.All(worst, w => Assert.InRange(w, 1, 2));
    }

    static void InterlockedMax(ref int target, int value)
    {
        int seen;
        while ((seen = Volatile.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen)
        {
        }
    }
}
