using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;
using SmtpGateway.Signing;

namespace SmtpGateway.Tests.Signing;

/// <summary>
/// Software keys standing in for the HSM in signing-logic tests (the HSM-backed path has its own tests against
/// SoftHSM2). Records what it was asked to sign, so canonicalisation can be checked byte for byte.
/// </summary>
public sealed class SoftwareKeySigner : IDkimKeySigner
{
    readonly Dictionary<string, RSA> _rsa = [];
    readonly Dictionary<string, Ed25519PrivateKeyParameters> _ed = [];

    public List<byte[]> SignedData { get; } = [];

    public bool Fail { get; set; }

    public DkimSelector AddRsa(string domain, string selector, RSA? key = null)
    {
        var rsa = key ?? RSA.Create(2048);
        _rsa[$"{domain}/{selector}"] = rsa;
        return new DkimSelector(domain, selector, DkimAlgorithm.Rsa2048, SelectorState.Active, $"dkim:{domain}:{selector}",
            Convert.ToBase64String(rsa.ExportSubjectPublicKeyInfo()), DateTimeOffset.UtcNow, null);
    }

    public DkimSelector AddEd25519(string domain, string selector, byte[]? secret = null)
    {
        var key = secret is null ? new Ed25519PrivateKeyParameters(new Org.BouncyCastle.Security.SecureRandom()) : new Ed25519PrivateKeyParameters(secret);
        _ed[$"{domain}/{selector}"] = key;
        return new DkimSelector(domain, selector, DkimAlgorithm.Ed25519, SelectorState.Active, $"dkim:{domain}:{selector}",
            Convert.ToBase64String(key.GeneratePublicKey().GetEncoded()), DateTimeOffset.UtcNow, null);
    }

    public byte[] Sign(string tenantId, DkimSelector selector, byte[] data)
    {
        if (Fail)
        {
            throw new SigningException("HSM unavailable (test)");
        }

        SignedData.Add(data);
        var id = $"{selector.Domain}/{selector.Selector}";
        if (selector.Algorithm == DkimAlgorithm.Rsa2048)
        {
            return _rsa[id].SignData(data, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        }

        // RFC 8463 section 3: Ed25519 over the SHA-256 hash of the canonicalised data.
        var signer = new Ed25519Signer();
        signer.Init(true, _ed[id]);
        var digest = SHA256.HashData(data);
        signer.BlockUpdate(digest, 0, digest.Length);
        return signer.GenerateSignature();
    }
}

/// <summary>Runs Debian's python3-dkim over a message: the independent verifier the issue asks for.</summary>
public static class PythonDkim
{
    public static bool[] Verify(byte[] message, IReadOnlyDictionary<string, string> records)
    {
        var dir = Directory.CreateTempSubdirectory("smtpgw-dkimpy");
        try
        {
            var msg = Path.Combine(dir.FullName, "message.eml");
            var dns = Path.Combine(dir.FullName, "records.json");
            File.WriteAllBytes(msg, message);
            File.WriteAllText(dns, JsonSerializer.Serialize(records));
            var script = Path.Combine(AppContext.BaseDirectory, "Signing", "dkim_verify.py");
            using var process = Process.Start(new ProcessStartInfo("/usr/bin/python3", [script, msg, dns])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            })!;
            var stdout = process.StandardOutput.ReadToEnd();
            var stderr = process.StandardError.ReadToEnd();
            process.WaitForExit();
            Assert.True(stdout.TrimStart().StartsWith('['), $"python3-dkim did not run: {stdout}\n{stderr}");
            return JsonSerializer.Deserialize<bool[]>(stdout)!;
        }
        finally
        {
            dir.Delete(true);
        }
    }

    public static Dictionary<string, string> Records(params DkimSelector[] selectors) =>
        selectors.ToDictionary(DkimDnsRecord.Name, DkimDnsRecord.Value);

    public static byte[] Crlf(string text) => Encoding.UTF8.GetBytes(text.Replace("\r\n", "\n", StringComparison.Ordinal).Replace("\n", "\r\n", StringComparison.Ordinal));
}
