using System.Text;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using SmtpGateway.Hsm;

namespace SmtpGateway.Tests.Hsm;

[Collection(SoftHsmCollection.Name)]
public sealed class Pkcs11HsmIsolationTests(SoftHsmFixture fixture)
{
    static readonly byte[] Data = Encoding.ASCII.GetBytes("isolation");

    [Fact]
    public void KeyOfTenantA_IsNotFoundThroughTenantBsToken()
    {
        Assert.Null(fixture.Hsm.FindPublicKey(fixture.TenantB, SoftHsmFixture.RsaKey));
        Assert.Null(fixture.Hsm.FindPublicKey(fixture.TenantB, SoftHsmFixture.Ed25519Key));
        var ex = Assert.Throws<HsmException>(() => fixture.Hsm.Sign(fixture.TenantB, SoftHsmFixture.Ed25519Key, DkimKeyAlgorithm.Ed25519, Data));
        Assert.Equal(HsmErrorKind.KeyNotFound, ex.Kind);
        Assert.Equal("tenant-b", ex.TenantId);

        // And the other way round: B's key is only in B's token.
        Assert.Null(fixture.Hsm.FindPublicKey(fixture.TenantA, SoftHsmFixture.Ed25519KeyB));
        Assert.NotNull(fixture.Hsm.FindPublicKey(fixture.TenantB, SoftHsmFixture.Ed25519KeyB));
    }

    [Fact]
    public void TokenA_HoldsNoObjectOfTenantB()
    {
        var labels = fixture.Hsm.WithSession(fixture.TenantA, session =>
            session.FindAllObjects([])
                .Select(o => session.GetAttributeValue(o, [CKA.CKA_LABEL])[0].GetValueAsString())
                .ToList());

        Assert.Contains(SoftHsmFixture.RsaKey, labels);
        Assert.DoesNotContain(SoftHsmFixture.Ed25519KeyB, labels);
    }

    [Fact]
    public void PinOfTenantB_DoesNotOpenTenantAsToken_EvenWhileAIsLoggedIn()
    {
        fixture.Hsm.Connect(fixture.TenantA); // A's token is logged in with A's PIN
        var wrong = fixture.TenantA with { Pin = HsmPin.FromString(fixture.PinB) };

        var ex = Assert.Throws<HsmException>(() => fixture.Hsm.Sign(wrong, SoftHsmFixture.Ed25519Key, DkimKeyAlgorithm.Ed25519, Data));

        Assert.Equal(HsmErrorKind.LoginFailed, ex.Kind);
        Assert.Equal(nameof(CKR.CKR_PIN_INCORRECT), ex.ReturnValue);
        Assert.True(ex.Transient);
        Assert.DoesNotContain(fixture.PinB, ex.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(fixture.PinA, ex.ToString(), StringComparison.Ordinal);

        // A's own PIN still works afterwards (it logs in again).
        Assert.Equal(64, fixture.Hsm.Sign(fixture.TenantA, SoftHsmFixture.Ed25519Key, DkimKeyAlgorithm.Ed25519, Data).Length);
    }

    [Fact]
    public void ATokenLabel_UsedByASecondTenant_IsRefused()
    {
        var intruder = new HsmTenantToken("tenant-b", SoftHsmFixture.TokenLabelA, HsmPin.FromString(fixture.PinA));

        var ex = Assert.Throws<HsmException>(() => fixture.Hsm.Sign(intruder, SoftHsmFixture.Ed25519Key, DkimKeyAlgorithm.Ed25519, Data));

        Assert.Equal(HsmErrorKind.Configuration, ex.Kind);
        Assert.DoesNotContain(fixture.PinA, ex.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void SessionsOfEachTenant_AreOnThatTenantsOwnToken()
    {
        var (slotA, labelA) = fixture.Hsm.WithSession(fixture.TenantA, session => SlotAndLabel(session));
        var (slotB, labelB) = fixture.Hsm.WithSession(fixture.TenantB, session => SlotAndLabel(session));

        Assert.Equal(SoftHsmFixture.TokenLabelA, labelA);
        Assert.Equal(SoftHsmFixture.TokenLabelB, labelB);
        Assert.NotEqual(slotA, slotB);
    }

    static (ulong Slot, string Label) SlotAndLabel(ISession session)
    {
        var slotId = session.GetSessionInfo().SlotId;
        return (slotId, TokenLabelOf(slotId));
    }

    static string TokenLabelOf(ulong slotId)
    {
        using var module = new Net.Pkcs11Interop.LowLevelAPI80.Pkcs11Library(SoftHsmSetup.DefaultModulePath);
        var info = new Net.Pkcs11Interop.LowLevelAPI80.CK_TOKEN_INFO();
        Assert.Equal(CKR.CKR_OK, module.C_GetTokenInfo(slotId, ref info));
        return Encoding.UTF8.GetString(info.Label).TrimEnd(' ');
    }
}
