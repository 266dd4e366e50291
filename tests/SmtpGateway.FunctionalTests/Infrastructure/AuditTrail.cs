using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>One line of &lt;DataDirectory&gt;/audit/audit.jsonl as the gateway (or the token CLI) wrote it.</summary>
internal sealed record AuditRecord
{
    public DateTimeOffset Time { get; init; }
    public string? Action { get; init; }
    public string? Result { get; init; }
    public string? Reason { get; init; }
    public string? Tenant { get; init; }
    public string? SessionId { get; init; }
    public string? ClientIp { get; init; }
    public string? Listener { get; init; }
    public string? TokenId { get; init; }
    public string? Subject { get; init; }

    /// <summary>The message a delivery-time event (vault-decrypt, upstream-auth) was for.</summary>
    public string? QueueId { get; init; }
    public bool CrossTenant { get; init; }

    /// <summary>How the action came in (api, mcp, ...); null for the CLI acting on the data directory.</summary>
    public string? Channel { get; init; }

    /// <summary>The JSON line itself.</summary>
    public string Line { get; init; } = "";

    public override string ToString() => Line;
}

/// <summary>
/// Reads the gateway's audit log (JSON lines, written in batches by a background writer, appended to by the CLI).
/// Tests wait for the event they expect instead of sleeping a fixed time.
/// </summary>
internal sealed class AuditTrail(string dataDirectory)
{
    static readonly JsonSerializerOptions s_json = new(JsonSerializerDefaults.Web);

    public string FilePath { get; } = Path.Combine(dataDirectory, "audit", "audit.jsonl");

    /// <summary>The whole file as text ("" before the first event).</summary>
    public string Text()
    {
        try
        {
            using var file = new FileStream(FilePath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(file, Encoding.UTF8);
            return reader.ReadToEnd();
        }
        catch (FileNotFoundException)
        {
            return "";
        }
        catch (DirectoryNotFoundException)
        {
            return "";
        }
    }

    /// <summary>Every complete line that parses as an audit record (see <see cref="MalformedLines"/> for the others).</summary>
    public IReadOnlyList<AuditRecord> Records() => Parse().Records;

    /// <summary>Complete lines that are not a JSON audit record (torn or overwritten writes): there should be none.</summary>
    public IReadOnlyList<string> MalformedLines() => Parse().Malformed;

    (List<AuditRecord> Records, List<string> Malformed) Parse()
    {
        var text = Text();
        var end = text.LastIndexOf('\n');
        var records = new List<AuditRecord>();
        var malformed = new List<string>();
        if (end < 0)
        {
            return (records, malformed);
        }

        foreach (var line in text[..end].Split('\n'))
        {
            try
            {
                if (JsonSerializer.Deserialize<AuditRecord>(line, s_json) is { Action: not null, Result: not null } record)
                {
                    records.Add(record with { Line = line });
                    continue;
                }
            }
            catch (JsonException)
            {
            }

            malformed.Add(line);
        }

        return (records, malformed);
    }

    /// <summary>Polls until an event matching <paramref name="match"/> is on disk; throws with the whole log when none comes in time.</summary>
    public async Task<AuditRecord> WaitForAsync(Func<AuditRecord, bool> match, string what, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var records = Records();
            var found = records.FirstOrDefault(match);
            if (found is not null)
            {
                return found;
            }

            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"no audit event {what} within {timeout} in {FilePath}:\n{string.Join('\n', records)}");
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }
    }
}
