using SmtpGateway.Envelope;

namespace SmtpGateway.Tests.Envelope;

public sealed class BoundedMemoTests
{
    [Fact]
    public void Keeps_what_it_was_given_until_full_then_starts_afresh()
    {
        var memo = new BoundedMemo<(string, int)>(3);
        memo.Add(("a", 1), "one");
        memo.Add(("a", 2), "two");
        memo.Add(("a", 2), "two again");
        Assert.Equal(2, memo.Count);
        Assert.True(memo.TryGetValue(("a", 2), out var value));
        Assert.Equal("two again", value);

        memo.Add(("a", 3), "three");
        Assert.Equal(3, memo.Count);
        Assert.True(memo.Contains(("a", 1)));

        // Full: the next add empties it first, so memory stays bounded by the capacity.
        memo.Add(("a", 4), "four");
        Assert.Equal(1, memo.Count);
        Assert.False(memo.Contains(("a", 1)));
        Assert.True(memo.TryGetValue(("a", 4), out value));
        Assert.Equal("four", value);
    }

    [Fact]
    public async Task Concurrent_adds_stay_within_the_capacity_and_the_count_matches_the_entries_once_quiet()
    {
        var memo = new BoundedMemo<int>(1_000);
        await Task.WhenAll(Enumerable.Range(0, 4).Select(t => Task.Run(() =>
        {
            for (var i = 0; i < 10_000; i++)
            {
                memo.Add((t * 10_000) + i, "v");
            }
        })));

        Assert.InRange(memo.Count, 1, 1_000 + 4);
        var held = Enumerable.Range(0, 40_000).Count(memo.Contains);
        Assert.InRange(held, 1, 1_000 + 4);
    }
}
