using System.Text;
using Microsoft.Extensions.Time.Testing;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using SmtpGateway.Hsm;

namespace SmtpGateway.Tests.Hsm;

/// <summary>
/// DKIM private keys are signed with as session-object copies (SoftHSM2 re-reads a token object's file on every
/// C_SignInit), and the token object is looked up again once per recheck interval so a deletion elsewhere is noticed.
/// </summary>
[Collection(SoftHsmCollection.Name)]
public sealed class Pkcs11HsmSessionCopyTests(SoftHsmFixture fixture)
{
    static readonly byte[] Data = Encoding.ASCII.GetBytes("session copy");
    static readonly Pkcs11InteropFactories Factories = new();

    [Fact]
    public void Signing_UsesOnePrivateSessionCopy_AndAnInProcessDeleteDestroysIt()
    {
        const string label = "session-copy-made";
        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions(), null, new FakeTimeProvider(DateTimeOffset.UtcNow));
        var key = hsm.GenerateKeyPair(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519);
        try
        {
            Assert.Empty(SessionObjects(hsm, label));
            for (var i = 0; i < 3; i++)
            {
                Assert.True(OpenSslEd25519.Verify(key.Value, Data, hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, Data)));
            }

            // One copy however often it signs: a private key, still private, sensitive and non-extractable.
            var copy = Assert.Single(SessionObjects(hsm, label));
            var attributes = hsm.WithSession(fixture.TenantA, session => session.GetAttributeValue(copy,
                [CKA.CKA_CLASS, CKA.CKA_PRIVATE, CKA.CKA_SENSITIVE, CKA.CKA_EXTRACTABLE]));
            Assert.Equal((ulong)CKO.CKO_PRIVATE_KEY, attributes[0].GetValueAsUlong());
            Assert.True(attributes[1].GetValueAsBool());
            Assert.True(attributes[2].GetValueAsBool());
            Assert.False(attributes[3].GetValueAsBool());
            // C_CopyObject kept the sensitive value inside: reading it is refused like the original's (CKR_ATTRIBUTE_SENSITIVE,
            // which Pkcs11Interop reports as an attribute that cannot be read).
            var value = hsm.WithSession(fixture.TenantA, session => session.GetAttributeValue(copy, [CKA.CKA_VALUE])[0]);
            Assert.True(value.CannotBeRead);
            Assert.Throws<AttributeValueException>(value.GetValueAsByteArray);
        }
        finally
        {
            Assert.True(hsm.DeleteKeyPair(fixture.TenantA, label));
        }

        Assert.Empty(SessionObjects(hsm, label));
        Assert.Equal(HsmErrorKind.KeyNotFound,
            Assert.Throws<HsmException>(() => hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, Data)).Kind);
    }

    [Fact]
    public void TokenObjectDeletedElsewhere_StopsSigningWithinTheRecheckInterval()
    {
        const string label = "session-copy-deleted-elsewhere";
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions { KeyCopyRecheckInterval = TimeSpan.FromSeconds(2) }, null, time);
        var key = hsm.GenerateKeyPair(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519);
        try
        {
            hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, Data);

            // As another program does it (softhsm2-util; the CLI with the admin API down): the token object goes, this process's cache is not told.
            hsm.WithSession(fixture.TenantA, session =>
            {
                session.DestroyObject(Assert.Single(session.FindAllObjects(
                    [Factories.ObjectAttributeFactory.Create(CKA.CKA_TOKEN, true), Factories.ObjectAttributeFactory.Create(CKA.CKA_CLASS, CKO.CKO_PRIVATE_KEY),
                     Factories.ObjectAttributeFactory.Create(CKA.CKA_LABEL, label)])));
                return true;
            });

            // Within the interval the copy still signs, which shows signing does not touch the token object.
            time.Advance(TimeSpan.FromSeconds(1.9));
            Assert.True(OpenSslEd25519.Verify(key.Value, Data, hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, Data)));
            var resets = hsm.Counters.Resets;

            time.Advance(TimeSpan.FromSeconds(0.1));
            var ex = Assert.Throws<HsmException>(() => hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, Data));

            // The lookup found the handle stale, dropped the login (and the copy with its anchor session), and the
            // fresh login's search found no key.
            Assert.Equal(HsmErrorKind.KeyNotFound, ex.Kind);
            Assert.Equal(resets + 1, hsm.Counters.Resets);
            Assert.Empty(SessionObjects(hsm, label));
        }
        finally
        {
            hsm.DeleteKeyPair(fixture.TenantA, label);
        }
    }

    [Fact]
    public void SoftHsm2_GetsCopiesByDefault_EveryOtherModuleOnlyWhenConfigured()
    {
        Assert.Null(new Pkcs11HsmOptions().KeyCopyRecheckInterval);
        Assert.Equal(TimeSpan.FromSeconds(1), Pkcs11HsmOptions.SoftHsmKeyCopyRecheckInterval);
        // The module here is SoftHSM2, so the default makes copies (the first test above); the rule for other modules is
        // the manufacturer check, read from the loaded module.
        Assert.True(fixture.Hsm.WithSession(fixture.TenantA, _ => true));
        var runtime = Pkcs11Runtime.Acquire(SoftHsmSetup.DefaultModulePath, new Pkcs11HsmOptions(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        try
        {
            Assert.True(runtime.IsSoftHsm);
        }
        finally
        {
            runtime.Release();
        }
    }

    [Theory]
    [InlineData(null, true, 1000)]
    [InlineData(null, false, 0)]
    [InlineData(0, true, 0)]
    [InlineData(250, false, 250)]
    public void CopiesByDefaultOnlyWithSoftHsm2_AnyModuleWhenConfigured(int? configuredMs, bool softHsm, int expectedMs) =>
        Assert.Equal(TimeSpan.FromMilliseconds(expectedMs),
            Pkcs11Hsm.EffectiveCopyRecheck(configuredMs is { } ms ? TimeSpan.FromMilliseconds(ms) : null, softHsm));

    [Fact]
    public async Task ParallelFirstSignatures_MakeOneCopy()
    {
        const string label = "session-copy-parallel";
        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions(), null, new FakeTimeProvider(DateTimeOffset.UtcNow));
        var key = hsm.GenerateKeyPair(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519);
        try
        {
            using var start = new Barrier(6);
            var signatures = Enumerable.Range(0, 6).Select(_ => Task.Factory.StartNew(() =>
            {
                start.SignalAndWait();
                return hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, Data);
            }, TaskCreationOptions.LongRunning)).ToArray();
            var results = await Task.WhenAll(signatures);

            Assert.All(results, signature => Assert.True(OpenSslEd25519.Verify(key.Value, Data, signature)));
            Assert.Single(SessionObjects(hsm, label));
        }
        finally
        {
            Assert.True(hsm.DeleteKeyPair(fixture.TenantA, label));
        }
    }

    [Fact]
    public void KeyDeletedElsewhere_LabelCanBeTakenAgainAtOnce_AndARefusedClaimKeepsTheCopy()
    {
        const string label = "session-copy-label-again";
        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions(), null, new FakeTimeProvider(DateTimeOffset.UtcNow));
        var first = hsm.GenerateKeyPair(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519);
        try
        {
            hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, Data);
            var resets = hsm.Counters.Resets;

            // A claim of a label that is taken is refused, and changes nothing: the copy still signs, no reset.
            Assert.Equal(HsmErrorKind.KeyExists,
                Assert.Throws<HsmException>(() => hsm.GenerateKeyPair(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519)).Kind);
            Assert.Single(SessionObjects(hsm, label));
            Assert.True(OpenSslEd25519.Verify(first.Value, Data, hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, Data)));
            Assert.Equal(resets, hsm.Counters.Resets);

            // Another process deletes the key pair (token objects only; the copy lives on until its recheck)...
            hsm.WithSession(fixture.TenantA, session =>
            {
                foreach (var handle in session.FindAllObjects(
                    [Factories.ObjectAttributeFactory.Create(CKA.CKA_TOKEN, true), Factories.ObjectAttributeFactory.Create(CKA.CKA_LABEL, label)]))
                {
                    session.DestroyObject(handle);
                }

                return true;
            });
            Assert.Single(SessionObjects(hsm, label));

            // ...and the label can be taken at once: the stale copy is not "an object labelled" so, and is destroyed.
            var second = hsm.GenerateKeyPair(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519);
            Assert.True(OpenSslEd25519.Verify(second.Value, Data, hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, Data)));
            Assert.Single(SessionObjects(hsm, label));
        }
        finally
        {
            hsm.DeleteKeyPair(fixture.TenantA, label);
        }

        Assert.Empty(SessionObjects(hsm, label));
    }

    [Fact]
    public void ZeroInterval_SignsWithTheTokenObject()
    {
        const string label = "session-copy-off";
        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions { KeyCopyRecheckInterval = TimeSpan.Zero });
        var key = hsm.GenerateKeyPair(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519);
        try
        {
            Assert.True(OpenSslEd25519.Verify(key.Value, Data, hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, Data)));
            Assert.Empty(SessionObjects(hsm, label));
        }
        finally
        {
            Assert.True(hsm.DeleteKeyPair(fixture.TenantA, label));
        }
    }

    [Fact]
    public void KeyTheTokenWillNotCopy_SignsWithTheTokenObject()
    {
        // A key made by another tool with CKA_COPYABLE false (v2.40 §4.4): C_CopyObject answers CKR_ACTION_PROHIBITED.
        const string label = "session-copy-refused";
        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions(), null, new FakeTimeProvider(DateTimeOffset.UtcNow));
        var publicValue = hsm.WithSession(fixture.TenantA, session =>
        {
            var f = Factories.ObjectAttributeFactory;
            using var mechanism = Factories.MechanismFactory.Create(Pkcs11Constants.CKM_EC_EDWARDS_KEY_PAIR_GEN);
            session.GenerateKeyPair(mechanism,
                [f.Create(CKA.CKA_TOKEN, true), f.Create(CKA.CKA_VERIFY, true), f.Create(CKA.CKA_LABEL, label), f.Create(CKA.CKA_EC_PARAMS, Pkcs11Constants.Ed25519ParamsOid.ToArray())],
                [f.Create(CKA.CKA_TOKEN, true), f.Create(CKA.CKA_PRIVATE, true), f.Create(CKA.CKA_SENSITIVE, true), f.Create(CKA.CKA_SIGN, true),
                 f.Create(CKA.CKA_COPYABLE, false), f.Create(CKA.CKA_LABEL, label)],
                out var publicKey, out _);
            return publicKey;
        });
        try
        {
            var key = Assert.IsType<HsmPublicKey>(hsm.FindPublicKey(fixture.TenantA, label));
            Assert.True(OpenSslEd25519.Verify(key.Value, Data, hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, Data)));
            Assert.True(OpenSslEd25519.Verify(key.Value, Data, hsm.Sign(fixture.TenantA, label, DkimKeyAlgorithm.Ed25519, Data)));
            Assert.Empty(SessionObjects(hsm, label));
            Assert.NotNull(publicValue);
        }
        finally
        {
            Assert.True(hsm.DeleteKeyPair(fixture.TenantA, label));
        }
    }

    List<IObjectHandle> SessionObjects(Pkcs11Hsm hsm, string label) => hsm.WithSession(fixture.TenantA, session => session.FindAllObjects(
        [Factories.ObjectAttributeFactory.Create(CKA.CKA_TOKEN, false), Factories.ObjectAttributeFactory.Create(CKA.CKA_LABEL, label)]));
}
