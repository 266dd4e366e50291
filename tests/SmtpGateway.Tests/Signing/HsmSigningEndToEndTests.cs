using System.Buffers;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Identity;
using SmtpGateway.Signing;
using SmtpGateway.Tests.Hsm;
using SmtpGateway.Tests.Listener;

using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Signing;

/// <summary>
/// The whole production signing path against SoftHSM2 (DkimSigningService → HsmDkimSigner → HsmKeySigner →
/// Pkcs11Hsm): both signatures verify with python3-dkim, and the output depends only on the message bytes, not on
/// how the listener buffered them (the message is parsed in place, from one array or from several segments).
/// </summary>
[Collection(SoftHsmCollection.Name)]
public sealed class HsmSigningEndToEndTests(SoftHsmFixture fixture) : IDisposable
{
    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-hsm-e2e");

    [Fact]
    public void Rsa_and_ed25519_signatures_made_in_softhsm2_verify_with_python3_dkim()
    {
        var now = new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero);
        var rsa = new DkimSelector("tenant-a.example", "hsm-r", DkimAlgorithm.Rsa2048, SelectorState.Active, SoftHsmFixture.RsaKey,
            Convert.ToBase64String(fixture.RsaPublicKey.Value), now, null);
        var ed = new DkimSelector("tenant-a.example", "hsm-e", DkimAlgorithm.Ed25519, SelectorState.Active, SoftHsmFixture.Ed25519Key,
            Convert.ToBase64String(fixture.Ed25519PublicKey.Value), now, null);
        var store = new DkimKeyStore(_data.FullName);
        store.Save("tenant-a", [rsa, ed]);
        var pinFile = Path.Combine(_data.FullName, "tenant-a.pin");
        TestPinFiles.Write(pinFile, fixture.PinA);
        var tokens = new TenantHsmTokens(_data.FullName, _ => new TenantHsmModel(SoftHsmFixture.TokenLabelA, pinFile, null));
        var service = new DkimSigningService(store, new HsmKeySigner(fixture.Hsm, tokens), new RecordingAudit(), new FakeTimeProvider(now), null);

        var body = string.Concat(Enumerable.Range(0, 50).Select(i => $"{i:D6} The quick brown fox jumps over the lazy dog.  \r\n"));
        var message = Encoding.ASCII.GetBytes(
            "From: <app@tenant-a.example>\r\nTo: <x@example.net>\r\nSubject: hsm\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\n" +
            "Message-ID: <1@tenant-a.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + body);

        var headers = service.Sign("tenant-a", "app@tenant-a.example", new ReadOnlySequence<byte>(message), "s1", signingRequired: true);

        Assert.StartsWith("DKIM-Signature: v=1; a=ed25519-sha256", Encoding.ASCII.GetString(headers), StringComparison.Ordinal);
        Assert.Equal([true, true], PythonDkim.Verify([.. headers, .. message], PythonDkim.Records(rsa, ed)));

        // RSA PKCS#1 v1.5 and Ed25519 are deterministic: the same bytes again, however the message is held.
        var halves = SpoolTestKit.Segmented(message, (message.Length + 1) / 2);
        Assert.False(halves.IsSingleSegment);
        Assert.Equal(headers, service.Sign("tenant-a", "app@tenant-a.example", halves, "s1", signingRequired: true));
    }

    public void Dispose() => _data.Delete(true);
}
