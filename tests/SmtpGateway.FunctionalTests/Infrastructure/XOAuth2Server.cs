using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>What the scripted XOAUTH2 upstream accepts (see Fixtures/xoauth2_server.py).</summary>
internal sealed record XOAuth2ServerOptions
{
    /// <summary>The only user XOAUTH2 accepts (the "user=" of the SASL string).</summary>
    public required string User { get; init; }

    public required string ClientId { get; init; }

    /// <summary>When set, the token endpoint requires it (form field client_secret or HTTP Basic).</summary>
    public string? ClientSecret { get; init; }

    /// <summary>The refresh token the token endpoint accepts.</summary>
    public required string RefreshToken { get; init; }

    /// <summary>Lifetime of each issued access token (also the expires_in the endpoint returns).</summary>
    public TimeSpan ExpiresIn { get; init; } = TimeSpan.FromHours(1);

    /// <summary>An access token valid from the start (for a vault record that holds an access token only).</summary>
    public string? AccessToken { get; init; }

    // Never print the secrets, whatever formats this record.
    public override string ToString() => $"XOAuth2ServerOptions {{ User = {User}, ClientId = {ClientId}, ExpiresIn = {ExpiresIn} }}";
}

/// <summary>One line of the scripted server's events.jsonl: an AUTH outcome, a token request, or a received message.</summary>
internal sealed record XOAuth2Event
{
    /// <summary>"auth", "refresh" or "message".</summary>
    public string Event { get; init; } = "";

    /// <summary>"ok" or "refused" (auth, refresh).</summary>
    public string? Result { get; init; }

    public string? Mechanism { get; init; }

    public string? User { get; init; }

    /// <summary>Why it was refused (never the token itself).</summary>
    public string? Reason { get; init; }

    /// <summary>Successful refreshes so far (refresh).</summary>
    public int? Count { get; init; }

    /// <summary>The message as received, dot-unstuffed (message).</summary>
    public string? File { get; init; }

    public string? From { get; init; }

    public IReadOnlyList<string> Rcpt { get; init; } = [];

    public string Line { get; init; } = "";

    public override string ToString() => Line;
}

/// <summary>
/// A tenant's OAuth 2.0 mail provider, scripted: Fixtures/xoauth2_server.py (python3, standard library only) serves
/// implicit-TLS SMTP that accepts only <c>AUTH XOAUTH2 base64("user=U\x01auth=Bearer T\x01\x01")</c> with an access token
/// its own https token endpoint (POST /token, grant_type=refresh_token, RFC 6749 section 6) issued, answers 535
/// otherwise, and writes each message to a file. Both use the certificate given (the run's <see cref="TestCertificate"/>:
/// SAN 127.0.0.1, so a client that trusts it can verify them). Killed on dispose.
/// </summary>
internal sealed partial class XOAuth2Server : IDisposable
{
    public const string Python = "/usr/bin/python3";

    readonly ChildProcess _process;

    XOAuth2Server(ChildProcess process, string directory)
    {
        _process = process;
        Directory = directory;
    }

    /// <summary>Holds config.json, events.jsonl and message-N.eml.</summary>
    public string Directory { get; }

    public int SmtpPort { get; private set; }

    public int TokenPort { get; private set; }

    /// <summary>The token endpoint URL to give the vault (https, 127.0.0.1).</summary>
    public string TokenEndpoint => $"https://127.0.0.1:{TokenPort}/token";

    public string Output => _process.Output;

    public bool HasExited => _process.HasExited;

    public static async Task<XOAuth2Server> StartAsync(string workDirectory, XOAuth2ServerOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        var (certificate, key) = await TestCertificate.GetAsync().ConfigureAwait(false);
        var dir = System.IO.Directory.CreateDirectory(Path.Combine(workDirectory, $"xoauth2-{Guid.NewGuid():N}"[..16])).FullName;
        var config = new JsonObject
        {
            ["certificate"] = certificate,
            ["key"] = key,
            ["directory"] = dir,
            ["user"] = options.User,
            ["client_id"] = options.ClientId,
            ["client_secret"] = options.ClientSecret,
            ["refresh_token"] = options.RefreshToken,
            ["expires_in"] = (int)options.ExpiresIn.TotalSeconds,
            ["access_token"] = options.AccessToken,
        };
        var configPath = Path.Combine(dir, "config.json");
        await File.WriteAllTextAsync(configPath, config.ToJsonString(), cancellationToken).ConfigureAwait(false);
        File.SetUnixFileMode(configPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);

        var process = ChildProcess.Start("xoauth2-server", Python, [RepoPaths.FixturePath("xoauth2_server.py"), configPath], dir);
        var server = new XOAuth2Server(process, dir);
        try
        {
            var clock = Stopwatch.StartNew();
            while (true)
            {
                var ready = ReadyLine().Match(process.StandardOutput);
                if (ready.Success)
                {
                    server.SmtpPort = int.Parse(ready.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                    server.TokenPort = int.Parse(ready.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture);
                    return server;
                }

                if (process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(20))
                {
                    throw new InvalidOperationException($"xoauth2_server.py did not get ready:\n{process.Output}");
                }

                await Task.Delay(50, cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            server.Dispose();
            throw;
        }
    }

    /// <summary>Every complete event line so far.</summary>
    public IReadOnlyList<XOAuth2Event> Events()
    {
        string text;
        try
        {
            using var file = new FileStream(Path.Combine(Directory, "events.jsonl"), FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var reader = new StreamReader(file, Encoding.UTF8);
            text = reader.ReadToEnd();
        }
        catch (FileNotFoundException)
        {
            return [];
        }

        var end = text.LastIndexOf('\n');
        var options = new JsonSerializerOptions(JsonSerializerDefaults.Web);
        return end < 0
            ? []
            : [.. text[..end].Split('\n').Select(line => JsonSerializer.Deserialize<XOAuth2Event>(line, options)! with { Line = line })];
    }

    /// <summary>Access tokens the endpoint issued so far (successful refreshes).</summary>
    public int RefreshCount => Events().Count(e => e is { Event: "refresh", Result: "ok" });

    /// <summary>Messages received so far.</summary>
    public IReadOnlyList<XOAuth2Event> Messages() => [.. Events().Where(e => e.Event == "message")];

    /// <summary>Polls the events until <paramref name="done"/> holds, or throws TimeoutException with all of them.</summary>
    public Task<IReadOnlyList<XOAuth2Event>> WaitAsync(Func<IReadOnlyList<XOAuth2Event>, bool> done, string what, TimeSpan timeout,
        CancellationToken cancellationToken) =>
        EventPoll.UntilAsync(Events, done, () => _process.HasExited,
            events => $"xoauth2 server: no {what} within {timeout}:\n{string.Join('\n', events)}\n{_process.Output}", timeout, cancellationToken);

    public void Dispose() => _process.Dispose();

    [GeneratedRegex(@"^READY smtp=(\d+) token=(\d+)$", RegexOptions.Multiline)]
    private static partial Regex ReadyLine();
}
