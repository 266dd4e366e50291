using System.Text;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Diagnostics;
using SmtpGateway.Hosting;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Signing;

namespace SmtpGateway.Tests.Hsm;

/// <summary>Where tenant PINs come from (issue 11 §5) and what is refused: TenantHsmTokens and the start-up check.</summary>
public sealed class TenantHsmPinTests : IDisposable
{
    const string Pin = "pin-7f3a9c2e51";
    const UnixFileMode Mode0600 = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("smtpgw-pins");
    readonly string _variable = "SMTPGW_TEST_PIN_" + Guid.NewGuid().ToString("N");

    string Data => Path.Combine(_root.FullName, "data");

    string Pins => Path.Combine(_root.FullName, "pins");

    TenantHsmTokens Tokens(TenantHsmModel? settings = null, bool allowPinFiles = true, string? credentials = null) =>
        new(Data, _ => settings, new HsmConfig { PinDirectory = Pins, AllowPinFiles = allowPinFiles }, () => credentials);

    static string Text(HsmPin pin) => Encoding.UTF8.GetString(pin.Read());

    [Fact]
    public void DefaultPinDirectory_IsTheDataDirectorysSibling()
    {
        Assert.Equal("/var/lib/smtpgw.pins", TenantHsmTokens.DefaultPinDirectory("/var/lib/smtpgw/"));
        var tokens = new TenantHsmTokens(Data, _ => null);
        Assert.Equal(Data + ".pins", tokens.PinDirectory);
        Assert.Equal(Path.Combine(Data + ".pins", "tenant-a.pin"), tokens.PinFile("tenant-a"));
    }

    [Fact]
    public void PinFile_IsReadAsBytes_WithoutSurroundingWhiteSpace()
    {
        TestPinFiles.Write(Path.Combine(Pins, "tenant-a.pin"), $"  {Pin}\r\n");

        var token = Tokens().Resolve("tenant-a");

        Assert.Equal(Pin, Text(token.Pin));
        Assert.Equal($"file {Path.Combine(Pins, "tenant-a.pin")}", token.Pin.Source);
        Assert.Equal("smtpgw-tenant-a", token.TokenLabel);
    }

    [Theory]
    [InlineData(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead, "0640")]
    [InlineData(UnixFileMode.UserRead | UnixFileMode.OtherRead, "0404")]
    public void PinFile_ThatGroupOrOthersMayRead_IsRefused_NamingFileAndMode(UnixFileMode mode, string octal)
    {
        var file = TestPinFiles.Write(Path.Combine(Pins, "tenant-a.pin"), Pin, mode);

        var ex = Assert.Throws<SigningException>(() => Tokens().Resolve("tenant-a"));
        var errors = Tokens().PrepareAtStart(["tenant-a"], new ListLogger());

        Assert.Contains(file, ex.Message, StringComparison.Ordinal);
        Assert.Contains($"mode {octal}", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(Pin, ex.ToString(), StringComparison.Ordinal);
        var error = Assert.Single(errors);
        Assert.StartsWith("Tenants:tenant-a:Hsm: PIN file", error, StringComparison.Ordinal);
        Assert.Contains(file, error, StringComparison.Ordinal);
        Assert.Contains($"mode {octal}", error, StringComparison.Ordinal);
        Assert.DoesNotContain(Pin, error, StringComparison.Ordinal);
    }

    [Fact]
    public void PinDirectory_ThatGroupOrOthersMayEnter_IsRefused()
    {
        TestPinFiles.Write(Path.Combine(Pins, "tenant-a.pin"), Pin);
        File.SetUnixFileMode(Pins, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);

        var error = Assert.Single(Tokens().PrepareAtStart(["tenant-a"], new ListLogger()));

        Assert.Contains($"PIN directory '{Pins}' has mode 0750", error, StringComparison.Ordinal);
        Assert.Throws<SigningException>(() => Tokens().Resolve("tenant-a"));
    }

    [Fact]
    public void A_PinFile_WidenedAfterResolution_IsRefusedAtTheNextRead()
    {
        var file = TestPinFiles.Write(Path.Combine(Pins, "tenant-a.pin"), Pin);
        var token = Tokens().Resolve("tenant-a");
        File.SetUnixFileMode(file, Mode0600 | UnixFileMode.OtherRead);

        var ex = Assert.Throws<InvalidOperationException>(() => token.Pin.Read());
        Assert.Contains("mode 0604", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(Pin, ex.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void EnvironmentVariable_ComesFirst_ThenTheSystemdCredential_ThenThePinFile()
    {
        TestPinFiles.Write(Path.Combine(Pins, "tenant-a.pin"), "from-file");
        var credentials = Path.Combine(_root.FullName, "credentials");
        TestPinFiles.Write(Path.Combine(credentials, "smtpgw-tenant-a.pin"), "from-credential\n");
        var settings = new TenantHsmModel(null, null, _variable);

        Environment.SetEnvironmentVariable(_variable, "from-environment");
        var fromEnvironment = Tokens(settings, credentials: credentials).Resolve("tenant-a").Pin;
        Environment.SetEnvironmentVariable(_variable, null);
        var fromCredential = Tokens(settings, credentials: credentials).Resolve("tenant-a").Pin;
        var fromFile = Tokens(settings).Resolve("tenant-a").Pin;

        Assert.Equal("environment variable " + _variable, fromEnvironment.Source);
        Assert.Equal($"systemd credential {Path.Combine(credentials, "smtpgw-tenant-a.pin")}", fromCredential.Source);
        Assert.Equal("from-credential", Text(fromCredential));
        Assert.Equal("from-file", Text(fromFile));
        Assert.False(fromEnvironment.SameAs(fromCredential));
    }

    [Fact]
    public void SystemdCredential_WithTheGroupBitsAnAclMaskShows_IsAccepted_ButOthersBitsAreNot()
    {
        // systemd grants User= access to /run/credentials/<unit> with an ACL; its mask appears as group bits (0440/0550).
        var credentials = Path.Combine(_root.FullName, "credentials-acl");
        var file = TestPinFiles.Write(Path.Combine(credentials, "smtpgw-tenant-a.pin"), "from-credential", UnixFileMode.UserRead | UnixFileMode.GroupRead);
        File.SetUnixFileMode(credentials, UnixFileMode.UserRead | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
        var settings = new TenantHsmModel(null, null, null);

        Assert.Equal("from-credential", Text(Tokens(settings, allowPinFiles: false, credentials: credentials).Resolve("tenant-a").Pin));
        Assert.NotNull(TenantHsmTokens.FileProblem(file)); // the same modes are refused for an ordinary PIN file

        File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.OtherRead);
        Assert.Contains("0404", TenantHsmTokens.FileProblem(file, systemdCredential: true), StringComparison.Ordinal);
        File.SetUnixFileMode(credentials, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    [Fact]
    public void A_PinFile_ThatLinksIntoAnOpenDirectory_IsRefused_NamingTheTarget()
    {
        var open = Path.Combine(_root.FullName, "shared");
        var real = TestPinFiles.Write(Path.Combine(open, "tenant-a.pin"), Pin);
        File.SetUnixFileMode(open, (UnixFileMode)Convert.ToInt32("755", 8));
        Directory.CreateDirectory(Pins);
        File.SetUnixFileMode(Pins, (UnixFileMode)Convert.ToInt32("700", 8));
        var link = Path.Combine(Pins, "tenant-a.pin");
        File.CreateSymbolicLink(link, real);

        var problem = TenantHsmTokens.FileProblem(link);

        Assert.NotNull(problem);
        Assert.Contains(open, problem, StringComparison.Ordinal);
        Assert.Contains("0755", problem, StringComparison.Ordinal);
        File.SetUnixFileMode(open, (UnixFileMode)Convert.ToInt32("700", 8));
        Assert.Null(TenantHsmTokens.FileProblem(link)); // a link to a private place is fine
    }

    [Fact]
    public void EnvironmentVariable_IsReadAfreshForEachLogin()
    {
        Environment.SetEnvironmentVariable(_variable, Pin);
        var pin = Tokens(new TenantHsmModel(null, null, _variable)).Resolve("tenant-a").Pin;

        var first = pin.Read();
        Array.Clear(first); // what TokenLogin does after C_Login
        Assert.Equal(Pin, Text(pin));
    }

    [Fact]
    public void WithPinFilesNotAllowed_OnlyEnvironmentAndCredentialCount()
    {
        TestPinFiles.Write(Path.Combine(Pins, "tenant-a.pin"), Pin);
        var credentials = Path.Combine(_root.FullName, "credentials");
        TestPinFiles.Write(Path.Combine(credentials, "smtpgw-tenant-a.pin"), Pin);

        var ex = Assert.Throws<SigningException>(() => Tokens(allowPinFiles: false).Resolve("tenant-a"));

        Assert.Contains("AllowPinFiles is false", ex.Message, StringComparison.Ordinal);
        Assert.Null(Tokens(allowPinFiles: false).PinSource("tenant-a"));
        Assert.StartsWith("systemd credential", Tokens(allowPinFiles: false, credentials: credentials).Resolve("tenant-a").Pin.Source, StringComparison.Ordinal);
    }

    [Fact]
    public void LegacyPinFile_InTheDataDirectory_IsMovedToThePinDirectory_WithALogLine()
    {
        var legacy = Path.Combine(Data, "hsm", "pins", "tenant-a.pin");
        Directory.CreateDirectory(Path.GetDirectoryName(legacy)!);
        File.WriteAllText(legacy, Pin); // 0644, as old versions may have left it
        var logger = new ListLogger();

        var errors = Tokens().PrepareAtStart(["tenant-a"], logger);

        Assert.Empty(errors);
        Assert.False(File.Exists(legacy));
        Assert.False(Directory.Exists(Path.GetDirectoryName(legacy)));
        var moved = Path.Combine(Pins, "tenant-a.pin");
        Assert.Equal(Pin, File.ReadAllText(moved));
        Assert.Equal(Mode0600, File.GetUnixFileMode(moved));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Pins));
        var line = Assert.Single(logger.Lines, l => l.Id == EventIds.Hsm + 50);
        Assert.Contains(legacy, line.Message, StringComparison.Ordinal);
        Assert.Contains(moved, line.Message, StringComparison.Ordinal);
        Assert.All(logger.Lines, l => Assert.DoesNotContain(Pin, l.Message, StringComparison.Ordinal));
        Assert.Equal(Pin, Text(Tokens().Resolve("tenant-a").Pin));
    }

    [Fact]
    public void LegacyPinFile_ThatDiffersFromTheNewOne_IsAnErrorAndStays()
    {
        var legacy = Path.Combine(Data, "hsm", "pins", "tenant-a.pin");
        Directory.CreateDirectory(Path.GetDirectoryName(legacy)!);
        File.WriteAllText(legacy, "old-" + Pin);
        TestPinFiles.Write(Path.Combine(Pins, "tenant-a.pin"), Pin);

        var error = Assert.Single(Tokens().PrepareAtStart(["tenant-a"], new ListLogger()));

        Assert.Contains("both exist and differ", error, StringComparison.Ordinal);
        Assert.DoesNotContain(Pin, error, StringComparison.Ordinal);
        Assert.True(File.Exists(legacy));
    }

    [Fact]
    public void PinFiles_InsideTheDataDirectory_AreRefusedAtStart()
    {
        var inside = TestPinFiles.Write(Path.Combine(Data, "secrets", "tenant-a.pin"), Pin);
        var explicitFile = new TenantHsmTokens(Data, _ => new TenantHsmModel(null, inside, null), new HsmConfig { PinDirectory = Pins }, () => null);
        var insideDirectory = new TenantHsmTokens(Data, _ => null, new HsmConfig { PinDirectory = Path.Combine(Data, "secrets") }, () => null);

        Assert.StartsWith("Tenants:tenant-a:Hsm:PinFile:", Assert.Single(explicitFile.PrepareAtStart(["tenant-a"], new ListLogger())), StringComparison.Ordinal);
        Assert.Contains(insideDirectory.PrepareAtStart(["tenant-a"], new ListLogger()), e => e.StartsWith("Gateway:Hsm:PinDirectory:", StringComparison.Ordinal));
    }

    [Fact]
    public void NoPinAnywhere_IsASigningExceptionNamingTheSources()
    {
        var ex = Assert.Throws<SigningException>(() => Tokens().Resolve("tenant-a"));

        Assert.Contains("no HSM PIN for tenant 'tenant-a'", ex.Message, StringComparison.Ordinal);
        Assert.Contains(Path.Combine(Pins, "tenant-a.pin"), ex.Message, StringComparison.Ordinal);
        Assert.Empty(Tokens().PrepareAtStart(["tenant-a"], new ListLogger())); // not a start error: the tenant may not sign
    }

    [Fact]
    public void ThePin_AppearsInNoStringForm()
    {
        TestPinFiles.Write(Path.Combine(Pins, "tenant-a.pin"), Pin);
        var token = Tokens().Resolve("tenant-a");

        Assert.DoesNotContain(Pin, token.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(Pin, token.Pin.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(Pin, $"{token with { }}", StringComparison.Ordinal);
        Assert.True(token.Pin.SameAs(HsmPin.FromString(Pin)));
        Assert.False(token.Pin.SameAs(HsmPin.FromString(Pin + "x")));
    }

    [Fact]
    public void TheGateway_RefusesToStart_WithAPinFileOthersMayRead()
    {
        var file = TestPinFiles.Write(Path.Combine(Pins, "tenant-a.pin"), Pin, Mode0600 | UnixFileMode.GroupRead);
        var configuration = new ConfigurationBuilder()
            .AddJsonStream(GatewayConfiguration.EmbeddedDefault())
            .AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["Gateway:DataDirectory"] = Data,
                ["Gateway:Hsm:PinDirectory"] = Pins,
            })
            .Build();
        var services = new ServiceCollection().AddLogging();
        services.AddSmtpGateway(configuration);
        using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IOptions<GatewayConfig>>().Value);

        var failure = Assert.Single(ex.Failures, f => f.Contains("PIN", StringComparison.Ordinal));
        Assert.Contains(file, failure, StringComparison.Ordinal);
        Assert.Contains("mode 0640", failure, StringComparison.Ordinal);
        Assert.DoesNotContain(Pin, ex.ToString(), StringComparison.Ordinal);
    }

    public void Dispose()
    {
        Environment.SetEnvironmentVariable(_variable, null);
        _root.Delete(recursive: true);
    }

    sealed class ListLogger : ILogger
    {
        public List<(int Id, string Message)> Lines { get; } = [];

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Add((eventId.Id, formatter(state, exception)));
    }
}

/// <summary>PIN sources against a real token: the PIN bytes log in, and a changed source takes effect.</summary>
[Collection(SoftHsmCollection.Name)]
public sealed class TenantHsmPinLoginTests(SoftHsmFixture fixture) : IDisposable
{
    const string Tenant = "tenant-pins";
    const string TokenLabel = "smtpgw-tenant-pins";
    const string UserPin = "user-pins-4d1e";
    readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("smtpgw-pinlogin");
    readonly string _variable = "SMTPGW_TEST_PIN_" + Guid.NewGuid().ToString("N");

    [Fact]
    public void ChangingThePinSource_TakesEffect_AndNoMessageCarriesAPin()
    {
        SoftHsmSetup.Configure(fixture.DataDirectory).EnsureToken(TokenLabel, "so-pins-4d1e", UserPin);
        var pinFile = TestPinFiles.Write(Path.Combine(_root.FullName, "pins", Tenant + ".pin"), UserPin + "\n");
        var settings = new TenantHsmModel(TokenLabel, pinFile, null);
        var tokens = new TenantHsmTokens(_root.FullName, _ => settings, new HsmConfig { PinDirectory = Path.Combine(_root.FullName, "pins") }, () => null);

        fixture.Hsm.Connect(tokens.Resolve(Tenant)); // the file's PIN logs in
        fixture.Hsm.GenerateSecretKey(tokens.Resolve(Tenant), "smtpgw-token-1", HsmSecretKeyType.Hmac256);

        // A reload points the tenant at a variable holding a wrong PIN: the token is logged into afresh with it, and refuses.
        Environment.SetEnvironmentVariable(_variable, "wrong-" + UserPin);
        settings = settings with { PinEnvironmentVariable = _variable };
        var ex = Assert.Throws<HsmException>(() => fixture.Hsm.Hmac(tokens.Resolve(Tenant), "smtpgw-token-1", "x"u8));
        Assert.Equal(HsmErrorKind.LoginFailed, ex.Kind);
        Assert.DoesNotContain(UserPin, ex.ToString(), StringComparison.Ordinal);

        // The variable is corrected in the next reload (a new settings record): the good PIN logs in again.
        Environment.SetEnvironmentVariable(_variable, UserPin);
        settings = settings with { PinFile = null };
        Assert.Equal(32, fixture.Hsm.Hmac(tokens.Resolve(Tenant), "smtpgw-token-1", "x"u8).Length);
        Assert.StartsWith("environment variable", tokens.Resolve(Tenant).Pin.Source, StringComparison.Ordinal);
        Assert.True(fixture.Hsm.DeleteSecretKey(tokens.Resolve(Tenant), "smtpgw-token-1"));
    }

    public void Dispose()
    {
        Environment.SetEnvironmentVariable(_variable, null);
        _root.Delete(recursive: true);
    }
}
