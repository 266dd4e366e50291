using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Signing;
using SmtpGateway.Tests.Hsm;
using SmtpGateway.Tests.Listener;
using SmtpGateway.Vault;

namespace SmtpGateway.Tests.Vault;

/// <summary>The vault over real tokens (SoftHSM2): the key-encryption keys are AES keys in each tenant's own token.</summary>
[Collection(SoftHsmCollection.Name)]
public sealed class VaultSoftHsmTests(SoftHsmFixture fixture) : IDisposable
{
    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-vault-hsm");

    // PINs never live in the data directory (spec-11 §5).
    readonly DirectoryInfo _pins = Directory.CreateTempSubdirectory("smtpgw-vault-pins");
    readonly RecordingAudit _audit = new();

    CredentialVault NewVault()
    {
        var labels = new Dictionary<string, string> { ["tenant-a"] = SoftHsmFixture.TokenLabelA, ["tenant-b"] = SoftHsmFixture.TokenLabelB };
        foreach (var (tenant, pin) in new[] { ("tenant-a", fixture.PinA), ("tenant-b", fixture.PinB) })
        {
            TestPinFiles.Write(Path.Combine(_pins.FullName, tenant + ".pin"), pin);
        }

        var keys = new HsmTenantKeys(fixture.Hsm, new TenantHsmTokens(_pins.FullName, tenant =>
            labels.TryGetValue(tenant, out var label) ? new TenantHsmModel(label, Path.Combine(_pins.FullName, tenant + ".pin"), null) : null));
        return new CredentialVault(_data.FullName, keys, _audit, new FakeTimeProvider(DateTimeOffset.UtcNow), new VaultConfig(), new HttpClientHandler(),
            NullLogger<CredentialVault>.Instance);
    }

    [Fact]
    public async Task Set_then_open_round_trips_and_a_record_copied_to_the_other_tenant_does_not_decrypt()
    {
        using var vault = NewVault();
        var a = vault.Set("tenant-a", "smarthost", NewSecret.Password("relay@a.example", "hsm-pass-A1"u8.ToArray()));
        var b = vault.Set("tenant-b", "smarthost", NewSecret.Password("relay@b.example", "hsm-pass-B2"u8.ToArray()));

        using (var secret = await vault.OpenAsync(a, CredentialVault.PurposeSmtpAuth, "Q1", CancellationToken.None))
        {
            Assert.Equal("hsm-pass-A1", Encoding.UTF8.GetString(secret.Secret));
        }

        // Tenant A's record, moved into tenant B's file in B's place.
        var fileA = JsonNode.Parse(File.ReadAllText(vault.PathFor("tenant-a")))!;
        var fileB = JsonNode.Parse(File.ReadAllText(vault.PathFor("tenant-b")))!;
        fileB["credentials"]![0]!["versions"]![0]!["ciphertext"] = (string?)fileA["credentials"]![0]!["versions"]![0]!["ciphertext"];
        File.WriteAllText(vault.PathFor("tenant-b"), fileB.ToJsonString());
        var moved = await Assert.ThrowsAsync<UpstreamCredentialException>(async () => await vault.OpenAsync(b, CredentialVault.PurposeSmtpAuth, "Q2", CancellationToken.None));
        Assert.False(moved.Transient);

        // Tenant A's whole file as tenant B's: B's token cannot unseal A's data key.
        File.Copy(vault.PathFor("tenant-a"), vault.PathFor("tenant-b"), overwrite: true);
        await Assert.ThrowsAsync<UpstreamCredentialException>(async () => await vault.OpenAsync(b, CredentialVault.PurposeSmtpAuth, "Q3", CancellationToken.None));

        Assert.Equal(["ok", "refused", "refused"], _audit.Events.Where(e => e.Action == AuditActions.VaultDecrypt).Select(e => e.Result));
        Assert.Equal(["tenant-a", "tenant-b", "tenant-b"], _audit.Events.Where(e => e.Action == AuditActions.VaultDecrypt).Select(e => e.Tenant));
        var onDisk = File.ReadAllBytes(vault.PathFor("tenant-a"));
        Assert.Equal(-1, onDisk.AsSpan().IndexOf("hsm-pass-A1"u8));
    }

    public void Dispose()
    {
        _data.Delete(recursive: true);
        _pins.Delete(recursive: true);
    }
}
