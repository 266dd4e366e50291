using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>One line of Fixtures/faulty_smtp.py's events.jsonl.</summary>
internal sealed record FaultyEvent(string Event, string? Subject, IReadOnlyList<string>? Rcpt);

/// <summary>
/// Fixtures/faulty_smtp.py: a smarthost that fails its first connections on purpose (drops them in the middle of DATA, or
/// never greets), then behaves. The fault tests point the gateway at it and count what it received in full.
/// </summary>
internal sealed partial class FaultySmtpServer : IDisposable
{
    readonly ChildProcess _process;

    FaultySmtpServer(ChildProcess process, string directory, int port)
    {
        _process = process;
        Directory = directory;
        Port = port;
    }

    public string Directory { get; }

    public int Port { get; }

    public string Output => _process.Output;

    /// <param name="mode">"drop" (close mid-DATA), "stall" (no greeting) or "stall-data" (no reply to the final dot).</param>
    /// <param name="faults">How many connections fail before the server behaves.</param>
    public static async Task<FaultySmtpServer> StartAsync(string workDirectory, string mode, int faults, CancellationToken cancellationToken)
    {
        var dir = System.IO.Directory.CreateDirectory(Path.Combine(workDirectory, $"faulty-{mode}-{Guid.NewGuid():N}"[..20])).FullName;
        var process = ChildProcess.Start($"faulty-smtp-{mode}", XOAuth2Server.Python,
            [RepoPaths.FixturePath("faulty_smtp.py"), dir, mode, faults.ToString(System.Globalization.CultureInfo.InvariantCulture)], dir);
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var ready = ReadyLine().Match(process.StandardOutput);
            if (ready.Success)
            {
                return new FaultySmtpServer(process, dir, int.Parse(ready.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
            }

            if (process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(20))
            {
                process.Dispose();
                throw new InvalidOperationException($"faulty_smtp.py did not get ready:\n{process.Output}");
            }

            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }
    }

    public IReadOnlyList<FaultyEvent> Events()
    {
        string text;
        try
        {
            using var file = new FileStream(Path.Combine(Directory, "events.jsonl"), FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var reader = new StreamReader(file);
            text = reader.ReadToEnd();
        }
        catch (FileNotFoundException)
        {
            return [];
        }

        var end = text.LastIndexOf('\n');
        var options = new JsonSerializerOptions(JsonSerializerDefaults.Web);
        return end < 0 ? [] : [.. text[..end].Split('\n').Select(line => JsonSerializer.Deserialize<FaultyEvent>(line, options)!)];
    }

    /// <summary>Polls the events until <paramref name="done"/> holds; throws (with the events and output) after <paramref name="timeout"/>.</summary>
    public Task<IReadOnlyList<FaultyEvent>> WaitAsync(Func<IReadOnlyList<FaultyEvent>, bool> done, string what, TimeSpan timeout, CancellationToken cancellationToken) =>
        EventPoll.UntilAsync(Events, done, () => _process.HasExited,
            events => $"faulty smtp server: {what} not seen within {timeout}:\n{string.Join('\n', events)}\n{_process.Output}", timeout, cancellationToken);

    public void Dispose() => _process.Dispose();

    [GeneratedRegex(@"^READY port=(\d+)$", RegexOptions.Multiline)]
    private static partial Regex ReadyLine();
}
