using System.Buffers;
using System.Text;
using SmtpGateway.Hsm;
using SmtpGateway.Signing;
using SmtpGateway.Tests.Listener;

namespace SmtpGateway.Tests.Signing;

/// <summary>HSM trouble must surface as a SigningException (→ 451 4.3.0), never as an unsigned message or a crash.</summary>
public sealed class HsmFailureTests : IDisposable
{
    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-hsmfail");

    DkimSigningService Service(IHsm hsm, RecordingAudit audit)
    {
        var store = new DkimKeyStore(_data.FullName);
        store.Save("tenant-a", [new DkimSelector("tenant-a.example", "ed1", DkimAlgorithm.Ed25519, SelectorState.Active, "dkim:tenant-a.example:ed1", "AAAA", DateTimeOffset.UtcNow, null)]);
        var tokens = new TenantHsmTokens(_data.FullName, _ => null, new SmtpGateway.Configuration.HsmConfig { PinDirectory = Path.Combine(_data.FullName, "pins") });
        return new DkimSigningService(store, new HsmKeySigner(hsm, tokens), audit, TimeProvider.System, null);
    }

    static ReadOnlySequence<byte> Message => new(Encoding.ASCII.GetBytes("From: a@tenant-a.example\r\nSubject: x\r\n\r\nbody\r\n"));

    [Fact]
    public void A_missing_pin_is_a_signing_failure()
    {
        var audit = new RecordingAudit();
        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions { ModulePath = "/nonexistent/libpkcs11.so" });
        var ex = Assert.Throws<SigningException>(() => Service(hsm, audit).Sign("tenant-a", "a@tenant-a.example", Message, "s1", signingRequired: true));
        Assert.Contains("PIN", ex.Message, StringComparison.Ordinal);
        Assert.Single(audit.Events, e => e.Action == "dkim-sign" && e.Result == "failed");
    }

    [Fact]
    public void A_missing_module_is_a_signing_failure_that_names_no_secret()
    {
        SmtpGateway.Tests.Hsm.TestPinFiles.Write(Path.Combine(_data.FullName, "pins", "tenant-a.pin"), "s3cret-pin-123");
        var audit = new RecordingAudit();
        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions { ModulePath = "/nonexistent/libpkcs11.so" });
        var ex = Assert.Throws<SigningException>(() => Service(hsm, audit).Sign("tenant-a", "a@tenant-a.example", Message, "s1", signingRequired: true));
        Assert.DoesNotContain("s3cret-pin-123", ex.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(audit.Events, e => (e.Reason ?? "").Contains("s3cret", StringComparison.Ordinal));
        Assert.Single(audit.Events, e => e.Action == "dkim-sign" && e.Result == "failed");
    }

    public void Dispose() => _data.Delete(true);
}
