using System.Text.RegularExpressions;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// swaks (Debian) → smtpgw → Postfix smtp-sink: the message arrives byte for byte, headers intact; the only
/// difference is the one Received field the gateway adds on top.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed partial class SwaksRelayTests(GatewayHarness harness, ITestOutputHelper output) : IClassFixture<GatewayHarness>
{
    const string Tenant = "tenant-a";
    const string Sender = "demo@tenant-a.example";

    [Theory]
    [InlineData("relay", "plain, legacy relay listener")]
    [InlineData("submission", "STARTTLS (--tls), submission listener")]
    [InlineData("submissions", "implicit TLS (--tlsc), submissions listener")]
    public Task Message_arrives_at_the_smarthost_byte_for_byte(string listener, string how) => harness.RunAsync(output, async () =>
    {
        output.WriteLine(how);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var fixture = RepoPaths.FixturePath("relay-message.eml");
        var recipient = $"rcpt-{Guid.NewGuid():N}@example.net";
        var (port, tlsArgs) = listener switch
        {
            "relay" => (harness.RelayPort, Array.Empty<string>()),
            "submission" => (harness.SubmissionPort, ["--tls"]),
            "submissions" => (harness.SubmissionsPort, ["--tlsc"]),
            _ => throw new ArgumentOutOfRangeException(nameof(listener)),
        };

        // Submission listeners want AUTH (user = tenant id, password = a session token) once tenant identity exists;
        // the relay listener trusts the demo tenant's network (127.0.0.1) instead.
        string[] authArgs = [];
        if (listener != "relay" && await harness.TryMintTokenAsync(Tenant, output) is { } token)
        {
            authArgs = ["--auth", "PLAIN", "--auth-user", Tenant, "--auth-password", token];
        }

        // swaks sends the file as DATA (dot-stuffed), then CRLF.CRLF; it does not verify certificates by default.
        var (exitCode, transcript) = await ChildProcess.RunAsync("swaks",
            ["--server", $"127.0.0.1:{port}", "--helo", "swaks.functional.test", "--from", Sender, "--to", recipient,
             "--data", "@" + fixture, "--timeout", "30", .. tlsArgs, .. authArgs],
            harness.WorkDirectory, TimeSpan.FromSeconds(60));
        output.WriteLine(transcript);
        Assert.True(exitCode == 0, $"swaks exited with {exitCode}");
        var queued = QueuedAs().Match(transcript);
        Assert.True(queued.Success, "no \"250 2.0.0 Ok: queued as <id>\" in the swaks transcript");
        if (tlsArgs.Length > 0)
        {
            Assert.Matches(@"=== TLS started with cipher TLSv1\.[23]", transcript);
        }

        var messages = await harness.Sink.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{recipient}>")), TimeSpan.FromSeconds(30), cts.Token);
        var message = Assert.Single(messages, m => m.RcptArgs.Contains($"<{recipient}>"));
        output.WriteLine($"smtp-sink dump: {message.Path}");

        Assert.Matches(SinkMessage.VerpPattern("bounces.tenant-a.example"), message.MailArgs); // issue 7: the tenant's return path, not the client's MAIL FROM
        Assert.Equal([$"<{recipient}>"], message.RcptArgs);

        var split = message.SplitTopReceived();
        Assert.True(split is not null, "the delivered message does not start with the gateway's Received field:\n" + message.Content);
        var (received, rest) = split.Value;
        output.WriteLine("gateway added: " + received);
        Assert.Contains(GatewayHarness.ServerName, received, StringComparison.Ordinal);

        // What swaks put on the wire is the file plus CRLF before the final dot; smtp-sink stores it without CRs.
        byte[] sent = [.. File.ReadAllBytes(fixture), .. "\r\n"u8];
        Assert.Equal(SinkMessage.AsDumped(sent), rest);
    });

    [GeneratedRegex(@"<[-~]\s+250 2\.0\.0 Ok: queued as (\S+)")]
    private static partial Regex QueuedAs();
}
