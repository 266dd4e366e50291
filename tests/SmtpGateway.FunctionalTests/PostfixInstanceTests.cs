using System.Text;
using MimeKit;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Calibrates <see cref="PostfixInstance"/> without the gateway: a private Postfix accepts a message from swaks, bounces
/// it, and its real DSN (bounce(8): multipart/report from MAILER-DAEMON, null sender) arrives at smtp-sink.
/// </summary>
public sealed class PostfixInstanceTests(ITestOutputHelper output) : IDisposable
{
    const string Sender = "b+tag@bounces.tenant-a.example";
    const string Recipient = "u@example.net";

    readonly string _dir = CreateWorkDirectory();

    static string CreateWorkDirectory()
    {
        var dir = Directory.CreateTempSubdirectory("smtpgw-ft-postfix-test-").FullName;
        // smtp-sink drops to "nobody" (we are root) and writes its dumps below this directory.
        File.SetUnixFileMode(dir, (UnixFileMode)Convert.ToInt32("755", 8));
        return dir;
    }

    [Fact]
    public async Task Bounced_message_comes_back_to_the_sender_as_a_real_Postfix_DSN()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var sink = await SmtpSink.StartAsync(_dir, cts.Token);
        await using var postfix = await PostfixInstance.StartAsync(new PostfixInstanceOptions
        {
            SmtpPort = FreePort.Next(),
            RelayPort = sink.Port,
            RelayDomains = ["bounces.tenant-a.example"],
            BouncedDomains = ["example.net"],
        }, cts.Token);
        try
        {
            var (exitCode, transcript) = await ChildProcess.RunAsync("swaks",
                ["--server", $"127.0.0.1:{postfix.Port}", "--helo", "swaks.functional.test", "--from", Sender, "--to", Recipient,
                 "--header", "Subject: bounce me", "--timeout", "30"],
                _dir, TimeSpan.FromSeconds(60));
            output.WriteLine(transcript);
            Assert.True(exitCode == 0, $"swaks exited with {exitCode}");
            Assert.Contains("250 2.0.0 Ok: queued as", transcript, StringComparison.Ordinal);

            await postfix.WaitForLogAsync($"to=<{Recipient}>, relay=none", TimeSpan.FromSeconds(20), cts.Token);
            var messages = await sink.WaitAsync(ms => ms.Count > 0, TimeSpan.FromSeconds(20), cts.Token);
            var dsn = Assert.Single(messages);
            output.WriteLine($"smtp-sink dump: {dsn.Path}\n{dsn.Content}");

            // Envelope: null reverse-path, to the original sender (Postfix adds BODY= and ORCPT=).
            Assert.Equal("<>", dsn.MailArgs.Split(' ')[0]);
            Assert.Equal($"<{Sender}>", Assert.Single(dsn.RcptArgs).Split(' ')[0]);

            var message = MimeMessage.Load(new MemoryStream(Encoding.Latin1.GetBytes(dsn.Content)));
            Assert.Equal($"MAILER-DAEMON@{PostfixInstance.Hostname}", Assert.Single(message.From.Mailboxes).Address);
            Assert.Equal(Sender, Assert.Single(message.To.Mailboxes).Address);
            Assert.Equal("auto-replied", message.Headers["Auto-Submitted"]);
            var report = Assert.IsType<MultipartReport>(message.Body);
            Assert.Equal("delivery-status", report.ReportType);

            var status = Assert.Single(report.OfType<MessageDeliveryStatus>());
            Assert.Equal(2, status.StatusGroups.Count);
            Assert.Equal($"dns; {PostfixInstance.Hostname}", status.StatusGroups[0]["Reporting-MTA"]);
            var perRecipient = status.StatusGroups[1];
            Assert.Equal($"rfc822; {Recipient}", perRecipient["Final-Recipient"]);
            Assert.Equal("failed", perRecipient["Action"]);
            Assert.Equal("5.1.1", perRecipient["Status"]);
            Assert.Equal("X-Postfix; mailbox unavailable", perRecipient["Diagnostic-Code"]);

            var returned = Assert.Single(report.OfType<MessagePart>());
            Assert.Equal("bounce me", Assert.IsType<MimeMessage>(returned.Message).Subject);
            output.WriteLine(postfix.Log);
        }
        catch
        {
            output.WriteLine(postfix.Diagnostics());
            output.WriteLine($"----- smtp-sink -----\n{sink.Output}");
            throw;
        }
    }

    [Fact]
    public async Task A_DSN_the_target_could_not_take_is_retried_and_delivered_once_it_answers()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var targetPort = FreePort.Next();
        await using var postfix = await PostfixInstance.StartAsync(new PostfixInstanceOptions
        {
            RelayPort = targetPort,
            RelayDomains = ["bounces.tenant-a.example"],
        }, cts.Token);
        try
        {
            var (exitCode, transcript) = await ChildProcess.RunAsync("swaks",
                ["--server", $"127.0.0.1:{postfix.Port}", "--from", Sender, "--to", Recipient, "--timeout", "30"], _dir, TimeSpan.FromSeconds(60));
            Assert.True(exitCode == 0, $"swaks exited with {exitCode}:\n{transcript}");

            // Nothing listens on the target yet: the DSN is deferred.
            await postfix.WaitForLogAsync($"to=<{Sender}>, relay=none", TimeSpan.FromSeconds(20), cts.Token);
            using var sink = await SmtpSink.StartAtAsync(_dir, "127.0.0.1", targetPort, [], cts.Token);
            await postfix.FlushAsync(cts.Token);
            var dsn = Assert.Single(await sink.WaitAsync(ms => ms.Count > 0, TimeSpan.FromSeconds(20), cts.Token));
            Assert.Equal("<>", dsn.MailArgs.Split(' ')[0]);
            Assert.Contains($"Final-Recipient: rfc822; {Recipient}\n", dsn.Content, StringComparison.Ordinal);
            await postfix.WaitForLogAsync($"to=<{Sender}>, relay=127.0.0.1[127.0.0.1]:{targetPort}", TimeSpan.FromSeconds(10), cts.Token);
            output.WriteLine(postfix.Log);
        }
        catch
        {
            output.WriteLine(postfix.Diagnostics());
            throw;
        }
    }

    [Fact]
    public async Task Dispose_stops_every_process_of_the_instance_and_removes_its_directory()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var postfix = await PostfixInstance.StartAsync(new PostfixInstanceOptions
        {
            RelayPort = FreePort.Next(),
            RelayDomains = ["bounces.tenant-a.example"],
        }, cts.Token);
        int[] daemons;
        try
        {
            Assert.StartsWith(Path.GetTempPath(), postfix.ConfigDirectory, StringComparison.Ordinal);
            await postfix.WaitForLogAsync("daemon started", TimeSpan.FromSeconds(10), cts.Token);
            daemons = SessionMembers(postfix.MasterPid);
            output.WriteLine($"master {postfix.MasterPid}, session: {string.Join(' ', daemons)}");
            Assert.Contains(postfix.MasterPid, daemons);
            Assert.True(daemons.Length > 1, "the master started no daemon");
        }
        catch
        {
            output.WriteLine(postfix.Diagnostics());
            await postfix.DisposeAsync();
            throw;
        }

        await postfix.DisposeAsync();
        Assert.Empty(SessionMembers(postfix.MasterPid));
        Assert.All(daemons, pid => Assert.False(IsAlive(pid), $"process {pid} is still running"));
        Assert.False(Directory.Exists(postfix.WorkDirectory), $"{postfix.WorkDirectory} is still there");
    }

    /// <summary>Live (non-zombie) processes whose session is <paramref name="session"/>.</summary>
    static int[] SessionMembers(int session) =>
        [.. Directory.EnumerateDirectories("/proc")
            .Select(Path.GetFileName)
            .Select(name => int.TryParse(name, out var pid) ? pid : 0)
            .Where(pid => pid > 0 && Stat(pid) is { } stat && stat.Session == session && stat.State is not ('Z' or 'X'))];

    static bool IsAlive(int pid) => Stat(pid) is { State: not ('Z' or 'X') };

    static (char State, int Session)? Stat(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (fields[0][0], int.Parse(fields[3], System.Globalization.CultureInfo.InvariantCulture));
        }
        catch (IOException)
        {
            return null;
        }
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
