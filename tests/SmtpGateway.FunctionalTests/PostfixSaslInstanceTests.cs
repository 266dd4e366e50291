using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Calibrates the authenticating smarthost (<see cref="PostfixInstance"/> with STARTTLS and Cyrus SASL sasldb2) without
/// the gateway, with swaks: the right credential relays (and the log names the SASL user), a wrong one gets 535, no
/// AUTH gets no relay, AUTH is not offered before STARTTLS, and a changed password bites at once.
/// </summary>
public sealed class PostfixSaslInstanceTests(ITestOutputHelper output) : IDisposable
{
    const string User = "relay-user";
    const string Password = "S3cret-pass-for-postfix";
    const string Sender = "app@tenant-a.example";

    readonly string _dir = CreateWorkDirectory();

    static string CreateWorkDirectory()
    {
        var dir = Directory.CreateTempSubdirectory("smtpgw-ft-postfix-sasl-").FullName;
        // smtp-sink drops to "nobody" (we are root) and writes its dumps below this directory.
        File.SetUnixFileMode(dir, (UnixFileMode)Convert.ToInt32("755", 8));
        return dir;
    }

    [Fact]
    public async Task Only_the_right_SASL_credential_over_STARTTLS_relays_and_a_changed_password_is_refused_at_once()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        var (certificate, key) = await TestCertificate.GetAsync();
        using var sink = await SmtpSink.StartAsync(_dir, cts.Token);
        await using var postfix = await PostfixInstance.StartAsync(new PostfixInstanceOptions
        {
            RelayPort = sink.Port,
            RelayDomains = ["example.net"],
            Tls = new PostfixTls(certificate, key),
            Sasl = new PostfixSaslUser(User, Password),
        }, cts.Token);
        try
        {
            // The right credential: relayed to the sink, logged with the SASL user.
            var good = $"good-{Guid.NewGuid():N}@example.net";
            var (exit, transcript) = await SwaksAsync(postfix, good, ["--tls", "--auth", "PLAIN", "--auth-user", User, "--auth-password", Password]);
            Assert.True(exit == 0, $"swaks with the right credential exited with {exit}");
            Assert.Contains("235 2.7.0 Authentication successful", transcript, StringComparison.Ordinal);
            Assert.Contains("250 2.0.0 Ok: queued as", transcript, StringComparison.Ordinal);
            var message = Assert.Single(await sink.WaitAsync(ms => ms.Any(m => m.HasRecipient(good)), TimeSpan.FromSeconds(20), cts.Token));
            Assert.Equal($"<{Sender}>", message.MailArgs.Split(' ')[0]);
            await postfix.WaitForSaslLoginAsync(User, TimeSpan.FromSeconds(10), cts.Token);

            // AUTH LOGIN works too (the gateway may pick either).
            var login = $"login-{Guid.NewGuid():N}@example.net";
            (exit, transcript) = await SwaksAsync(postfix, login, ["--tls", "--auth", "LOGIN", "--auth-user", User, "--auth-password", Password]);
            Assert.True(exit == 0, $"swaks with AUTH LOGIN exited with {exit}");
            await sink.WaitAsync(ms => ms.Any(m => m.HasRecipient(login)), TimeSpan.FromSeconds(20), cts.Token);

            // A wrong password: 535, nothing relayed.
            (exit, transcript) = await SwaksAsync(postfix, $"wrong-{Guid.NewGuid():N}@example.net",
                ["--tls", "--auth", "PLAIN", "--auth-user", User, "--auth-password", "not-the-password"]);
            Assert.NotEqual(0, exit);
            Assert.Matches(@"<~\*+ 535 5\.7\.8 Error: authentication failed", transcript);

            // No AUTH at all, from 127.0.0.1 (in mynetworks): no relay.
            (exit, transcript) = await SwaksAsync(postfix, $"anon-{Guid.NewGuid():N}@example.net", ["--tls"]);
            Assert.NotEqual(0, exit);
            Assert.Matches(@"<~\*+ 554 5\.7\.1 .*Access denied", transcript);

            // Before STARTTLS, AUTH is not even offered.
            (exit, transcript) = await SwaksAsync(postfix, $"plain-{Guid.NewGuid():N}@example.net",
                ["--auth", "PLAIN", "--auth-user", User, "--auth-password", Password]);
            Assert.NotEqual(0, exit);
            Assert.DoesNotContain("250-AUTH", transcript, StringComparison.Ordinal);

            // A changed password (what a revoked upstream credential looks like): the old one gets 535 at once.
            await postfix.SetSaslPasswordAsync(User, "a-new-password", cts.Token);
            (exit, transcript) = await SwaksAsync(postfix, $"revoked-{Guid.NewGuid():N}@example.net",
                ["--tls", "--auth", "PLAIN", "--auth-user", User, "--auth-password", Password]);
            Assert.NotEqual(0, exit);
            Assert.Matches(@"<~\*+ 535 5\.7\.8 Error: authentication failed", transcript);
            await postfix.WaitForLogAsync($"SASL PLAIN authentication failed", TimeSpan.FromSeconds(10), cts.Token);

            Assert.Equal(2, sink.Messages().Count);
            output.WriteLine(postfix.Log);
        }
        catch
        {
            output.WriteLine(postfix.Diagnostics());
            output.WriteLine($"----- smtp-sink -----\n{sink.Output}");
            throw;
        }
    }

    async Task<(int ExitCode, string Transcript)> SwaksAsync(PostfixInstance postfix, string recipient, string[] args)
    {
        var (exit, transcript) = await ChildProcess.RunAsync("swaks",
            ["--server", $"127.0.0.1:{postfix.Port}", "--helo", "swaks.functional.test", "--from", Sender, "--to", recipient, "--timeout", "30", .. args],
            _dir, TimeSpan.FromSeconds(60));
        output.WriteLine(transcript);
        return (exit, transcript);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
