using SmtpGateway.Spool;

namespace SmtpGateway.Tests.Spool;

/// <summary>Issue 13: queue depth by tenant and state is counted as messages move, keyed by id, never by a directory scan.</summary>
public sealed class QueueDepthTests
{
    [Fact]
    public void A_message_moves_between_states_and_leaves_once()
    {
        var depth = new QueueDepth();
        depth.Set("A1", "tenant-a", QueueState.Queued);
        depth.Set("A1", "tenant-a", QueueState.Queued);
        depth.Set("B1", "tenant-b", QueueState.Queued);
        Assert.Equal(1, depth.Count("tenant-a", QueueState.Queued));

        depth.Set("A1", "tenant-a", QueueState.Deferred);
        depth.Set("A1", "tenant-a", QueueState.Deferred);
        Assert.Equal(0, depth.Count("tenant-a", QueueState.Queued));
        Assert.Equal(1, depth.Count("tenant-a", QueueState.Deferred));

        depth.Remove("A1");
        depth.Remove("A1");
        depth.Remove("never-seen");
        Assert.Equal(0, depth.Count("tenant-a", QueueState.Deferred));
        Assert.Equal(1, depth.Count("tenant-b", QueueState.Queued));
    }

    [Fact]
    public void A_known_message_keeps_its_tenant_and_one_without_is_default()
    {
        var depth = new QueueDepth();
        depth.Set("A1", "tenant-a", QueueState.Queued);
        // A later report without the tenant (state saved by delivery) does not move the message to another tenant.
        depth.Set("A1", null, QueueState.Deferred);
        depth.Set("N1", null, QueueState.Queued);
        Assert.Equal(1, depth.Count("tenant-a", QueueState.Deferred));
        Assert.Equal(1, depth.Count("default", QueueState.Queued));
    }

    [Fact]
    public void Observe_reports_every_series_seen_zero_included_with_closed_labels()
    {
        var depth = new QueueDepth();
        depth.Set("A1", "tenant-a", QueueState.Queued);
        depth.Set("B1", "tenant-b", QueueState.Queued);
        depth.Set("B1", "tenant-b", QueueState.Deferred);
        depth.Remove("A1");

        var seen = depth.Observe().ToDictionary(
            m => ((string)m.Tags.ToArray().Single(t => t.Key == "tenant").Value!, (string)m.Tags.ToArray().Single(t => t.Key == "state").Value!),
            m => m.Value);
        Assert.Equal(0, seen[("tenant-a", "queued")]);
        Assert.Equal(0, seen[("tenant-b", "queued")]);
        Assert.Equal(1, seen[("tenant-b", "deferred")]);
        Assert.Equal(3, seen.Count);
    }

    [Fact]
    public async Task Concurrent_moves_add_up()
    {
        var depth = new QueueDepth();
        await Task.WhenAll(Enumerable.Range(0, 4).Select(worker => Task.Run(() =>
        {
            for (var i = 0; i < 1000; i++)
            {
                var id = $"W{worker}M{i}";
                depth.Set(id, "tenant-a", QueueState.Queued);
                depth.Set(id, "tenant-a", QueueState.Deferred);
                if (i % 2 == 0)
                {
                    depth.Remove(id);
                }
            }
        })));
        Assert.Equal(0, depth.Count("tenant-a", QueueState.Queued));
        Assert.Equal(2000, depth.Count("tenant-a", QueueState.Deferred));
    }
}
