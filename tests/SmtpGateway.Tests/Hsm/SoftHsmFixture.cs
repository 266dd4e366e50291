using System.Diagnostics;
using System.Security.Cryptography;
using SmtpGateway.Hsm;

namespace SmtpGateway.Tests.Hsm;

/// <summary>
/// Every test class that talks to SoftHSM2 joins this collection. SoftHSM2 reads SOFTHSM2_CONF once per
/// process (in C_Initialize), so the whole test process shares one token directory, and the tests that
/// count logins and object searches must not overlap with others using the same tokens.
/// </summary>
[CollectionDefinition(Name)]
public sealed class SoftHsmCollection : ICollectionFixture<SoftHsmFixture>
{
    public const string Name = "SoftHSM2";
}

/// <summary>
/// Two tenants, each with its own SoftHSM2 token and PIN, and one <see cref="Pkcs11Hsm"/> over them, with an
/// RSA-2048 and an Ed25519 key already made in tenant A's token (RSA key generation is the slow part).
/// </summary>
public sealed class SoftHsmFixture : IDisposable
{
    public const string TokenLabelA = "smtpgw-tenant-a";
    public const string TokenLabelB = "smtpgw-tenant-b";
    public const string RsaKey = "dkim-a-rsa";
    public const string Ed25519Key = "dkim-a-ed25519";
    public const string Ed25519KeyB = "dkim-b-ed25519";

    static readonly Lazy<SharedSoftHsm> Shared = new(() => new SharedSoftHsm(), LazyThreadSafetyMode.ExecutionAndPublication);

    public SoftHsmFixture()
    {
        var shared = Shared.Value;
        DataDirectory = shared.DataDirectory;
        PinA = shared.PinA;
        PinB = shared.PinB;
        TenantA = new HsmTenantToken("tenant-a", TokenLabelA, HsmPin.FromString(shared.PinA));
        TenantB = new HsmTenantToken("tenant-b", TokenLabelB, HsmPin.FromString(shared.PinB));
        Hsm = new Pkcs11Hsm(new Pkcs11HsmOptions());
        RsaPublicKey = Hsm.FindPublicKey(TenantA, RsaKey) ?? Hsm.GenerateKeyPair(TenantA, RsaKey, DkimKeyAlgorithm.Rsa2048);
        Ed25519PublicKey = Hsm.FindPublicKey(TenantA, Ed25519Key) ?? Hsm.GenerateKeyPair(TenantA, Ed25519Key, DkimKeyAlgorithm.Ed25519);
        Ed25519PublicKeyB = Hsm.FindPublicKey(TenantB, Ed25519KeyB) ?? Hsm.GenerateKeyPair(TenantB, Ed25519KeyB, DkimKeyAlgorithm.Ed25519);
    }

    public string DataDirectory { get; }

    /// <summary>Tenant A's user PIN as text: for writing PIN files and for asserting that no message carries it.</summary>
    public string PinA { get; }

    public string PinB { get; }

    public HsmTenantToken TenantA { get; }

    public HsmTenantToken TenantB { get; }

    public Pkcs11Hsm Hsm { get; }

    public HsmPublicKey RsaPublicKey { get; }

    public HsmPublicKey Ed25519PublicKey { get; }

    public HsmPublicKey Ed25519PublicKeyB { get; }

    public void Dispose() => Hsm.Dispose();

    /// <summary>One temp data directory per test process, removed when the process exits.</summary>
    sealed class SharedSoftHsm
    {
        public SharedSoftHsm()
        {
            DataDirectory = Path.Combine(Path.GetTempPath(), "smtpgw-hsm-tests-" + Guid.NewGuid().ToString("N"));
            // Distinctive PINs, so a test can search messages for them.
            PinA = "pinA-" + Convert.ToHexString(RandomNumberGenerator.GetBytes(6));
            PinB = "pinB-" + Convert.ToHexString(RandomNumberGenerator.GetBytes(6));
            AppDomain.CurrentDomain.ProcessExit += (_, _) =>
            {
                try
                {
                    Directory.Delete(DataDirectory, recursive: true);
                }
                catch (IOException)
                {
                }
            };
            var setup = SoftHsmSetup.Configure(DataDirectory);
            setup.EnsureToken(TokenLabelA, "so-" + PinA, PinA);
            setup.EnsureToken(TokenLabelB, "so-" + PinB, PinB);
        }

        public string DataDirectory { get; }

        public string PinA { get; }

        public string PinB { get; }
    }
}

/// <summary>An Ed25519 verifier independent of the code under test: OpenSSL's command line.</summary>
public static class OpenSslEd25519
{
    /// <summary>RFC 8410 §4 SubjectPublicKeyInfo prefix for id-Ed25519; the 32-byte key follows.</summary>
    static readonly byte[] SpkiPrefix = Convert.FromHexString("302a300506032b6570032100");

    public static bool Verify(byte[] rawPublicKey, byte[] data, byte[] signature)
    {
        var directory = Path.Combine(Path.GetTempPath(), "smtpgw-ed25519-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        try
        {
            var pem = PemEncoding.WriteString("PUBLIC KEY", [.. SpkiPrefix, .. rawPublicKey]);
            File.WriteAllText(Path.Combine(directory, "pub.pem"), pem);
            File.WriteAllBytes(Path.Combine(directory, "data"), data);
            File.WriteAllBytes(Path.Combine(directory, "sig"), signature);
            var start = new ProcessStartInfo("openssl")
            {
                WorkingDirectory = directory,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            foreach (var argument in new[] { "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "data", "-sigfile", "sig" })
            {
                start.ArgumentList.Add(argument);
            }

            using var process = Process.Start(start)!;
            var output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
            process.WaitForExit();
            return process.ExitCode == 0 && output.Contains("Signature Verified Successfully", StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
