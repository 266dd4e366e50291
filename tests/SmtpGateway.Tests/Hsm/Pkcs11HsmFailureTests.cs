using System.Text;
using Microsoft.Extensions.Time.Testing;
using Net.Pkcs11Interop.Common;
using SmtpGateway.Hsm;

namespace SmtpGateway.Tests.Hsm;

[Collection(SoftHsmCollection.Name)]
public sealed class Pkcs11HsmFailureTests(SoftHsmFixture fixture)
{
    static readonly byte[] Data = Encoding.ASCII.GetBytes("failure");

    [Fact]
    public void WrongPin_IsATransientLoginFailure_WithoutThePinInAnyMessage()
    {
        const string wrongPin = "not-the-pin-4711";
        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions());
        var token = fixture.TenantB with { Pin = HsmPin.FromString(wrongPin) };

        var ex = Assert.Throws<HsmException>(() => hsm.Sign(token, SoftHsmFixture.Ed25519KeyB, DkimKeyAlgorithm.Ed25519, Data));

        Assert.Equal(HsmErrorKind.LoginFailed, ex.Kind);
        Assert.True(ex.Transient);
        Assert.Equal(nameof(CKR.CKR_PIN_INCORRECT), ex.ReturnValue);
        Assert.Contains(SoftHsmFixture.TokenLabelB, ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(wrongPin, ex.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(fixture.PinB, ex.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(wrongPin, token.ToString(), StringComparison.Ordinal);

        // B's correct PIN logs in again.
        Assert.Equal(64, hsm.Sign(fixture.TenantB, SoftHsmFixture.Ed25519KeyB, DkimKeyAlgorithm.Ed25519, Data).Length);
    }

    [Fact]
    public void RefusedPin_IsNotOfferedAgainUntilTheHoldOff_AndDoesNotKnockOutTheGoodLogin()
    {
        const string wrongPin = "wrong-again-0815";
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions(), null, time);
        var wrong = fixture.TenantB with { Pin = HsmPin.FromString(wrongPin) };
        Assert.Equal(HsmErrorKind.LoginFailed, Assert.Throws<HsmException>(() => hsm.Connect(wrong)).Kind);
        hsm.Connect(fixture.TenantB); // the good PIN logs in again
        var logins = hsm.Counters.Logins;

        var held = Assert.Throws<HsmException>(() => hsm.Connect(wrong));

        Assert.Equal(HsmErrorKind.LoginFailed, held.Kind);
        Assert.True(held.Transient);
        Assert.DoesNotContain(wrongPin, held.ToString(), StringComparison.Ordinal);
        Assert.Equal(logins, hsm.Counters.Logins); // no C_Login was spent on it
        hsm.Connect(fixture.TenantB);
        Assert.Equal(logins, hsm.Counters.Logins); // and the good login was not logged out

        time.Advance(TimeSpan.FromMinutes(1.5));
        Assert.Throws<HsmException>(() => hsm.Connect(wrong));
        Assert.Equal(logins + 1, hsm.Counters.Logins); // after the hold-off the token is asked again
        hsm.Connect(fixture.TenantB);
    }

    [Fact]
    public void MissingModule_IsTransient_AndFailsFastUntilTheRetryInterval()
    {
        var time = new FakeTimeProvider();
        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions { ModulePath = "/nonexistent/libpkcs11-missing.so" }, null, time);

        var first = Assert.Throws<HsmException>(() => hsm.Sign(fixture.TenantA, SoftHsmFixture.RsaKey, DkimKeyAlgorithm.Rsa2048, Data));
        var second = Assert.Throws<HsmException>(() => hsm.Connect(fixture.TenantA));
        time.Advance(TimeSpan.FromSeconds(6));
        var third = Assert.Throws<HsmException>(() => hsm.Connect(fixture.TenantA));

        Assert.All(new[] { first, second, third }, ex =>
        {
            Assert.Equal(HsmErrorKind.ModuleUnavailable, ex.Kind);
            Assert.True(ex.Transient);
            Assert.Contains("/nonexistent/libpkcs11-missing.so", ex.Message, StringComparison.Ordinal);
            Assert.DoesNotContain(fixture.PinA, ex.ToString(), StringComparison.Ordinal);
        });
        Assert.NotNull(first.InnerException);
        Assert.Null(second.InnerException);   // the fast path does not try dlopen again
        Assert.NotNull(third.InnerException); // after the interval it does
    }

    [Fact]
    public void AbsentToken_IsTransient()
    {
        var ex = Assert.Throws<HsmException>(() => fixture.Hsm.Sign(new HsmTenantToken("tenant-c", "smtpgw-tenant-c", HsmPin.FromString("1234")), "k", DkimKeyAlgorithm.Ed25519, Data));

        Assert.Equal(HsmErrorKind.TokenNotFound, ex.Kind);
        Assert.True(ex.Transient);
        Assert.Contains("smtpgw-tenant-c", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RemovedToken_FailsTransiently_WhileOtherTenantsKeepSigning()
    {
        // SoftHSM2 "removes" a token when its directory goes away; it then answers CKR_GENERAL_ERROR for it.
        const string label = "smtpgw-tenant-removed";
        var setup = SoftHsmSetup.Configure(fixture.DataDirectory);
        setup.EnsureToken(label, "so-removed", "user-removed");
        var token = new HsmTenantToken("tenant-removed", label, HsmPin.FromString("user-removed"));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions(), null, time);
        hsm.GenerateKeyPair(token, "k", DkimKeyAlgorithm.Ed25519);
        Assert.Equal(64, hsm.Sign(token, "k", DkimKeyAlgorithm.Ed25519, Data).Length);
        var slotId = hsm.WithSession(token, session => session.GetSessionInfo().SlotId);
        var directory = TokenDirectory(setup, slotId);
        Directory.Move(directory, directory + ".removed");
        try
        {
            // The key's session copy lives in the module's memory; its token object is looked up again after the
            // recheck interval, and then the removal shows.
            time.Advance(Pkcs11HsmOptions.SoftHsmKeyCopyRecheckInterval);
            var ex = Assert.Throws<HsmException>(() => hsm.Sign(token, "k", DkimKeyAlgorithm.Ed25519, Data));

            // The cached handle fails, the token is dropped, and on the retry it no longer answers C_GetTokenInfo.
            Assert.Contains(ex.Kind, new[] { HsmErrorKind.TokenNotFound, HsmErrorKind.TokenUnavailable });
            Assert.True(ex.Transient);
            // Other tenants sign on, and log in afresh past the broken slot (finding a token walks every slot).
            var logins = fixture.Hsm.Counters.Logins;
            Assert.Throws<HsmException>(() => fixture.Hsm.Connect(fixture.TenantA with { Pin = HsmPin.FromString("wrong-pin-forces-a-new-login") }));
            Assert.Equal(64, fixture.Hsm.Sign(fixture.TenantA, SoftHsmFixture.Ed25519Key, DkimKeyAlgorithm.Ed25519, Data).Length);
            Assert.Equal(64, fixture.Hsm.Sign(fixture.TenantB, SoftHsmFixture.Ed25519KeyB, DkimKeyAlgorithm.Ed25519, Data).Length);
            Assert.Equal(logins + 2, fixture.Hsm.Counters.Logins);
            Assert.True(Assert.Throws<HsmException>(() => hsm.Sign(token, "k", DkimKeyAlgorithm.Ed25519, Data)).Transient);
        }
        finally
        {
            Directory.Move(directory + ".removed", directory);
        }
    }

    /// <summary>SoftHSM2 names a token's directory by a UUID whose last 16 hex digits are the token serial number.</summary>
    static string TokenDirectory(SoftHsmSetup setup, ulong slotId)
    {
        using var module = new Net.Pkcs11Interop.LowLevelAPI80.Pkcs11Library(SoftHsmSetup.DefaultModulePath);
        var info = new Net.Pkcs11Interop.LowLevelAPI80.CK_TOKEN_INFO();
        Assert.Equal(CKR.CKR_OK, module.C_GetTokenInfo(slotId, ref info));
        var serial = Encoding.ASCII.GetString(info.SerialNumber).Trim();
        return Assert.Single(Directory.GetDirectories(setup.TokenDirectory),
            d => Path.GetFileName(d).Replace("-", "", StringComparison.Ordinal).EndsWith(serial, StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public void UnknownKeyLabel_IsAClearPermanentError()
    {
        var ex = Assert.Throws<HsmException>(() => fixture.Hsm.Sign(fixture.TenantA, "dkim-nope", DkimKeyAlgorithm.Rsa2048, Data));

        Assert.Equal(HsmErrorKind.KeyNotFound, ex.Kind);
        Assert.False(ex.Transient);
        Assert.Equal("tenant-a", ex.TenantId);
        Assert.Contains("dkim-nope", ex.Message, StringComparison.Ordinal);
        Assert.Contains(SoftHsmFixture.TokenLabelA, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void EmptyPin_IsAConfigurationError()
    {
        var ex = Assert.Throws<HsmException>(() => fixture.Hsm.Connect(fixture.TenantA with { Pin = HsmPin.FromString("") }));

        Assert.Equal(HsmErrorKind.Configuration, ex.Kind);
        Assert.False(ex.Transient);
    }

    [Fact]
    public void TenantToken_ToString_DoesNotShowThePin()
    {
        var text = fixture.TenantA.ToString();

        Assert.Contains("tenant-a", text, StringComparison.Ordinal);
        Assert.DoesNotContain(fixture.PinA, text, StringComparison.Ordinal);
        Assert.DoesNotContain(fixture.PinA, $"{fixture.TenantA}", StringComparison.Ordinal);
    }

    [Fact]
    public void AfterDispose_OtherInstancesKeepTheModule()
    {
        var other = new Pkcs11Hsm(new Pkcs11HsmOptions());
        other.Connect(fixture.TenantA);
        other.Dispose();

        Assert.Throws<ObjectDisposedException>(() => other.Connect(fixture.TenantA));
        Assert.Equal(256, fixture.Hsm.Sign(fixture.TenantA, SoftHsmFixture.RsaKey, DkimKeyAlgorithm.Rsa2048, Data).Length);
    }
}
