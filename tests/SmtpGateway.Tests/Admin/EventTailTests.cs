using System.Text;
using System.Text.Json;
using SmtpGateway.Admin;
using SmtpGateway.Delivery;

namespace SmtpGateway.Tests.Admin;

/// <summary>The events resource reads a tenant's event file backwards from its end, in chunks, with bounded memory.</summary>
public sealed class EventTailTests : IDisposable
{
    readonly string _path = Path.Combine(Path.GetTempPath(), $"smtpgw-events-{Guid.NewGuid():N}.jsonl");

    public void Dispose() => File.Delete(_path);

    static string Line(int i, string tenant = "tenant-a") => JsonSerializer.Serialize(new DeliveryEvent
    {
        Time = DateTimeOffset.UnixEpoch.AddSeconds(i), Event = "delivered", Id = $"ID{i:D6}", Tenant = tenant, From = "a@a.example",
        Recipient = $"r{i}@example.net", Reply = "250 2.0.0 Ok", Attempt = 1,
    }, JsonSerializerOptions.Web);

    [Fact]
    public void The_latest_events_come_newest_first_across_chunk_boundaries()
    {
        // About 200 bytes a line: 3,000 lines span many 64 KiB chunks.
        File.WriteAllLines(_path, Enumerable.Range(0, 3000).Select(i => Line(i)));

        var latest = EventEndpoints.Latest(_path, "tenant-a", 1000);

        Assert.Equal(Enumerable.Range(2000, 1000).Reverse().Select(i => $"ID{i:D6}"), latest.Select(e => e.Id));
        Assert.Equal(3000, EventEndpoints.Latest(_path, "tenant-a", 5000).Count);
        Assert.Equal("ID002999", Assert.Single(EventEndpoints.Latest(_path, "tenant-a", 1)).Id);
    }

    [Fact]
    public void Oversized_damaged_foreign_and_half_written_lines_are_skipped()
    {
        var text = new StringBuilder();
        text.Append(Line(0)).Append('\n');
        text.Append('{').Append(new string('x', 200_000)).Append("}\n");   // past the line limit: never buffered whole
        text.Append(Line(1)).Append('\n');
        text.Append("{not json\n");
        text.Append(Line(2, "tenant-b")).Append('\n');                    // another tenant's line in this file
        text.Append(Line(3)).Append('\n');
        text.Append(Line(4)[..40]);                                       // being written right now
        File.WriteAllText(_path, text.ToString());

        Assert.Equal(["ID000003", "ID000001", "ID000000"], EventEndpoints.Latest(_path, "tenant-a", 100).Select(e => e.Id));
        Assert.Empty(EventEndpoints.Latest(Path.Combine(Path.GetTempPath(), "no-such-file.jsonl"), "tenant-a", 100));
    }
}
