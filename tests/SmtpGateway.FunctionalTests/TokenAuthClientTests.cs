using System.Text;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 3, "Real clients": swaks AUTH LOGIN and curl's SMTP client authenticate with a token from
/// <c>smtpgw token mint</c> (user = tenant id, password = token) and the message reaches the smart host; a token of
/// tenant B under tenant A's user name is refused with the uniform 535 and audited as a cross-tenant attempt.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class TokenAuthClientTests(GatewayHarness harness, ITestOutputHelper output) : IClassFixture<GatewayHarness>
{
    const string TenantA = "tenant-a";
    const string TenantB = "tenant-b";
    const string SenderA = "agent@tenant-a.example";
    static readonly TimeSpan AuditWait = TimeSpan.FromSeconds(5);

    [Theory]
    [InlineData("submission", "--tls")]
    [InlineData("submissions", "--tlsc")]
    public Task Swaks_AUTH_LOGIN_with_a_minted_token_delivers_to_the_smarthost(string listener, string tlsArg) => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var minted = await harness.MintTokenAsync(TenantA, "--description", $"swaks LOGIN {listener}");
        var recipient = $"login-{listener}-{Guid.NewGuid():N}@example.net";
        var port = listener == "submission" ? harness.SubmissionPort : harness.SubmissionsPort;

        var (exitCode, transcript) = await Swaks(port, tlsArg, "LOGIN", TenantA, minted.Token, SenderA, recipient);
        Assert.True(exitCode == 0, $"swaks exited with {exitCode}");
        Assert.Matches(@"=== TLS started with cipher TLSv1\.[23]", transcript);
        Assert.Matches(@"(?m)^\s*\d+\.\d+ out \| <~  334 VXNlcm5hbWU6$", transcript); // "Username:"
        Assert.Matches(@"(?m)^\s*\d+\.\d+ out \| <~  334 UGFzc3dvcmQ6$", transcript); // "Password:"
        Assert.Matches(@"(?m)^\s*\d+\.\d+ out \| <~  235 2\.7\.0 Authentication successful$", transcript);
        Assert.Matches(@"(?m)^\s*\d+\.\d+ out \| <~  250 2\.0\.0 Ok: queued as \S+$", transcript);

        var message = await ArrivedAsync(recipient, cts.Token);
        Assert.Matches(SinkMessage.VerpPattern("bounces.tenant-a.example"), message.MailArgs); // issue 7: the tenant's return path, not the client's MAIL FROM
        Assert.Equal(SenderA, message.Header("From"));
        var (received, _) = message.SplitTopReceived() ?? throw new Xunit.Sdk.XunitException("no Received field on top:\n" + message.Content);
        output.WriteLine("gateway added: " + received);
        // ESMTPSA: the gateway itself says the session was TLS and authenticated (RFC 3848).
        Assert.Matches(@"with ESMTPSA \(TLSv1\.[23]\) id ", received);

        var auth = await harness.Audit.WaitForAsync(e => e is { Action: "auth", Result: "ok" } && e.TokenId == minted.Id,
            $"auth ok for {minted.Id}", AuditWait, cts.Token);
        output.WriteLine("audit: " + auth);
        Assert.Equal(TenantA, auth.Tenant);
        Assert.Equal(listener, auth.Listener);
        Assert.Equal("127.0.0.1", auth.ClientIp);
        Assert.False(auth.CrossTenant);
    });

    [Fact]
    public Task Swaks_with_tenant_b_token_as_tenant_a_gets_535_nothing_arrives_and_it_is_audited_cross_tenant() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var tokenB = await harness.MintTokenAsync(TenantB, "--description", "cross-tenant attempt");
        var recipient = $"cross-{Guid.NewGuid():N}@example.net";

        var (exitCode, transcript) = await Swaks(harness.SubmissionPort, "--tls", "LOGIN", TenantA, tokenB.Token, SenderA, recipient);
        Assert.True(exitCode == 28, $"swaks exited with {exitCode}, expected 28 (error in AUTH transaction)");
        Assert.Matches(@"(?m)^\s*\d+\.\d+ out \| <~\* 535 5\.7\.8 Authentication credentials invalid$", transcript);
        Assert.DoesNotMatch(@"~> MAIL FROM", transcript);

        var refused = await harness.Audit.WaitForAsync(e => e is { Action: "auth", Result: "refused" } && e.TokenId == tokenB.Id,
            $"auth refused for {tokenB.Id}", AuditWait, cts.Token);
        output.WriteLine("audit: " + refused);
        Assert.True(refused.CrossTenant, "the refusal is not marked crossTenant");
        Assert.Equal(TenantB, refused.Tenant);
        Assert.Equal("submission", refused.Listener);
        Assert.Equal("127.0.0.1", refused.ClientIp);
        Assert.False(string.IsNullOrEmpty(refused.Reason), "the audit event gives no reason");

        // The token is written nowhere: not in the audit log, the data directory or the gateway's own output.
        Assert.Empty(SecretScan.Find(harness, TenantA, tokenB.Token));

        // Nothing was queued, so nothing can arrive (the audit wait above gave delivery time to happen).
        Assert.DoesNotContain(harness.Sink.Messages(), m => m.RcptArgs.Contains($"<{recipient}>"));
    });

    [Fact]
    public Task Curl_smtp_over_STARTTLS_with_a_token_delivers_with_the_From_header_intact() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var curl = (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin").Split(':')
            .Select(dir => Path.Combine(dir, "curl")).FirstOrDefault(File.Exists);
        Assert.True(curl is not null, "curl is not on PATH: apt-get install curl");

        var minted = await harness.MintTokenAsync(TenantA, "--description", "curl smtp");
        var marker = Guid.NewGuid().ToString("N");
        var recipient = $"curl-{marker}@example.net";
        const string from = "\"Agent Smith\" <agent@tenant-a.example>";
        var file = Path.Combine(harness.WorkDirectory, $"curl-{marker}.eml");
        var content =
            $"From: {from}\r\n" +
            $"To: <{recipient}>\r\n" +
            $"Subject: curl over STARTTLS {marker}\r\n" +
            $"Message-ID: <{marker}@tenant-a.example>\r\n" +
            "Date: Thu, 27 Nov 2025 10:00:01 +0000\r\n" +
            "\r\n" +
            "Sent by curl's SMTP client.\r\n" +
            ".a line starting with a dot (curl stuffs it, the gateway unstuffs it)\r\n";
        await File.WriteAllBytesAsync(file, Encoding.ASCII.GetBytes(content), cts.Token);

        var result = await ChildProcess.RunCapturedAsync(curl!,
            ["--url", $"smtp://127.0.0.1:{harness.SubmissionPort}", "--ssl-reqd", "-k", "--mail-from", SenderA, "--mail-rcpt", recipient,
             // --silent --show-error: no progress meter, which otherwise shares standard error with -v's transcript and can
             // land in the middle of a reply line ("10333< 250 2.0.0 Ok: queued as ..."), failing the matches below.
             "--user", $"{TenantA}:{minted.Token}", "-T", file, "-v", "--silent", "--show-error", "--max-time", "30"],
            harness.WorkDirectory, TimeSpan.FromSeconds(60));
        output.WriteLine(result.Output);
        Assert.True(result.ExitCode == 0, $"curl exited with {result.ExitCode}");
        Assert.Matches(@"(?m)^> STARTTLS\s*$", result.StandardError);
        Assert.Matches(@"(?m)^< 220 2\.0\.0 ", result.StandardError);
        Assert.Matches(@"(?m)^> AUTH (PLAIN|LOGIN)\b", result.StandardError);
        Assert.Matches(@"(?m)^< 235 2\.7\.0 Authentication successful\s*$", result.StandardError);
        Assert.Matches(@"(?m)^< 250 2\.0\.0 Ok: queued as \S+\s*$", result.StandardError);

        var message = await ArrivedAsync(recipient, cts.Token);
        Assert.Matches(SinkMessage.VerpPattern("bounces.tenant-a.example"), message.MailArgs); // issue 7: the tenant's return path, not the client's MAIL FROM
        Assert.Equal([$"<{recipient}>"], message.RcptArgs);
        Assert.Equal(from, message.Header("From"));
        var (received, rest) = message.SplitTopReceived() ?? throw new Xunit.Sdk.XunitException("no Received field on top:\n" + message.Content);
        output.WriteLine("gateway added: " + received);
        Assert.Matches(@"with ESMTPSA \(TLSv1\.[23]\) id ", received);
        Assert.Equal(SinkMessage.AsDumped(Encoding.ASCII.GetBytes(content)), rest);

        await harness.Audit.WaitForAsync(e => e is { Action: "auth", Result: "ok", Tenant: TenantA, Listener: "submission" } && e.TokenId == minted.Id,
            $"auth ok for {minted.Id} on submission", AuditWait, cts.Token);
    });

    async Task<(int ExitCode, string Transcript)> Swaks(int port, string tlsArg, string mechanism, string user, string password, string from, string to)
    {
        var (exitCode, transcript) = await ChildProcess.RunAsync("swaks",
            ["--server", $"127.0.0.1:{port}", tlsArg, "--helo", "swaks.functional.test", "--auth", mechanism, "--auth-user", user,
             "--auth-password", password, "--from", from, "--to", to, "--header", $"Subject: swaks AUTH {mechanism} {tlsArg}", "--timeout", "30"],
            harness.WorkDirectory, TimeSpan.FromSeconds(60));
        output.WriteLine(transcript);
        return (exitCode, transcript);
    }

    async Task<SinkMessage> ArrivedAsync(string recipient, CancellationToken cancellationToken)
    {
        var messages = await harness.Sink.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{recipient}>")), TimeSpan.FromSeconds(30), cancellationToken);
        var message = Assert.Single(messages, m => m.RcptArgs.Contains($"<{recipient}>"));
        output.WriteLine($"smtp-sink dump: {message.Path}");
        return message;
    }
}
