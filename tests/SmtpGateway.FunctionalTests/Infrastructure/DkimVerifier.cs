using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>
/// An independent DKIM check of a message as smtp-sink stored it: Debian's python3-dkim (tests/SmtpGateway.Tests/Signing/
/// dkim_verify.py) with the records `smtpgw dkim dns --json` printed, instead of DNS.
/// </summary>
internal static partial class DkimVerifier
{
    /// <summary>The TXT records of <paramref name="tenant"/>'s selectors, name to value, from <c>smtpgw dkim dns --tenant T --json</c>.</summary>
    public static async Task<Dictionary<string, string>> RecordsAsync(GatewayHarness harness, string tenant, ITestOutputHelper output)
    {
        var result = await harness.SmtpgwAsync("dkim", "dns", "--tenant", tenant, "--json", "--config", harness.ConfigPath);
        output.WriteLine($"$ smtpgw dkim dns --tenant {tenant} --json\n{result.Output}");
        Assert.True(result.ExitCode == 0, $"smtpgw dkim dns failed: {result}");
        return JsonSerializer.Deserialize<Dictionary<string, string>>(result.StandardOutput)!;
    }

    /// <summary>
    /// Whether each DKIM-Signature of <paramref name="message"/> verifies (top first). smtp-sink stores messages with CRs
    /// removed; every line ending on the wire was CRLF, so they are put back first.
    /// </summary>
    public static async Task<bool[]> VerifyAsync(SinkMessage message, IReadOnlyDictionary<string, string> records, ITestOutputHelper output)
    {
        var dir = Directory.CreateTempSubdirectory("dkim-fn");
        try
        {
            var eml = Path.Combine(dir.FullName, "m.eml");
            var dns = Path.Combine(dir.FullName, "dns.json");
            await File.WriteAllBytesAsync(eml, Encoding.Latin1.GetBytes(message.Content.Replace("\n", "\r\n", StringComparison.Ordinal)));
            await File.WriteAllTextAsync(dns, JsonSerializer.Serialize(records));
            var script = Path.Combine(RepoPaths.Root, "tests", "SmtpGateway.Tests", "Signing", "dkim_verify.py");
            var (_, log) = await ChildProcess.RunAsync("/usr/bin/python3", [script, eml, dns], dir.FullName, TimeSpan.FromSeconds(30));
            output.WriteLine($"python3-dkim: {log}");
            var json = ResultList().Match(log);
            Assert.True(json.Success, $"python3-dkim printed no result: {log}");
            return JsonSerializer.Deserialize<bool[]>(json.Value)!;
        }
        finally
        {
            dir.Delete(true);
        }
    }

    [GeneratedRegex(@"\[(true|false)(, (true|false))*\]")]
    private static partial Regex ResultList();
}
