using System.Text;
using System.Text.Json;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>The gateway started with <c>smtpgw serve --log-format json</c>.</summary>
public sealed class JsonLogHarness : GatewayHarness
{
    protected override IReadOnlyList<string> ServeArguments => ["--log-format", "json"];

    /// <summary>The gateway's standard output so far (what a log shipper reads).</summary>
    public string StandardOutput => Gateway?.StandardOutput ?? "";
}

/// <summary>Issue 13: <c>--log-format json</c> writes one JSON object per stdout line, and a message's lines carry its scopes.</summary>
[Collection(GatewayCollection.Name)]
public sealed class JsonLogTests(JsonLogHarness harness, ITestOutputHelper output) : IClassFixture<JsonLogHarness>
{
    const int Delivered = 2101; // DeliveryLog.Delivered (EventIds.Delivery + 1)

    [Fact]
    public Task Every_stdout_line_is_json_and_a_delivered_message_carries_queue_id_and_tenant_scopes() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        var subject = "json-log " + Guid.NewGuid().ToString("N")[..10];
        var message = Encoding.ASCII.GetBytes(
            "From: <json@tenant-a.example>\r\nTo: <sink@example.net>\r\nSubject: " + subject + "\r\n" +
            "Message-ID: <" + Guid.NewGuid().ToString("N") + "@jsonlog.functional.test>\r\nDate: Thu, 27 Nov 2025 10:00:01 +0000\r\n\r\nBody.\r\n");

        // Relay listener from 127.0.0.1: tenant-a by its network.
        using (var smtp = await harness.ConnectRelayFromAsync("127.0.0.1", output, cts.Token))
        {
            var reply = await smtp.SendMailAsync("json@tenant-a.example", ["sink@example.net"], message, cts.Token);
            Assert.True(reply.Code == 250, reply.ToString());
        }

        await harness.Sink.WaitAsync(ms => ms.Any(m => m.Header("Subject") == subject), TimeSpan.FromSeconds(30), cts.Token);

        // The delivered line is written right after the sink's 250; poll the log for it rather than wait a fixed time.
        var lines = await EventPoll.UntilAsync(
            () => Parse(harness.StandardOutput),
            parsed => parsed.Any(IsDelivered),
            () => !harness.IsRunning,
            parsed => $"no 'delivered' event (id {Delivered}) among {parsed.Count} JSON log lines",
            TimeSpan.FromSeconds(30),
            cts.Token);

        var delivered = lines.Last(IsDelivered);
        output.WriteLine(delivered.ToString());
        var scopes = Scopes(delivered);
        Assert.Equal("tenant-a", scopes.GetValueOrDefault("TenantId"));
        var queueId = Assert.IsType<string>(scopes.GetValueOrDefault("QueueId"));
        Assert.Contains(queueId, delivered.GetProperty("Message").GetString(), StringComparison.Ordinal);

        // The same queue id was scoped at submission too (DATA → spool), under the session's scope.
        Assert.Contains(lines, l => Scopes(l).GetValueOrDefault("SessionId") is not null);
        Assert.All(lines, l => Assert.True(l.TryGetProperty("Timestamp", out var t) && t.GetString()!.EndsWith('Z'), l.ToString()));
    });

    static bool IsDelivered(JsonElement line) => line.GetProperty("EventId").GetInt32() == Delivered;

    /// <summary>Every line parsed; a line that is not one JSON object fails the test with the line in the message.</summary>
    static List<JsonElement> Parse(string stdout)
    {
        var parsed = new List<JsonElement>();
        foreach (var line in stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            try
            {
                using var document = JsonDocument.Parse(line);
                Assert.Equal(JsonValueKind.Object, document.RootElement.ValueKind);
                parsed.Add(document.RootElement.Clone());
            }
            catch (JsonException e)
            {
                Assert.Fail($"a stdout line is not JSON ({e.Message}): {line}");
            }
        }

        return parsed;
    }

    /// <summary>The string values of all the line's scope objects, by name.</summary>
    static Dictionary<string, string?> Scopes(JsonElement line)
    {
        var values = new Dictionary<string, string?>(StringComparer.Ordinal);
        if (line.TryGetProperty("Scopes", out var scopes))
        {
            foreach (var scope in scopes.EnumerateArray().Where(s => s.ValueKind == JsonValueKind.Object))
            {
                foreach (var property in scope.EnumerateObject().Where(p => p.Name != "Message"))
                {
                    values[property.Name] = property.Value.ValueKind == JsonValueKind.String ? property.Value.GetString() : property.Value.ToString();
                }
            }
        }

        return values;
    }
}
