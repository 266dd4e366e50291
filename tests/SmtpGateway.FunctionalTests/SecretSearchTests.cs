using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Calibrates the secret searches the tenant-secrets tests rely on, on material planted on purpose: a negative result
/// there only means something if these find what is there.
/// </summary>
public sealed class SecretSearchTests(ITestOutputHelper output) : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("smtpgw-ft-secretsearch-").FullName;

    [Fact]
    public void Directory_search_finds_each_form_of_a_known_secret_and_key_like_base64_JSON_fields_but_not_sealed_or_public_ones()
    {
        var password = new KnownSecret("upstream password", "Upstream-Pa55word-" + Guid.NewGuid().ToString("N"));
        // A key with a '+' in its base64 (System.Text.Json writes it as \u002B).
        string keyValue;
        do
        {
            keyValue = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
        }
        while (!keyValue.Contains('+', StringComparison.Ordinal));
        var key = new KnownSecret("legacy token key", keyValue);
        var absent = new KnownSecret("never written", "never-written-" + Guid.NewGuid().ToString("N"));
        var data = Path.Combine(_dir, "data");
        Directory.CreateDirectory(Path.Combine(data, "a", "b"));
        File.WriteAllBytes(Path.Combine(data, "utf16.bin"), [0, 1, 2, .. Encoding.Unicode.GetBytes(password.Value), 3]);
        File.WriteAllText(Path.Combine(data, "a", "b64.txt"), "x " + Convert.ToBase64String(Encoding.UTF8.GetBytes(password.Value)));
        File.WriteAllBytes(Path.Combine(data, "a", "b", "raw.bin"), [9, .. Convert.FromBase64String(key.Value), 9]);
        File.WriteAllText(Path.Combine(data, "escaped.json"), System.Text.Json.JsonSerializer.Serialize(new { note = key.Value }));
        File.WriteAllText(Path.Combine(data, "keys.json"),
            $$"""{"keys":[{"id":"k1","secret":"{{Convert.ToBase64String(RandomNumberGenerator.GetBytes(32))}}","created":"2026-01-01T00:00:00Z"}]}""");
        File.WriteAllText(Path.Combine(data, "vault.json"),
            $$"""{"sealedDataKey":"{{Convert.ToBase64String(RandomNumberGenerator.GetBytes(60))}}","publicKey":"{{Convert.ToBase64String(RandomNumberGenerator.GetBytes(32))}}","keyId":"k1","apiToken":"short"}""");
        File.WriteAllText(Path.Combine(data, "lines.jsonl"),
            $$"""{"action":"x","tokenId":"tok_abc"}""" + "\n" + $$$"""{"nested":{"refresh_token":"{{{Convert.ToBase64String(RandomNumberGenerator.GetBytes(24)).Replace('+', '-').Replace('/', '_')}}}"}}""" + "\n");

        var copy = Path.Combine(_dir, "copy");
        SecretSearch.CopyDirectory(data, copy);
        var hits = SecretSearch.FindInDirectory(copy, [password, key, absent]);
        foreach (var hit in hits)
        {
            output.WriteLine(hit);
        }

        Assert.Contains(hits, h => h.Contains("utf16.bin contains upstream password (UTF-16LE)", StringComparison.Ordinal));
        Assert.Contains(hits, h => h.Contains("b64.txt contains upstream password (base64)", StringComparison.Ordinal));
        Assert.Contains(hits, h => h.Contains("raw.bin contains legacy token key (raw key bytes)", StringComparison.Ordinal));
        Assert.Contains(hits, h => h.Contains("escaped.json contains legacy token key (JSON-escaped)", StringComparison.Ordinal));
        Assert.DoesNotContain(hits, h => h.Contains("never written", StringComparison.Ordinal));
        Assert.DoesNotContain(hits, h => h.Contains(password.Value, StringComparison.Ordinal));

        var fields = SecretSearch.FindKeyLikeJsonFields(copy);
        foreach (var field in fields)
        {
            output.WriteLine(field);
        }

        Assert.Equal(2, fields.Count);
        Assert.Contains(fields, f => f.EndsWith("keys.json: $.keys[0].secret holds 32 base64 bytes", StringComparison.Ordinal));
        Assert.Contains(fields, f => f.EndsWith("lines.jsonl: $.nested.refresh_token holds 24 base64 bytes", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Gcore_dumps_a_live_process_and_the_search_finds_what_it_holds_in_UTF8_and_UTF16()
    {
        var held = "held-in-memory-" + Guid.NewGuid().ToString("N");
        var never = "never-in-memory-" + Guid.NewGuid().ToString("N");
        // The secret arrives on stdin (never argv); python keeps it as str and as UTF-16LE bytes.
        const string script = "import sys, time\ns = sys.stdin.readline().strip()\nu = s.encode('utf-16-le')\nprint('ready', flush=True)\ntime.sleep(600)\n";
        using var process = ChildProcess.Start("python-holder", XOAuth2Server.Python, ["-c", script], _dir, standardInput: held + "\n");
        var clock = Stopwatch.StartNew();
        while (!process.StandardOutput.Contains("ready", StringComparison.Ordinal))
        {
            Assert.False(process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(20), $"python did not get ready:\n{process.Output}");
            await Task.Delay(20);
        }

        output.WriteLine(CoreDump.PtraceDiagnostics());
        string path;
        using (var core = await CoreDump.CaptureAsync(process.Id, _dir, TimeSpan.FromSeconds(60)))
        {
            path = core.FilePath;
            output.WriteLine($"{core.FilePath}: {core.Length} bytes");
            var hits = SecretSearch.FindInFile(core.FilePath, [new KnownSecret("held", held), new KnownSecret("never", never)]);
            foreach (var hit in hits)
            {
                output.WriteLine(hit);
            }

            Assert.Contains(hits, h => h.Contains("held (UTF-8)", StringComparison.Ordinal));
            Assert.Contains(hits, h => h.Contains("held (UTF-16LE)", StringComparison.Ordinal));
            Assert.DoesNotContain(hits, h => h.Contains("never", StringComparison.Ordinal));
        }

        Assert.False(File.Exists(path), "the core file was not deleted");
        Assert.False(process.HasExited, "the process did not survive gcore");
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
