using System.Diagnostics;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>
/// One smarthost (one host:port) shared by several tenants that refuses some of them by EHLO name, as a receiver judging
/// a sender's reputation does: Fixtures/reputation_smarthost.py (python3, standard library only) answers
/// <c>421 4.7.0</c> and closes when the EHLO name is one of <c>refusedHeloNames</c>, and stores everyone else's mail.
/// Killed on dispose.
/// </summary>
internal sealed partial class ReputationSmarthost : IDisposable
{
    readonly ChildProcess _process;

    ReputationSmarthost(ChildProcess process, string directory)
    {
        _process = process;
        Directory = directory;
    }

    /// <summary>Holds events.jsonl and message-N.eml.</summary>
    public string Directory { get; }

    public int Port { get; private set; }

    public string Output => _process.Output;

    public static async Task<ReputationSmarthost> StartAsync(string workDirectory, IReadOnlyList<string> refusedHeloNames, CancellationToken cancellationToken)
    {
        var dir = System.IO.Directory.CreateDirectory(Path.Combine(workDirectory, "reputation-smarthost")).FullName;
        var process = ChildProcess.Start("reputation-smarthost", XOAuth2Server.Python,
            [RepoPaths.FixturePath("reputation_smarthost.py"), dir, string.Join(',', refusedHeloNames)], dir);
        var server = new ReputationSmarthost(process, dir);
        try
        {
            var clock = Stopwatch.StartNew();
            Match ready;
            while (!(ready = ReadyLine().Match(process.StandardOutput)).Success)
            {
                if (process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(20))
                {
                    throw new InvalidOperationException($"reputation_smarthost.py did not get ready:\n{process.Output}");
                }

                await Task.Delay(50, cancellationToken).ConfigureAwait(false);
            }

            server.Port = int.Parse(ready.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            return server;
        }
        catch
        {
            server.Dispose();
            throw;
        }
    }

    /// <summary>Every complete event line so far: {"event": "refused"|"message", "helo": ..., "rcpt": [...]}.</summary>
    public IReadOnlyList<JsonObject> Events()
    {
        var path = Path.Combine(Directory, "events.jsonl");
        if (!File.Exists(path))
        {
            return [];
        }

        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using var reader = new StreamReader(stream);
        var lines = reader.ReadToEnd().Split('\n');

        // The last piece is empty or a line still being written.
        return [.. lines[..^1].Select(line => (JsonObject)JsonNode.Parse(line)!)];
    }

    /// <summary>Sessions refused with 421 for <paramref name="helo"/>.</summary>
    public int RefusedCount(string helo) => Events().Count(e => e["event"]!.GetValue<string>() == "refused" && e["helo"]!.GetValue<string>() == helo);

    /// <summary>True when a message for <paramref name="recipient"/> was stored.</summary>
    public bool Received(string recipient) =>
        Events().Any(e => e["event"]!.GetValue<string>() == "message" && e["rcpt"]!.AsArray().Any(r => r!.GetValue<string>() == $"<{recipient}>"));

    public void Dispose() => _process.Dispose();

    [GeneratedRegex(@"^READY smtp=(\d+)$", RegexOptions.Multiline)]
    private static partial Regex ReadyLine();
}
