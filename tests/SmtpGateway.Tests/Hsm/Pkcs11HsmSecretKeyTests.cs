using System.Security.Cryptography;
using System.Text;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Signing;
using LowLevel = Net.Pkcs11Interop.LowLevelAPI80;

namespace SmtpGateway.Tests.Hsm;

/// <summary>HMAC and AES-GCM keys in the tenant tokens (SoftHSM2 2.6.1): what ITenantKeys is built on.</summary>
[Collection(SoftHsmCollection.Name)]
public sealed class Pkcs11HsmSecretKeyTests(SoftHsmFixture fixture)
{
    static readonly byte[] Data = Encoding.ASCII.GetBytes("smtpgw-token\0tenant-a\0k1\0" + new string('x', 70));
    static readonly byte[] Aad = Encoding.ASCII.GetBytes("smtpgw-vault-dek\0tenant-a\0smtpgw-vault-kek-1");

    static string NewLabel(string kind) => $"smtpgw-test-{kind}-{Guid.NewGuid():N}";

    [Fact]
    public void Hmac_OfAnImportedKnownKey_EqualsHmacSha256()
    {
        var label = NewLabel("import");
        var secret = RandomNumberGenerator.GetBytes(32);
        fixture.Hsm.ImportHmacKey(fixture.TenantA, label, secret);

        Assert.Equal(HMACSHA256.HashData(secret, Data), fixture.Hsm.Hmac(fixture.TenantA, label, Data));
        Assert.Equal(HMACSHA256.HashData(secret, Array.Empty<byte>()), fixture.Hsm.Hmac(fixture.TenantA, label, []));
        var large = RandomNumberGenerator.GetBytes(5000);
        Assert.Equal(HMACSHA256.HashData(secret, large), fixture.Hsm.Hmac(fixture.TenantA, label, large));
    }

    [Fact]
    public void Hmac_OfAGeneratedKey_Is32BytesAndDeterministic()
    {
        var label = NewLabel("mac");
        fixture.Hsm.GenerateSecretKey(fixture.TenantA, label, HsmSecretKeyType.Hmac256);

        var mac = fixture.Hsm.Hmac(fixture.TenantA, label, Data);

        Assert.Equal(32, mac.Length);
        Assert.Equal(mac, fixture.Hsm.Hmac(fixture.TenantA, label, Data));
        Assert.NotEqual(mac, fixture.Hsm.Hmac(fixture.TenantA, label, [.. Data, 0]));
    }

    [Theory]
    [InlineData("generate-hmac")]
    [InlineData("generate-aes")]
    [InlineData("import-hmac")]
    public void SecretKeys_AreSensitiveNonExtractableSingleUse_AndTheirValueIsRefused(string how)
    {
        var label = NewLabel(how);
        var mac = how != "generate-aes";
        if (how == "import-hmac")
        {
            fixture.Hsm.ImportHmacKey(fixture.TenantA, label, RandomNumberGenerator.GetBytes(32));
        }
        else
        {
            fixture.Hsm.GenerateSecretKey(fixture.TenantA, label, mac ? HsmSecretKeyType.Hmac256 : HsmSecretKeyType.Aes256);
        }

        var factory = new Pkcs11InteropFactories().ObjectAttributeFactory;
        fixture.Hsm.WithSession(fixture.TenantA, session =>
        {
            var key = Assert.Single(session.FindAllObjects([factory.Create(CKA.CKA_CLASS, CKO.CKO_SECRET_KEY), factory.Create(CKA.CKA_LABEL, label)]));
            var attributes = session.GetAttributeValue(key, [CKA.CKA_KEY_TYPE, CKA.CKA_VALUE_LEN]);
            Assert.Equal((ulong)(mac ? CKK.CKK_GENERIC_SECRET : CKK.CKK_AES), attributes[0].GetValueAsUlong());
            Assert.Equal(32UL, attributes[1].GetValueAsUlong());
            var flags = session.GetAttributeValue(key, [CKA.CKA_TOKEN, CKA.CKA_PRIVATE, CKA.CKA_SENSITIVE, CKA.CKA_EXTRACTABLE, CKA.CKA_NEVER_EXTRACTABLE,
                CKA.CKA_SIGN, CKA.CKA_VERIFY, CKA.CKA_ENCRYPT, CKA.CKA_DECRYPT, CKA.CKA_WRAP, CKA.CKA_UNWRAP, CKA.CKA_DERIVE]);
            // An imported key was once outside the token, so CKA_NEVER_EXTRACTABLE is false for it (v2.40 §4.9).
            var generated = how != "import-hmac";
            Assert.Equal([true, true, true, false, generated, mac, mac, !mac, !mac, false, false, false], flags.Select(a => a.GetValueAsBool()));

            // C_GetAttributeValue(CKA_VALUE) straight through the low-level API: CKR_ATTRIBUTE_SENSITIVE (v2.40 §5.7.5),
            // and no length revealed (CK_UNAVAILABLE_INFORMATION).
            using var module = new LowLevel.Pkcs11Library(SoftHsmSetup.DefaultModulePath);
            var value = new[] { LowLevel.CkaUtils.CreateAttribute(CKA.CKA_VALUE) };
            Assert.Equal(CKR.CKR_ATTRIBUTE_SENSITIVE, module.C_GetAttributeValue(session.SessionId, key.ObjectId, value, 1));
            Assert.Equal(ulong.MaxValue, value[0].valueLen);
            Assert.True(session.GetAttributeValue(key, [CKA.CKA_VALUE])[0].CannotBeRead);

            // Nobody with the PIN can give the key another use or copy it with other attributes (v2.40 §4.4).
            var modify = Assert.Throws<Pkcs11Exception>(() => session.SetAttributeValue(key, [factory.Create(CKA.CKA_WRAP, true)]));
            Assert.Contains(modify.RV, new[] { CKR.CKR_ATTRIBUTE_READ_ONLY, CKR.CKR_ACTION_PROHIBITED });
            Assert.Throws<Pkcs11Exception>(() => session.CopyObject(key, [factory.Create(CKA.CKA_DERIVE, true)]));
            return true;
        });
    }

    [Fact]
    public void LabelOfTenantA_DoesNotExistInTenantBsToken()
    {
        var label = NewLabel("isolated");
        fixture.Hsm.GenerateSecretKey(fixture.TenantA, label, HsmSecretKeyType.Hmac256);

        Assert.True(fixture.Hsm.HasSecretKey(fixture.TenantA, label));
        Assert.False(fixture.Hsm.HasSecretKey(fixture.TenantB, label));
        var ex = Assert.Throws<HsmException>(() => fixture.Hsm.Hmac(fixture.TenantB, label, Data));
        Assert.Equal(HsmErrorKind.KeyNotFound, ex.Kind);
        Assert.Equal("tenant-b", ex.TenantId);
        Assert.False(fixture.Hsm.DeleteSecretKey(fixture.TenantB, label));
        Assert.True(fixture.Hsm.HasSecretKey(fixture.TenantA, label));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(32)]
    [InlineData(1000)]
    public void Seal_ThenOpen_RoundTrips_WithAFreshNonceEachTime(int length)
    {
        var label = NewLabel("kek");
        fixture.Hsm.GenerateSecretKey(fixture.TenantA, label, HsmSecretKeyType.Aes256);
        var plaintext = RandomNumberGenerator.GetBytes(length);

        var sealedData = fixture.Hsm.Seal(fixture.TenantA, label, plaintext, Aad);
        var again = fixture.Hsm.Seal(fixture.TenantA, label, plaintext, Aad);

        Assert.Equal(12 + length + 16, sealedData.Length);
        Assert.NotEqual(sealedData[..12], again[..12]);
        Assert.Equal(plaintext, fixture.Hsm.Open(fixture.TenantA, label, sealedData, Aad));
        Assert.Equal(plaintext, fixture.Hsm.Open(fixture.TenantA, label, again, Aad));
    }

    [Fact]
    public void Seal_IsStandardAesGcm_NonceCiphertextTag()
    {
        // The layout is what other code may rely on: check it against .NET's AesGcm with a key we know, imported through
        // the low-level API as an AES key (the gateway itself never imports AES keys).
        var label = NewLabel("known-aes");
        var key = RandomNumberGenerator.GetBytes(32);
        var f = new Pkcs11InteropFactories().ObjectAttributeFactory;
        fixture.Hsm.WithSession(fixture.TenantA, session => session.CreateObject(
        [
            f.Create(CKA.CKA_CLASS, CKO.CKO_SECRET_KEY), f.Create(CKA.CKA_KEY_TYPE, CKK.CKK_AES), f.Create(CKA.CKA_TOKEN, false),
            f.Create(CKA.CKA_ENCRYPT, true), f.Create(CKA.CKA_DECRYPT, true), f.Create(CKA.CKA_LABEL, label), f.Create(CKA.CKA_VALUE, key),
        ]));
        var plaintext = Encoding.ASCII.GetBytes("data key bytes");

        var sealedData = fixture.Hsm.Seal(fixture.TenantA, label, plaintext, Aad);

        var opened = new byte[plaintext.Length];
        using var aes = new AesGcm(key, 16);
        aes.Decrypt(sealedData[..12], sealedData[12..^16], sealedData[^16..], opened, Aad);
        Assert.Equal(plaintext, opened);
    }

    [Fact]
    public void Open_WithWrongAad_FlippedByte_TruncatedData_OrAnotherTenantsKey_IsDataInvalid()
    {
        var label = NewLabel("kek");
        fixture.Hsm.GenerateSecretKey(fixture.TenantA, label, HsmSecretKeyType.Aes256);
        fixture.Hsm.GenerateSecretKey(fixture.TenantB, label, HsmSecretKeyType.Aes256); // same label, B's own key
        var plaintext = RandomNumberGenerator.GetBytes(32);
        var sealedData = fixture.Hsm.Seal(fixture.TenantA, label, plaintext, Aad);

        void AssertDataInvalid(HsmTenantToken token, byte[] data, byte[] aad)
        {
            var ex = Assert.Throws<HsmException>(() => fixture.Hsm.Open(token, label, data, aad));
            Assert.True(ex.Kind == HsmErrorKind.DataInvalid, ex.Message);
            Assert.Equal(HsmErrorKind.DataInvalid, ex.Kind);
            Assert.False(ex.Transient);
        }

        AssertDataInvalid(fixture.TenantA, sealedData, [.. Aad, 0]);
        AssertDataInvalid(fixture.TenantA, sealedData, []);
        foreach (var position in new[] { 0, 11, 12, 12 + 31, sealedData.Length - 1 }) // nonce, ciphertext, tag
        {
            var flipped = sealedData.ToArray();
            flipped[position] ^= 0x01;
            AssertDataInvalid(fixture.TenantA, flipped, Aad);
        }

        AssertDataInvalid(fixture.TenantA, sealedData[..27], Aad);
        AssertDataInvalid(fixture.TenantA, sealedData[..^1], Aad);
        AssertDataInvalid(fixture.TenantB, sealedData, Aad);

        // Each failed C_Decrypt ended its operation and left the session usable: the good record still opens.
        Assert.Equal(plaintext, fixture.Hsm.Open(fixture.TenantA, label, sealedData, Aad));
    }

    [Fact]
    public void KeyKinds_AreNotInterchangeable_AndLabelsAreUnique()
    {
        var mac = NewLabel("mac");
        var kek = NewLabel("kek");
        fixture.Hsm.GenerateSecretKey(fixture.TenantA, mac, HsmSecretKeyType.Hmac256);
        fixture.Hsm.GenerateSecretKey(fixture.TenantA, kek, HsmSecretKeyType.Aes256);

        Assert.Equal(HsmErrorKind.KeyMismatch, Assert.Throws<HsmException>(() => fixture.Hsm.Hmac(fixture.TenantA, kek, Data)).Kind);
        Assert.Equal(HsmErrorKind.KeyMismatch, Assert.Throws<HsmException>(() => fixture.Hsm.Seal(fixture.TenantA, mac, Data, Aad)).Kind);
        Assert.Equal(HsmErrorKind.KeyExists, Assert.Throws<HsmException>(() => fixture.Hsm.GenerateSecretKey(fixture.TenantA, mac, HsmSecretKeyType.Aes256)).Kind);
        Assert.Equal(HsmErrorKind.KeyExists, Assert.Throws<HsmException>(() => fixture.Hsm.ImportHmacKey(fixture.TenantA, kek, new byte[32])).Kind);
        // A DKIM key pair's label is taken too, and deleting a secret key by that label leaves the pair alone.
        Assert.Equal(HsmErrorKind.KeyExists,
            Assert.Throws<HsmException>(() => fixture.Hsm.GenerateSecretKey(fixture.TenantA, SoftHsmFixture.Ed25519Key, HsmSecretKeyType.Hmac256)).Kind);
        Assert.False(fixture.Hsm.DeleteSecretKey(fixture.TenantA, SoftHsmFixture.Ed25519Key));
        Assert.NotNull(fixture.Hsm.FindPublicKey(fixture.TenantA, SoftHsmFixture.Ed25519Key));
    }

    [Fact]
    public void DeleteSecretKey_DestroysIt_AndACachedHandleIsNotUsedAfterwards()
    {
        var label = NewLabel("delete");
        fixture.Hsm.GenerateSecretKey(fixture.TenantA, label, HsmSecretKeyType.Hmac256);
        fixture.Hsm.Hmac(fixture.TenantA, label, Data); // caches the handle

        Assert.True(fixture.Hsm.DeleteSecretKey(fixture.TenantA, label));

        Assert.False(fixture.Hsm.HasSecretKey(fixture.TenantA, label));
        Assert.Equal(HsmErrorKind.KeyNotFound, Assert.Throws<HsmException>(() => fixture.Hsm.Hmac(fixture.TenantA, label, Data)).Kind);
        Assert.False(fixture.Hsm.DeleteSecretKey(fixture.TenantA, label));
        // The label is free again: rotation may reuse it.
        fixture.Hsm.GenerateSecretKey(fixture.TenantA, label, HsmSecretKeyType.Hmac256);
        Assert.Equal(32, fixture.Hsm.Hmac(fixture.TenantA, label, Data).Length);
    }

    [Fact]
    public async Task PerCallPath_AfterTheFirstCall_DoesNoLoginAndNoObjectSearch()
    {
        var mac = NewLabel("mac");
        var kek = NewLabel("kek");
        fixture.Hsm.GenerateSecretKey(fixture.TenantA, mac, HsmSecretKeyType.Hmac256);
        fixture.Hsm.GenerateSecretKey(fixture.TenantA, kek, HsmSecretKeyType.Aes256);
        var reference = fixture.Hsm.Hmac(fixture.TenantA, mac, Data);
        var sealedData = fixture.Hsm.Seal(fixture.TenantA, kek, Data, Aad);
        Assert.True(fixture.Hsm.HasSecretKey(fixture.TenantA, mac));
        var (logins, finds, resets) = (fixture.Hsm.Counters.Logins, fixture.Hsm.Counters.FindObjects, fixture.Hsm.Counters.Resets);

        var results = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(() =>
        {
            for (var i = 0; i < 10; i++)
            {
                Assert.Equal(reference, fixture.Hsm.Hmac(fixture.TenantA, mac, Data));
                Assert.Equal(Data, fixture.Hsm.Open(fixture.TenantA, kek, fixture.Hsm.Seal(fixture.TenantA, kek, Data, Aad), Aad));
                Assert.True(fixture.Hsm.HasSecretKey(fixture.TenantA, kek));
            }

            return fixture.Hsm.Open(fixture.TenantA, kek, sealedData, Aad);
        })));

        Assert.All(results, r => Assert.Equal(Data, r));
        Assert.Equal(logins, fixture.Hsm.Counters.Logins);
        Assert.Equal(finds, fixture.Hsm.Counters.FindObjects);
        Assert.Equal(resets, fixture.Hsm.Counters.Resets);
    }

    [Theory]
    [InlineData(CKM.CKM_GENERIC_SECRET_KEY_GEN, CKF.CKF_GENERATE)]
    [InlineData(CKM.CKM_AES_KEY_GEN, CKF.CKF_GENERATE)]
    [InlineData(CKM.CKM_SHA256_HMAC, CKF.CKF_SIGN | CKF.CKF_VERIFY)]
    [InlineData(CKM.CKM_AES_GCM, CKF.CKF_ENCRYPT | CKF.CKF_DECRYPT)]
    public void SoftHsm_OffersTheMechanism_ForTheFunctionsUsed(CKM mechanism, ulong functions)
    {
        // C_GetMechanismInfo on the token's slot (v2.40 §5.5.7), low-level on the module the fixture loaded.
        var slotId = fixture.Hsm.WithSession(fixture.TenantA, session => session.GetSessionInfo().SlotId);
        using var module = new LowLevel.Pkcs11Library(SoftHsmSetup.DefaultModulePath);
        var info = new LowLevel.CK_MECHANISM_INFO();
        Assert.Equal(CKR.CKR_OK, module.C_GetMechanismInfo(slotId, mechanism, ref info));
        Assert.Equal(functions, info.Flags & functions);
    }
}

/// <summary><see cref="HsmTenantKeys"/>: the tenant id picks the token, and PIN trouble is an HsmException.</summary>
[Collection(SoftHsmCollection.Name)]
public sealed class HsmTenantKeysTests(SoftHsmFixture fixture) : IDisposable
{
    readonly DirectoryInfo _pins = Directory.CreateTempSubdirectory("smtpgw-tenantkeys");

    HsmTenantKeys Keys()
    {
        var pins = new Dictionary<string, string> { ["tenant-a"] = fixture.PinA, ["tenant-b"] = fixture.PinB };
        foreach (var (tenant, pin) in pins)
        {
            TestPinFiles.Write(Path.Combine(_pins.FullName, tenant + ".pin"), pin);
        }

        var labels = new Dictionary<string, string> { ["tenant-a"] = SoftHsmFixture.TokenLabelA, ["tenant-b"] = SoftHsmFixture.TokenLabelB };
        return new HsmTenantKeys(fixture.Hsm, new TenantHsmTokens(_pins.FullName, tenant =>
            labels.TryGetValue(tenant, out var label) ? new TenantHsmModel(label, Path.Combine(_pins.FullName, tenant + ".pin"), null) : null));
    }

    [Fact]
    public void MacAndSeal_GoToTheTenantsOwnToken()
    {
        var keys = Keys();
        var label = $"smtpgw-token-{Guid.NewGuid():N}";
        var secret = RandomNumberGenerator.GetBytes(32);
        keys.ImportMacKey("tenant-a", label, secret);
        keys.CreateMacKey("tenant-b", label);

        Assert.True(keys.HasKey("tenant-a", label));
        Assert.Equal(HMACSHA256.HashData(secret, "abc"u8), keys.Mac("tenant-a", label, "abc"u8));
        Assert.NotEqual(keys.Mac("tenant-a", label, "abc"u8), keys.Mac("tenant-b", label, "abc"u8));

        var kek = "smtpgw-vault-kek-" + Guid.NewGuid().ToString("N");
        keys.CreateWrappingKey("tenant-a", kek);
        var sealedData = keys.Seal("tenant-a", kek, "dek"u8, "aad"u8);
        Assert.Equal("dek"u8.ToArray(), keys.Open("tenant-a", kek, sealedData, "aad"u8));
        Assert.Equal(HsmErrorKind.KeyNotFound, Assert.Throws<HsmException>(() => keys.Open("tenant-b", kek, sealedData, "aad"u8)).Kind);
        Assert.True(keys.DeleteKey("tenant-a", kek));
        Assert.False(keys.HasKey("tenant-a", kek));
    }

    [Fact]
    public void Mac_AfterTheFirstCall_ResolvesFromCaches_WithoutLoginOrObjectSearch()
    {
        var keys = Keys();
        var label = $"smtpgw-verp-{Guid.NewGuid():N}";
        keys.CreateMacKey("tenant-b", label);
        var reference = keys.Mac("tenant-b", label, "return-path"u8);
        var (logins, finds) = (fixture.Hsm.Counters.Logins, fixture.Hsm.Counters.FindObjects);

        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(reference, keys.Mac("tenant-b", label, "return-path"u8));
        }

        Assert.Equal(logins, fixture.Hsm.Counters.Logins);
        Assert.Equal(finds, fixture.Hsm.Counters.FindObjects);
    }

    [Fact]
    public void ATenantWithoutPin_IsAnHsmConfigurationError()
    {
        var ex = Assert.Throws<HsmException>(() => Keys().Mac("tenant-c", "smtpgw-token-1", "abc"u8));

        Assert.Equal(HsmErrorKind.Configuration, ex.Kind);
        Assert.Equal("tenant-c", ex.TenantId);
    }

    public void Dispose() => _pins.Delete(recursive: true);
}
