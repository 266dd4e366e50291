using System.Text;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// SMTP smuggling: a body that hides a second transaction behind a non-CRLF "end of data" must be refused as a
/// whole (5xx) and must produce no message at all, neither the carrier nor the smuggled one.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class SmugglingTests(GatewayHarness harness, ITestOutputHelper output) : IClassFixture<GatewayHarness>
{
    // Addresses in the demo tenant that config/gateway.json maps to 127.0.0.1 on the relay listener.
    const string Sender = "sender@tenant-a.example";
    const string SmuggledSender = "smuggled@tenant-a.example";

    /// <summary>(name, fake end-of-data sequence, line end of the smuggled commands).</summary>
    public static TheoryData<string, string, string> Variants => new()
    {
        { "LF.LF", "\n.\n", "\n" },
        { "LF.CRLF", "\n.\r\n", "\r\n" },
        { "CRLF.LF", "\r\n.\n", "\r\n" },
        { "CR.CRLF", "\r.\r\n", "\r\n" },
        { "CRLF.CR", "\r\n.\r", "\r\n" },
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public Task Smuggled_second_message_is_refused_and_nothing_is_queued(string name, string fakeEnd, string eol) => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var marker = $"smuggle-{name}-{Guid.NewGuid():N}";
        var carrierText = $"carrier body {marker}";
        var smuggledText = $"smuggled body {marker}";

        using (var smtp = await RawSmtpClient.ConnectAsync("127.0.0.1", harness.RelayPort, TimeSpan.FromSeconds(30), cts.Token))
        {
            Assert.Equal(250, (await smtp.CommandAsync("EHLO attacker.functional.test", cts.Token)).Code);
            Assert.Equal(250, (await smtp.CommandAsync($"MAIL FROM:<{Sender}>", cts.Token)).Code);
            Assert.Equal(250, (await smtp.CommandAsync("RCPT TO:<victim@example.net>", cts.Token)).Code);
            Assert.Equal(354, (await smtp.CommandAsync("DATA", cts.Token)).Code);

            // The smuggled transaction is one the gateway would accept on its own (sender and From in the tenant's
            // domain), so only the framing can stop it; the control message below proves the same headers pass.
            var payload =
                $"From: <{Sender}>\r\nSubject: carrier {marker}\r\nX-Test-Id: {marker}-carrier\r\n\r\n{carrierText}" +
                fakeEnd +
                $"MAIL FROM:<{SmuggledSender}>{eol}RCPT TO:<smuggled-rcpt@example.net>{eol}DATA{eol}" +
                $"From: <{SmuggledSender}>{eol}Subject: smuggled {marker}{eol}X-Test-Id: {marker}-smuggled{eol}{eol}{smuggledText}" +
                "\r\n.\r\n";
            output.WriteLine("sent after 354: " + Visible(payload));
            await smtp.WriteAsync(Encoding.ASCII.GetBytes(payload), cts.Token);

            var reply = await smtp.ReadReplyAsync(cts.Token);
            output.WriteLine($"reply: {reply}");
            Assert.InRange(reply.Code, 500, 599);

            // A server fooled by the fake end would now answer the smuggled MAIL, RCPT, DATA and dot as well.
            SmtpReply? extra;
            try
            {
                extra = await smtp.TryReadReplyAsync(TimeSpan.FromSeconds(1), cts.Token);
            }
            catch (IOException)
            {
                extra = null; // the gateway closed the connection: fine
            }

            if (extra is not null)
            {
                // Collect the rest for the report: a fooled server answers MAIL, RCPT, DATA and the final dot.
                var replies = new List<SmtpReply> { extra };
                try
                {
                    while (await smtp.TryReadReplyAsync(TimeSpan.FromSeconds(1), cts.Token) is { } more)
                    {
                        replies.Add(more);
                    }
                }
                catch (IOException)
                {
                }

                Assert.Fail($"the fake end of data \"{Visible(fakeEnd)}\" ended DATA: after \"{reply}\" the smuggled commands were answered: " +
                            string.Join(" | ", replies));
            }
        }

        // A clean control message afterwards proves the pipeline is alive and delivering.
        var controlId = $"{marker}-control";
        using (var smtp = await RawSmtpClient.ConnectAsync("127.0.0.1", harness.RelayPort, TimeSpan.FromSeconds(30), cts.Token))
        {
            Assert.Equal(250, (await smtp.CommandAsync("EHLO control.functional.test", cts.Token)).Code);
            var reply = await smtp.SendMailAsync(SmuggledSender, ["control@example.net"],
                Encoding.ASCII.GetBytes($"From: <{SmuggledSender}>\r\nSubject: control {marker}\r\nX-Test-Id: {controlId}\r\n\r\ncontrol\r\n"), cts.Token);
            Assert.True(reply.Code == 250, $"the control message (same envelope and From as the smuggled one, CRLF only) was refused: {reply}");
        }

        await harness.Sink.WaitAsync(ms => ms.Any(m => m.Header("X-Test-Id") == controlId), TimeSpan.FromSeconds(30), cts.Token);
        await Task.Delay(TimeSpan.FromSeconds(1), cts.Token);

        var leaked = harness.Sink.Messages()
            .Where(m => m.Content.Contains(marker, StringComparison.Ordinal) && m.Header("X-Test-Id") != controlId)
            .ToList();
        Assert.True(leaked.Count == 0, $"{leaked.Count} message(s) reached the smarthost:\n" + string.Join("\n---\n", leaked.Select(m => m.Content)));

        var spooled = FilesContaining(harness.DataDirectory, [carrierText, smuggledText]);
        Assert.True(spooled.Count == 0, "message content was left under the data directory: " + string.Join(", ", spooled));
    });

    static List<string> FilesContaining(string directory, string[] needles)
    {
        if (!Directory.Exists(directory))
        {
            return [];
        }

        var found = new List<string>();
        foreach (var file in Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories))
        {
            try
            {
                var text = Encoding.Latin1.GetString(File.ReadAllBytes(file));
                if (needles.Any(n => text.Contains(n, StringComparison.Ordinal)))
                {
                    found.Add(file);
                }
            }
            catch (IOException)
            {
                // removed while we looked
            }
        }

        return found;
    }

    static string Visible(string s) => s.Replace("\r", "\\r", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
}
