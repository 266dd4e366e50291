using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using SmtpGateway.Hsm;
using Xunit.Abstractions;

namespace SmtpGateway.Tests.Hsm;

[Collection(SoftHsmCollection.Name)]
public sealed class Pkcs11HsmConcurrencyTests(SoftHsmFixture fixture, ITestOutputHelper output)
{
    const int Tasks = 20;
    const int SignsPerTask = 10;

    [Theory]
    [InlineData(DkimKeyAlgorithm.Rsa2048)]
    [InlineData(DkimKeyAlgorithm.Ed25519)]
    public async Task ConcurrentSigns_AfterWarmUp_DoNoLoginAndNoObjectSearch(DkimKeyAlgorithm algorithm)
    {
        var (label, publicKey) = algorithm == DkimKeyAlgorithm.Rsa2048
            ? (SoftHsmFixture.RsaKey, fixture.RsaPublicKey)
            : (SoftHsmFixture.Ed25519Key, fixture.Ed25519PublicKey);
        var data = Encoding.ASCII.GetBytes("concurrent " + algorithm);
        var reference = fixture.Hsm.Sign(fixture.TenantA, label, algorithm, data); // warm-up: login, find, one session
        var logins = fixture.Hsm.Counters.Logins;
        var finds = fixture.Hsm.Counters.FindObjects;
        var resets = fixture.Hsm.Counters.Resets;

        var signatures = await Task.WhenAll(Enumerable.Range(0, Tasks).Select(_ => Task.Run(() =>
            Enumerable.Range(0, SignsPerTask).Select(_ => fixture.Hsm.Sign(fixture.TenantA, label, algorithm, data)).ToList())));

        Assert.Equal(logins, fixture.Hsm.Counters.Logins);
        Assert.Equal(finds, fixture.Hsm.Counters.FindObjects);
        Assert.Equal(resets, fixture.Hsm.Counters.Resets);
        var all = signatures.SelectMany(s => s).ToList();
        Assert.Equal(Tasks * SignsPerTask, all.Count);
        // Both schemes are deterministic (PKCS#1 v1.5, RFC 8017 §8.2; Ed25519, RFC 8032 §5.1.6), so every
        // concurrent signature must equal the one verified independently below.
        Assert.All(all, s => Assert.Equal(reference, s));
        if (algorithm == DkimKeyAlgorithm.Rsa2048)
        {
            using var rsa = RSA.Create();
            rsa.ImportSubjectPublicKeyInfo(publicKey.Value, out _);
            Assert.True(rsa.VerifyData(data, reference, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1));
        }
        else
        {
            Assert.True(OpenSslEd25519.Verify(publicKey.Value, data, reference));
        }
    }

    [Fact]
    public async Task Ed25519_SinglePartSigning_OfDifferentInputsUnderConcurrency_AllVerify()
    {
        // Many different inputs of different sizes, concurrently, each one single-part C_Sign; spot-check with
        // OpenSSL, and check all with the determinism of Ed25519 against a sequential run.
        var inputs = Enumerable.Range(0, 100).Select(i => RandomNumberGenerator.GetBytes(1 + (i * 37 % 2000))).ToArray();
        var concurrent = new byte[inputs.Length][];
        await Task.WhenAll(Enumerable.Range(0, Tasks).Select(t => Task.Run(() =>
        {
            for (var i = t; i < inputs.Length; i += Tasks)
            {
                concurrent[i] = fixture.Hsm.Sign(fixture.TenantA, SoftHsmFixture.Ed25519Key, DkimKeyAlgorithm.Ed25519, inputs[i]);
            }
        })));

        for (var i = 0; i < inputs.Length; i++)
        {
            Assert.Equal(fixture.Hsm.Sign(fixture.TenantA, SoftHsmFixture.Ed25519Key, DkimKeyAlgorithm.Ed25519, inputs[i]), concurrent[i]);
        }

        foreach (var i in new[] { 0, 17, 99 })
        {
            Assert.True(OpenSslEd25519.Verify(fixture.Ed25519PublicKey.Value, inputs[i], concurrent[i]));
        }
    }

    [Fact]
    public async Task TwoTenantsSigningAtOnce_EachGetsItsOwnKey()
    {
        var data = Encoding.ASCII.GetBytes("two tenants");
        var results = await Task.WhenAll(Enumerable.Range(0, Tasks).Select(i => Task.Run(() =>
        {
            var (token, label, key) = i % 2 == 0
                ? (fixture.TenantA, SoftHsmFixture.Ed25519Key, fixture.Ed25519PublicKey)
                : (fixture.TenantB, SoftHsmFixture.Ed25519KeyB, fixture.Ed25519PublicKeyB);
            return (Key: key, Signature: fixture.Hsm.Sign(token, label, DkimKeyAlgorithm.Ed25519, data));
        })));

        Assert.All(results.DistinctBy(r => Convert.ToHexString(r.Signature)), r => Assert.True(OpenSslEd25519.Verify(r.Key.Value, data, r.Signature)));
        Assert.Equal(2, results.Select(r => Convert.ToHexString(r.Signature)).Distinct().Count());
    }

    [Fact]
    public void StaleHandle_ObjectDestroyedBehindTheCache_ResetsOnce_ThenReportsKeyNotFound()
    {
        const string label = "destroyed-behind-the-cache";
        var data = Encoding.ASCII.GetBytes("stale");
        fixture.Hsm.GenerateKeyPair(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519);
        fixture.Hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, data); // private key handle cached
        DestroyBypassingTheCache(label);
        var (resets, logins, finds) = (fixture.Hsm.Counters.Resets, fixture.Hsm.Counters.Logins, fixture.Hsm.Counters.FindObjects);

        var ex = Assert.Throws<HsmException>(() => fixture.Hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, data));

        // The dead handle (CKR_OBJECT_HANDLE_INVALID) dropped the token's login, sessions and handles once;
        // the retry logged in and searched afresh, and found nothing.
        Assert.Equal(HsmErrorKind.KeyNotFound, ex.Kind);
        Assert.Equal(resets + 1, fixture.Hsm.Counters.Resets);
        Assert.Equal(logins + 1, fixture.Hsm.Counters.Logins);
        Assert.Equal(finds + 1, fixture.Hsm.Counters.FindObjects);

        // A key made again under the label is found and used.
        var replacement = fixture.Hsm.GenerateKeyPair(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519);
        Assert.True(OpenSslEd25519.Verify(replacement.Value, data, fixture.Hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, data)));
        Assert.True(fixture.Hsm.DeleteKeyPair(fixture.TenantA, label));
    }

    [Fact]
    public void KeyReplacedThroughAnotherInstance_IsSeenWithoutAReset()
    {
        // Instances in one process share the module, the token logins and the handle cache (PKCS#11 state is
        // per application), so a rotation through one is seen by the other at once.
        const string label = "replaced-through-another-instance";
        var data = Encoding.ASCII.GetBytes("replaced");
        fixture.Hsm.GenerateKeyPair(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519);
        fixture.Hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, data);
        HsmPublicKey replacement;
        using (var other = new Pkcs11Hsm(new Pkcs11HsmOptions()))
        {
            Assert.True(other.DeleteKeyPair(fixture.TenantA, label));
            replacement = other.GenerateKeyPair(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519);
        }

        var resets = fixture.Hsm.Counters.Resets;
        var signature = fixture.Hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, data);

        Assert.Equal(resets, fixture.Hsm.Counters.Resets);
        Assert.True(OpenSslEd25519.Verify(replacement.Value, data, signature));
        Assert.True(fixture.Hsm.DeleteKeyPair(fixture.TenantA, label));
    }

    /// <summary>Every object with the label, the key's session copy included (a token object alone gone is Pkcs11HsmSessionCopyTests).</summary>
    void DestroyBypassingTheCache(string label)
    {
        var factory = new Net.Pkcs11Interop.HighLevelAPI.Pkcs11InteropFactories().ObjectAttributeFactory;
        fixture.Hsm.WithSession(fixture.TenantA, session =>
        {
            foreach (var handle in session.FindAllObjects([factory.Create(Net.Pkcs11Interop.Common.CKA.CKA_LABEL, label)]))
            {
                session.DestroyObject(handle);
            }

            return true;
        });
    }

    [Theory]
    [InlineData(DkimKeyAlgorithm.Rsa2048)]
    [InlineData(DkimKeyAlgorithm.Ed25519)]
    public async Task Throughput_IsReported(DkimKeyAlgorithm algorithm)
    {
        var label = algorithm == DkimKeyAlgorithm.Rsa2048 ? SoftHsmFixture.RsaKey : SoftHsmFixture.Ed25519Key;
        var data = SHA256.HashData(Encoding.ASCII.GetBytes("throughput"));
        fixture.Hsm.Sign(fixture.TenantA, label, algorithm, data);
        var count = algorithm == DkimKeyAlgorithm.Rsa2048 ? 200 : 1000;

        var watch = Stopwatch.StartNew();
        for (var i = 0; i < count; i++)
        {
            fixture.Hsm.Sign(fixture.TenantA, label, algorithm, data);
        }

        var single = watch.Elapsed;
        watch.Restart();
        await Task.WhenAll(Enumerable.Range(0, Tasks).Select(_ => Task.Run(() =>
        {
            for (var i = 0; i < count / Tasks; i++)
            {
                fixture.Hsm.Sign(fixture.TenantA, label, algorithm, data);
            }
        })));
        var parallel = watch.Elapsed;

        output.WriteLine($"{algorithm}: 1 thread {count / single.TotalSeconds:0} signs/s ({single.TotalMilliseconds * 1000 / count:0} µs/sign); "
            + $"{Tasks} tasks {count / parallel.TotalSeconds:0} signs/s on {Environment.ProcessorCount} cores");
        Assert.True(single > TimeSpan.Zero && parallel > TimeSpan.Zero);
    }
}
