using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using SmtpGateway.Envelope;
using SmtpGateway.FunctionalTests.Infrastructure;
using SmtpGateway.Identity.Tokens;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// A data directory from before issue #11: plaintext token and return-path keys in the key files. The gateway's start
/// moves them into tenant-a's SoftHSM2 token and shreds the plaintext.
/// </summary>
public sealed class LegacyKeysHarness : GatewayHarness
{
    public const string LegacyKeyId = "klegacy01";

    public byte[] TokenSecret { get; } = RandomNumberGenerator.GetBytes(32);

    public byte[] VerpSecret { get; } = RandomNumberGenerator.GetBytes(32);

    public string TokenKeyFile => Path.Combine(DataDirectory, "identity", "keys", "tenant-a.json");

    public string VerpKeyFile => Path.Combine(DataDirectory, "verp", "tenant-a.json");

    protected override Task CustomizeAsync(JsonObject config, CancellationToken cancellationToken)
    {
        var created = DateTimeOffset.UtcNow.AddDays(-1).ToString("O");
        Directory.CreateDirectory(Path.GetDirectoryName(TokenKeyFile)!);
        File.WriteAllText(TokenKeyFile, $$"""{"keys":[{"id":"{{LegacyKeyId}}","secret":"{{Convert.ToBase64String(TokenSecret)}}","created":"{{created}}"}]}""");
        Directory.CreateDirectory(Path.GetDirectoryName(VerpKeyFile)!);
        File.WriteAllText(VerpKeyFile, $$"""{"keys":[{"id":"a","secret":"{{Convert.ToBase64String(VerpSecret)}}","created":"{{created}}"}]}""");
        return Task.CompletedTask;
    }
}

[Collection(GatewayCollection.Name)]
public sealed class TokenKeyMigrationTests(LegacyKeysHarness harness, ITestOutputHelper output) : IClassFixture<LegacyKeysHarness>
{
    static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    [Fact]
    public Task Start_migrates_plaintext_keys_into_the_token_and_a_token_and_return_path_made_before_still_work() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        Assert.Contains("migrated 1 token keys of tenant tenant-a into its HSM token; plaintext file shredded", harness.GatewayOutput, StringComparison.Ordinal);
        Assert.Contains("migrated 1 return-path keys of tenant tenant-a into its HSM token; plaintext file shredded", harness.GatewayOutput, StringComparison.Ordinal);
        foreach (var file in new[] { harness.TokenKeyFile, harness.VerpKeyFile })
        {
            var text = await File.ReadAllTextAsync(file, cts.Token);
            output.WriteLine($"{file}: {text}");
            Assert.DoesNotContain("secret", text, StringComparison.Ordinal);
        }

        var everything = string.Join('\n', Directory.EnumerateFiles(harness.DataDirectory, "*", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}hsm{Path.DirectorySeparatorChar}", StringComparison.Ordinal) && !f.EndsWith(".sock", StringComparison.Ordinal))
            .Select(f => Convert.ToBase64String(File.ReadAllBytes(f)) + "\n" + File.ReadAllText(f)));
        Assert.DoesNotContain(Convert.ToBase64String(harness.TokenSecret), everything, StringComparison.Ordinal);
        Assert.DoesNotContain(Convert.ToBase64String(harness.VerpSecret), everything, StringComparison.Ordinal);

        // A token minted before the migration (HMAC in process under the plaintext key) authenticates.
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var audience = JsonNode.Parse(await File.ReadAllTextAsync(harness.ConfigPath, cts.Token))!["Gateway"]?["Identity"]?["Audience"]?.GetValue<string>() ?? "smtpgw";
        var payload = new TokenPayload(1, "tenant-a", LegacyKeysHarness.LegacyKeyId, "tok_premigration", audience, now - 60, now + 3600, []);
        var body = Base64Url(JsonSerializer.SerializeToUtf8Bytes(payload, TokenJsonContext.Default.TokenPayload));
        var token = $"sgw1.{body}.{Base64Url(HMACSHA256.HashData(harness.TokenSecret, Encoding.ASCII.GetBytes("sgw1." + body)))}";
        using var smtp = await RawSmtpClient.ConnectAsync("127.0.0.1", harness.SubmissionsPort, TimeSpan.FromSeconds(10), cts.Token, implicitTls: true);
        Assert.Equal(250, (await smtp.StepAsync("EHLO agent.functional.test", output, cts.Token)).Code);
        var auth = await smtp.AuthPlainAsync("tenant-a", token, cts.Token);
        output.WriteLine($"AUTH: {auth}");
        Assert.Equal(235, auth.Code);

        // The return-path key in the token is the very key of the file: the gateway makes the tag the old code would have.
        var recipient = $"migrated-{Guid.NewGuid():N}@example.net";
        var content = Encoding.ASCII.GetBytes($"From: <agent@tenant-a.example>\r\nTo: <{recipient}>\r\nSubject: after migration\r\n\r\nbody\r\n");
        Assert.Equal(250, (await smtp.SendMailAsync("agent@tenant-a.example", [recipient], content, cts.Token)).Code);
        var messages = await harness.Sink.WaitAsync(ms => ms.Any(m => m.RcptArgs.Contains($"<{recipient}>")), TimeSpan.FromSeconds(30), cts.Token);
        var mailArgs = Assert.Single(messages, m => m.RcptArgs.Contains($"<{recipient}>")).MailArgs;
        output.WriteLine($"MAIL FROM {mailArgs}");
        var queueId = mailArgs[3..23];
        var hash = Convert.ToHexStringLower(HMACSHA256.HashData(harness.VerpSecret, Encoding.UTF8.GetBytes("smtpgw-verp1-rcpt\0" + ReturnPath.NormalizeRecipient(recipient)))[..4]);
        Assert.StartsWith($"<b+{queueId}.{hash}.a", mailArgs, StringComparison.Ordinal);
    });
}
