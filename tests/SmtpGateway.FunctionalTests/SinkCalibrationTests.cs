using System.Text;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Calibrates the instruments without the gateway: swaks and the raw client straight into smtp-sink must
/// give dumps that <see cref="SinkMessage"/> reads back as exactly what was sent. If these fail, the gateway
/// tests cannot be trusted; if these pass and a gateway test fails, the gateway changed the message.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class SinkCalibrationTests(ITestOutputHelper output) : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("smtpgw-ft-sink-").FullName;

    [Fact]
    public async Task Swaks_to_smtp_sink_round_trips_the_fixture()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        File.SetUnixFileMode(_dir, (UnixFileMode)0b111_101_101);
        using var sink = await SmtpSink.StartAsync(_dir, cts.Token);
        var fixture = RepoPaths.FixturePath("relay-message.eml");

        var (exitCode, transcript) = await ChildProcess.RunAsync("swaks",
            ["--server", $"127.0.0.1:{sink.Port}", "--helo", "calibration.test", "--from", "a@tenant-a.example", "--to", "b@example.net",
             "--data", "@" + fixture, "--timeout", "30"],
            _dir, TimeSpan.FromSeconds(60));
        output.WriteLine(transcript);
        Assert.Equal(0, exitCode);

        var message = Assert.Single(await sink.WaitAsync(ms => ms.Count > 0, TimeSpan.FromSeconds(10), cts.Token));
        Assert.Equal("calibration.test", message.HeloArgs);
        Assert.Equal("<a@tenant-a.example>", message.MailArgs);
        Assert.Equal(["<b@example.net>"], message.RcptArgs);
        byte[] sent = [.. File.ReadAllBytes(fixture), .. "\r\n"u8];
        Assert.Equal(SinkMessage.AsDumped(sent), message.Content);
    }

    [Fact]
    public async Task Raw_client_to_smtp_sink_round_trips_with_dot_stuffing_and_connection_reuse()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        File.SetUnixFileMode(_dir, (UnixFileMode)0b111_101_101);
        using var sink = await SmtpSink.StartAsync(_dir, cts.Token);
        using var smtp = await RawSmtpClient.ConnectAsync("127.0.0.1", sink.Port, TimeSpan.FromSeconds(10), cts.Token);
        Assert.Equal(220, smtp.Banner.Code);
        Assert.Equal(250, (await smtp.CommandAsync("EHLO raw.test", cts.Token)).Code);

        var contents = new List<byte[]>
        {
            Encoding.ASCII.GetBytes("X-Test-Id: one\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n"),
            Encoding.ASCII.GetBytes("X-Test-Id: two\r\n\r\n"),
            Encoding.ASCII.GetBytes("X-Test-Id: three\r\n\r\n" + new string('x', 5000) + "\r\n" + new string('y', 998) + "\r\n"),
        };
        foreach (var content in contents)
        {
            var reply = await smtp.SendMailAsync("a@b.example", ["c@d.example", "e@f.example"], content, cts.Token);
            Assert.Equal(250, reply.Code);
        }

        Assert.Equal(221, (await smtp.CommandAsync("QUIT", cts.Token)).Code);
        var messages = await sink.WaitAsync(ms => ms.Count == contents.Count, TimeSpan.FromSeconds(10), cts.Token);
        foreach (var content in contents)
        {
            var expected = SinkMessage.AsDumped(content);
            var message = Assert.Single(messages, m => m.Content == expected);
            Assert.Equal(["<c@d.example>", "<e@f.example>"], message.RcptArgs);
        }
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
