using SmtpGateway.Hsm;

namespace SmtpGateway.Tests.Hsm;

[Collection(SoftHsmCollection.Name)]
public sealed class SoftHsmSetupTests(SoftHsmFixture fixture)
{
    [Fact]
    public void Configure_WroteTheConfigUnderTheDataDirectory_AndPointedSoftHsmAtIt()
    {
        var config = Path.Combine(fixture.DataDirectory, "hsm", "softhsm2.conf");
        var tokens = Path.Combine(fixture.DataDirectory, "hsm", "tokens");

        Assert.Equal(config, Environment.GetEnvironmentVariable(SoftHsmSetup.ConfigVariable));
        var lines = File.ReadAllLines(config);
        Assert.Contains($"directories.tokendir = {tokens}", lines);
        Assert.Contains("objectstore.backend = file", lines);
        Assert.Contains("log.level = ERROR", lines);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(tokens));
        Assert.True(Directory.GetDirectories(tokens).Length >= 2); // tenant A's and tenant B's token (and any a test added)
    }

    [Fact]
    public void EnsureToken_IsIdempotent()
    {
        var setup = SoftHsmSetup.Configure(fixture.DataDirectory);

        var before = Directory.GetDirectories(setup.TokenDirectory).Length;

        Assert.False(setup.EnsureToken(SoftHsmFixture.TokenLabelA, "ignored-so", "ignored-user"));
        Assert.Equal(before, Directory.GetDirectories(setup.TokenDirectory).Length);
        // The existing token's PIN was not touched.
        fixture.Hsm.Connect(fixture.TenantA);
    }

    [Fact]
    public void EnsureToken_CreatesATokenThatLogsInWithItsUserPin_AndSignsOnlyWithItsOwnKeys()
    {
        var setup = SoftHsmSetup.Configure(fixture.DataDirectory);
        const string label = "smtpgw-tenant-setup";

        Assert.True(setup.EnsureToken(label, "so-setup", "user-setup"));
        var token = new HsmTenantToken("tenant-setup", label, HsmPin.FromString("user-setup"));
        fixture.Hsm.Connect(token);
        Assert.Null(fixture.Hsm.FindPublicKey(token, SoftHsmFixture.RsaKey));
        var so = Assert.Throws<HsmException>(() => fixture.Hsm.Connect(token with { Pin = HsmPin.FromString("so-setup") }));
        Assert.Equal(HsmErrorKind.LoginFailed, so.Kind);
    }

    [Fact]
    public void Configure_ForAnotherDirectory_OnceTheModuleIsLoaded_IsRefused()
    {
        fixture.Hsm.Connect(fixture.TenantA); // module loaded with the fixture's configuration
        var other = Path.Combine(Path.GetTempPath(), "smtpgw-hsm-other-" + Guid.NewGuid().ToString("N"));
        try
        {
            var ex = Assert.Throws<HsmException>(() => SoftHsmSetup.Configure(other));

            Assert.Equal(HsmErrorKind.Configuration, ex.Kind);
            Assert.Equal(Path.Combine(fixture.DataDirectory, "hsm", "softhsm2.conf"), Environment.GetEnvironmentVariable(SoftHsmSetup.ConfigVariable));
        }
        finally
        {
            Directory.Delete(other, recursive: true);
        }
    }
}
