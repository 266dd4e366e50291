using System.Text;
using System.Text.Json.Nodes;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>The gateway with config/gateway.json's tenants as they are: DKIM signing required (no "Dkim:Unsigned").</summary>
public sealed class SigningRequiredHarness : GatewayHarness
{
    /// <summary>
    /// Both tenants' SoftHSM2 tokens are made before anything is signed: SoftHSM2 lists the tokens of its directory when
    /// the module is initialised (at the gateway's first signature), and a token made later stays invisible to it.
    /// </summary>
    public override async Task InitializeAsync()
    {
        await base.InitializeAsync();
        foreach (var tenant in new[] { "tenant-a", "tenant-b" })
        {
            var result = await SmtpgwAsync("hsm", "init-token", "--tenant", tenant, "--config", ConfigPath);
            if (result.ExitCode != 0)
            {
                Failed = true;
                throw new InvalidOperationException($"smtpgw hsm init-token --tenant {tenant} failed: {result}");
            }
        }
    }

    protected override Task CustomizeAsync(JsonObject config, CancellationToken cancellationToken)
    {
        foreach (var (_, tenant) in (JsonObject)config["Tenants"]!)
        {
            ((JsonObject)tenant!).Remove("Dkim");
        }

        return Task.CompletedTask;
    }
}

/// <summary>
/// Signing fails closed end to end (real gateway, SoftHSM2, smtp-sink): a tenant that must sign and cannot (selector
/// file missing or corrupt, HSM token refusing its PIN) gets 451 4.3.0 at the end of DATA and nothing is relayed.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class DkimFailClosedTests(SigningRequiredHarness harness, ITestOutputHelper output) : IClassFixture<SigningRequiredHarness>
{
    async Task CliAsync(params string[] args)
    {
        var result = await harness.SmtpgwAsync([.. args, "--config", harness.ConfigPath]);
        output.WriteLine($"$ smtpgw {string.Join(' ', args)}\n{result.Output}");
        Assert.True(result.ExitCode == 0, $"smtpgw {string.Join(' ', args)} failed: {result}");
    }

    /// <summary>One message from the tenant's legacy network; returns the recipient and the reply to the final dot.</summary>
    async Task<(string Recipient, SmtpReply Reply)> SendAsync(string source, string domain, CancellationToken cancellationToken)
    {
        var recipient = $"failclosed-{Guid.NewGuid():N}@example.net";
        using var smtp = await harness.ConnectRelayFromAsync(source, output, cancellationToken);
        var content = Encoding.ASCII.GetBytes($"From: app@{domain}\r\nTo: {recipient}\r\nSubject: fail closed\r\n\r\nbody\r\n");
        var reply = await smtp.SendMailAsync($"app@{domain}", [recipient], content, cancellationToken);
        output.WriteLine($"{recipient}: {reply}");

        // The session is still usable after the 451 (a broken selector file used to drop the connection).
        Assert.Equal(250, (await smtp.StepAsync("RSET", output, cancellationToken)).Code);
        return (recipient, reply);
    }

    static void AssertSigningFailed(SmtpReply reply)
    {
        Assert.Equal(451, reply.Code);
        Assert.StartsWith("4.3.0", reply.Lines[0], StringComparison.Ordinal);
    }

    async Task AssertNothingRelayedAsync(IEnumerable<string> recipients)
    {
        // Past the whole retry schedule (1 s, 2 s): anything that had been queued would have reached the sink by now.
        await Task.Delay(TimeSpan.FromSeconds(4));
        var delivered = harness.Sink.Messages();
        foreach (var recipient in recipients)
        {
            Assert.DoesNotContain(delivered, m => m.RcptArgs.Contains($"<{recipient}>"));
        }
    }

    [Fact]
    public Task A_missing_or_corrupt_selector_file_answers_451_and_relays_nothing() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        const string Tenant = "tenant-a";
        const string Domain = "tenant-a.example";
        var selectorFile = Path.Combine(harness.DataDirectory, "dkim", Tenant + ".json");
        var refused = new List<string>();

        // No selector file at all: tenant-a has not opted out, so no unsigned mail.
        Assert.False(File.Exists(selectorFile));
        var (missing, reply) = await SendAsync("127.0.0.1", Domain, cts.Token);
        AssertSigningFailed(reply);
        refused.Add(missing);

        // With a key it signs (control), ...
        await CliAsync("hsm", "init-token", "--tenant", Tenant);
        await CliAsync("dkim", "keygen", "--tenant", Tenant, "--domain", Domain, "--selector", "ed1", "--alg", "ed25519");
        var (signed, ok) = await SendAsync("127.0.0.1", Domain, cts.Token);
        Assert.Equal(250, ok.Code);
        var messages = await harness.Sink.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{signed}>")), TimeSpan.FromSeconds(30), cts.Token);
        Assert.Contains("DKIM-Signature:", Assert.Single(messages, m => m.RcptArgs.Contains($"<{signed}>")).Content, StringComparison.Ordinal);

        // ... and a corrupt selector file (garbage JSON) is 451, not a dropped connection and not unsigned mail.
        var good = await File.ReadAllBytesAsync(selectorFile, cts.Token);
        await File.WriteAllTextAsync(selectorFile, "{ \"selectors\": [ garbage", cts.Token);
        File.SetLastWriteTimeUtc(selectorFile, DateTime.UtcNow.AddMinutes(1));
        var (corrupt, corruptReply) = await SendAsync("127.0.0.1", Domain, cts.Token);
        AssertSigningFailed(corruptReply);
        refused.Add(corrupt);

        // A removed selector file is 451 too.
        File.Delete(selectorFile);
        var (removed, removedReply) = await SendAsync("127.0.0.1", Domain, cts.Token);
        AssertSigningFailed(removedReply);
        refused.Add(removed);

        await AssertNothingRelayedAsync(refused);
        await harness.Audit.WaitForAsync(r => r.Action == "dkim-sign" && r.Result == "failed" && r.Tenant == Tenant, "a dkim-sign failure", TimeSpan.FromSeconds(10), cts.Token);

        // Restored, it signs again: the store re-reads the file.
        await File.WriteAllBytesAsync(selectorFile, good, cts.Token);
        var (again, againReply) = await SendAsync("127.0.0.1", Domain, cts.Token);
        Assert.Equal(250, againReply.Code);
        await harness.Sink.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{again}>")), TimeSpan.FromSeconds(30), cts.Token);
    });

    [Fact]
    public Task A_token_that_refuses_the_pin_answers_451_and_relays_nothing() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        const string Tenant = "tenant-b";
        const string Domain = "tenant-b.example";
        const string WrongPin = "0000-not-the-pin-0000";
        // With the gateway stopped: a running one would make the key itself (`dkim keygen` goes through its admin API),
        // logged in to the token with the right PIN, and a session it holds does not notice a PIN file changing later.
        await harness.KillGatewayAsync();
        await CliAsync("hsm", "init-token", "--tenant", Tenant);
        await CliAsync("dkim", "keygen", "--tenant", Tenant, "--domain", Domain, "--selector", "ed1", "--alg", "ed25519");

        // The key is there; the PIN file now holds a PIN the token refuses (C_Login: CKR_PIN_INCORRECT).
        // The default PIN directory: the data directory's sibling "<data>.pins", never inside the data directory.
        var pinFile = Path.Combine(harness.DataDirectory + ".pins", Tenant + ".pin");
        var pin = (await File.ReadAllTextAsync(pinFile, cts.Token)).Trim();
        await File.WriteAllTextAsync(pinFile, WrongPin + "\n", cts.Token);
        await harness.StartGatewayAsync(cts.Token);

        var (recipient, reply) = await SendAsync("127.0.0.2", Domain, cts.Token);
        AssertSigningFailed(reply);
        await AssertNothingRelayedAsync([recipient]);

        var failure = await harness.Audit.WaitForAsync(r => r.Action == "dkim-sign" && r.Result == "failed" && r.Tenant == Tenant, "a dkim-sign failure", TimeSpan.FromSeconds(10), cts.Token);
        Assert.Contains("refused", failure.Reason ?? "", StringComparison.Ordinal); // the login, not some other trouble
        foreach (var secret in new[] { WrongPin, pin })
        {
            Assert.DoesNotContain(secret, failure.Line, StringComparison.Ordinal);
            Assert.DoesNotContain(secret, harness.GatewayOutput, StringComparison.Ordinal);
        }
    });
}
