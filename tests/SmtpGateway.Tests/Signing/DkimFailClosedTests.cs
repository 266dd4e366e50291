using System.Buffers;
using System.Text;
using SmtpGateway.Signing;
using SmtpGateway.Tests.Listener;

namespace SmtpGateway.Tests.Signing;

/// <summary>
/// Signing fails closed: for a tenant that has not opted out ("Dkim:Unsigned"), every way of not having a usable key
/// is a <see cref="SigningException"/> (→ 451 4.3.0) with an audit event, never an unsigned message or a crash.
/// </summary>
public sealed class DkimFailClosedTests : IDisposable
{
    const string Tenant = "tenant-a";
    const string Secret = "s3cret-pin-123";

    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-failclosed");
    readonly SoftwareKeySigner _keys = new();
    readonly RecordingAudit _audit = new();
    readonly DkimKeyStore _store;

    public DkimFailClosedTests() => _store = new DkimKeyStore(_data.FullName);

    string SelectorFile => Path.Combine(_data.FullName, "dkim", Tenant + ".json");

    static ReadOnlySequence<byte> Message => new(Encoding.ASCII.GetBytes("From: a@tenant-a.example\r\nSubject: x\r\n\r\nbody\r\n"));

    byte[] Sign(bool required) =>
        new DkimSigningService(_store, _keys, _audit, TimeProvider.System, null).Sign(Tenant, "a@tenant-a.example", Message, "s1", required);

    SigningException AssertFailsClosed()
    {
        var ex = Assert.Throws<SigningException>(() => Sign(required: true));
        var e = Assert.Single(_audit.Events);
        Assert.Equal(("dkim-sign", "failed", Tenant, "s1", "tenant-a.example"), (e.Action, e.Result, e.Tenant, e.SessionId, e.Subject));
        Assert.Empty(_keys.SignedData);
        return ex;
    }

    [Fact]
    public void A_missing_selector_file_fails_closed()
    {
        Assert.False(File.Exists(SelectorFile));
        Assert.Contains("no active DKIM selector", AssertFailsClosed().Message, StringComparison.Ordinal);
    }

    [Fact]
    public void No_active_selector_for_the_from_domain_fails_closed()
    {
        // Keys for another domain, and a pending one for this domain: neither may sign tenant-a.example.
        _store.Save(Tenant, [_keys.AddEd25519("other.tenant-a.example", "e1"), _keys.AddRsa("tenant-a.example", "p1") with { State = SelectorState.Pending }]);
        AssertFailsClosed();
    }

    [Theory]
    [InlineData("{ this is not json")]
    [InlineData("")]
    [InlineData("{\"selectors\": [ { \"domain\": \"tenant-a.example\", \"state\": \"Active\" } ]}")]
    [InlineData("{\"selectors\": [ { \"domain\": \"tenant-a.example\", \"state\": \"NoSuchState\" } ]}")]
    public void A_corrupt_selector_file_fails_closed_even_for_an_unsigned_tenant(string content)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(SelectorFile)!);
        File.WriteAllText(SelectorFile, content);
        var ex = AssertFailsClosed();
        Assert.Contains("unreadable or corrupt", ex.Message, StringComparison.Ordinal);

        // Opting out of the requirement does not turn a broken file into "no keys": the keys may be there.
        Assert.Throws<SigningException>(() => Sign(required: false));
    }

    [Fact]
    public void An_unreadable_selector_file_fails_closed()
    {
        // chmod 000 does not stop root (tests may run as root), so a directory where the file belongs stands in for
        // "cannot be read": it fails the same way, with an IOException underneath.
        Directory.CreateDirectory(SelectorFile);
        var ex = AssertFailsClosed();
        Assert.IsAssignableFrom<IOException>(ex.InnerException);
    }

    [Fact]
    public void A_selector_file_that_becomes_corrupt_after_it_was_cached_fails_closed()
    {
        _store.Save(Tenant, [_keys.AddEd25519("tenant-a.example", "e1")]);
        Assert.NotEmpty(Sign(required: true));
        File.WriteAllText(SelectorFile, "garbage");
        File.SetLastWriteTimeUtc(SelectorFile, DateTime.UtcNow.AddMinutes(1)); // a new stamp even on a coarse file system
        Assert.Throws<SigningException>(() => Sign(required: true));
    }

    [Fact]
    public void A_key_missing_from_the_hsm_fails_closed()
    {
        // The selector names a key the signer does not hold (as after a token was re-created).
        _store.Save(Tenant, [new DkimSelector("tenant-a.example", "gone", DkimAlgorithm.Ed25519, SelectorState.Active, "dkim:tenant-a.example:gone", "AAAA", DateTimeOffset.UtcNow, null)]);
        Assert.Throws<SigningException>(() => Sign(required: true));
        Assert.Single(_audit.Events, e => e.Action == "dkim-sign" && e.Result == "failed");
    }

    [Fact]
    public void An_unsigned_tenant_without_keys_gets_no_signature_and_no_error()
    {
        Assert.Empty(Sign(required: false));
        Assert.Empty(_audit.Events);
    }

    [Fact]
    public void An_unsigned_tenant_with_an_active_selector_is_still_signed()
    {
        _store.Save(Tenant, [_keys.AddEd25519("tenant-a.example", "e1")]);
        Assert.StartsWith("DKIM-Signature:", Encoding.ASCII.GetString(Sign(required: false)), StringComparison.Ordinal);
    }

    [Fact]
    public void A_pin_the_token_refuses_fails_closed_and_names_no_secret()
    {
        // Wrong PIN in the PIN file: the HSM refuses the login; the failure is 451 material and the PIN stays out of it.
        _store.Save(Tenant, [new DkimSelector("tenant-a.example", "e1", DkimAlgorithm.Ed25519, SelectorState.Active, "dkim:tenant-a.example:e1", "AAAA", DateTimeOffset.UtcNow, null)]);
        var pins = Path.Combine(_data.FullName, "hsm", "pins");
        Directory.CreateDirectory(pins);
        File.WriteAllText(Path.Combine(pins, Tenant + ".pin"), Secret);
        using var hsm = new RefusingHsm();
        var service = new DkimSigningService(_store, new HsmKeySigner(hsm, new TenantHsmTokens(_data.FullName, _ => null)), _audit, TimeProvider.System, null);
        var ex = Assert.Throws<SigningException>(() => service.Sign(Tenant, "a@tenant-a.example", Message, "s1", signingRequired: true));
        Assert.DoesNotContain(Secret, ex.ToString(), StringComparison.Ordinal);
        var e = Assert.Single(_audit.Events);
        Assert.DoesNotContain(Secret, e.Reason ?? "", StringComparison.Ordinal);
        Assert.Equal(Secret, hsm.PinSeen);
    }

    public void Dispose() => _data.Delete(true);

    /// <summary>An HSM whose every token refuses the PIN (CKR_PIN_INCORRECT), as SoftHSM2 does for a wrong one.</summary>
    sealed class RefusingHsm : SmtpGateway.Hsm.IHsm
    {
        public string? PinSeen { get; private set; }

        public void Connect(SmtpGateway.Hsm.HsmTenantToken token) => throw Refused(token);

        public SmtpGateway.Hsm.HsmPublicKey GenerateKeyPair(SmtpGateway.Hsm.HsmTenantToken token, string keyLabel, SmtpGateway.Hsm.DkimKeyAlgorithm algorithm) => throw Refused(token);

        public SmtpGateway.Hsm.HsmPublicKey? FindPublicKey(SmtpGateway.Hsm.HsmTenantToken token, string keyLabel) => throw Refused(token);

        public bool DeleteKeyPair(SmtpGateway.Hsm.HsmTenantToken token, string keyLabel) => throw Refused(token);

        public byte[] Sign(SmtpGateway.Hsm.HsmTenantToken token, string keyLabel, SmtpGateway.Hsm.DkimKeyAlgorithm algorithm, ReadOnlySpan<byte> data) => throw Refused(token);

        public void GenerateSecretKey(SmtpGateway.Hsm.HsmTenantToken token, string keyLabel, SmtpGateway.Hsm.HsmSecretKeyType type) => throw Refused(token);

        public void ImportHmacKey(SmtpGateway.Hsm.HsmTenantToken token, string keyLabel, ReadOnlySpan<byte> secret) => throw Refused(token);

        public byte[] Hmac(SmtpGateway.Hsm.HsmTenantToken token, string keyLabel, ReadOnlySpan<byte> data) => throw Refused(token);

        public byte[] Seal(SmtpGateway.Hsm.HsmTenantToken token, string keyLabel, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> associatedData) => throw Refused(token);

        public byte[] Open(SmtpGateway.Hsm.HsmTenantToken token, string keyLabel, ReadOnlySpan<byte> sealedData, ReadOnlySpan<byte> associatedData) => throw Refused(token);

        public bool HasSecretKey(SmtpGateway.Hsm.HsmTenantToken token, string keyLabel) => throw Refused(token);

        public bool DeleteSecretKey(SmtpGateway.Hsm.HsmTenantToken token, string keyLabel) => throw Refused(token);

        public void Dispose()
        {
        }

        SmtpGateway.Hsm.HsmException Refused(SmtpGateway.Hsm.HsmTenantToken token)
        {
            PinSeen = token.UserPin;
            return new SmtpGateway.Hsm.HsmException(SmtpGateway.Hsm.HsmErrorKind.LoginFailed, token.TenantId, $"C_Login on token '{token.TokenLabel}' refused", "CKR_PIN_INCORRECT");
        }
    }
}
