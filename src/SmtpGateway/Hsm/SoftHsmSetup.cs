using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;

namespace SmtpGateway.Hsm;

/// <summary>
/// SoftHSM2 for dev and tests: its configuration and token directory under the gateway's data directory,
/// and tokens initialised on demand. Production points <see cref="Pkcs11HsmOptions.ModulePath"/> at a
/// real HSM's module and does not use this class.
/// </summary>
public sealed class SoftHsmSetup
{
    public const string DefaultModulePath = "/usr/lib/softhsm/libsofthsm2.so";

    /// <summary>SoftHSM2 reads this variable once, in C_Initialize.</summary>
    public const string ConfigVariable = "SOFTHSM2_CONF";

    /// <summary>CK_TOKEN_INFO.label is 32 bytes, blank padded (v2.40 §3.2).</summary>
    public const int MaxTokenLabelBytes = 32;

    SoftHsmSetup(string hsmDirectory, ILogger logger)
    {
        HsmDirectory = hsmDirectory;
        ConfigPath = Path.Combine(hsmDirectory, "softhsm2.conf");
        TokenDirectory = Path.Combine(hsmDirectory, "tokens");
        _logger = logger;
    }

    readonly ILogger _logger;

    /// <summary>&lt;data&gt;/hsm</summary>
    public string HsmDirectory { get; }

    /// <summary>&lt;data&gt;/hsm/softhsm2.conf</summary>
    public string ConfigPath { get; }

    /// <summary>&lt;data&gt;/hsm/tokens</summary>
    public string TokenDirectory { get; }

    /// <summary>
    /// Writes &lt;data&gt;/hsm/softhsm2.conf and creates the token directory (mode 0700), then points
    /// SOFTHSM2_CONF at it for this process. Call before the first <see cref="Pkcs11Hsm"/> operation:
    /// SoftHSM2 reads the variable only in C_Initialize, so a module already initialised in this process
    /// with another configuration cannot be redirected (that is refused with an <see cref="HsmException"/>).
    /// </summary>
    public static SoftHsmSetup Configure(string dataDirectory, ILogger? logger = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(dataDirectory);
        var setup = new SoftHsmSetup(Path.Combine(Path.GetFullPath(dataDirectory), "hsm"), logger ?? NullLogger.Instance);
        setup.WriteFiles();
        setup.Activate();
        return setup;
    }

    void WriteFiles()
    {
        // The token files hold the keys wrapped under a PIN-derived key; only the gateway's user has any business there.
        const UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
        Directory.CreateDirectory(HsmDirectory, Private);
        Directory.CreateDirectory(TokenDirectory, Private);
        var text = new StringBuilder()
            .Append("# Written by smtpgw (SoftHsmSetup); rewritten when the data directory moves.\n")
            .Append("directories.tokendir = ").Append(TokenDirectory).Append('\n')
            .Append("objectstore.backend = file\n")
            .Append("log.level = ERROR\n")
            .ToString();
        if (!File.Exists(ConfigPath) || File.ReadAllText(ConfigPath) != text)
        {
            var temporary = ConfigPath + ".tmp";
            File.WriteAllText(temporary, text);
            File.Move(temporary, ConfigPath, overwrite: true);
        }

        HsmLog.SoftHsmConfigured(_logger, ConfigPath, TokenDirectory);
    }

    void Activate()
    {
        foreach (var loaded in Pkcs11Runtime.LoadedSoftHsmConfigs())
        {
            if (!string.Equals(loaded, ConfigPath, StringComparison.Ordinal))
            {
                throw new HsmException(HsmErrorKind.Configuration, null,
                    $"a PKCS#11 module is already initialised in this process with {ConfigVariable}={loaded ?? "(unset)"}; SoftHSM2 cannot be pointed at '{ConfigPath}' any more");
            }
        }

        Environment.SetEnvironmentVariable(ConfigVariable, ConfigPath);

        // On Unix, Environment.SetEnvironmentVariable changes only .NET's own copy of the environment; SoftHSM2 calls
        // getenv() in native code and would silently fall back to /etc/softhsm/softhsm2.conf (the system token
        // directory). So the native environment is set too.
        if (NativeEnvironment.setenv(ConfigVariable, ConfigPath, 1) != 0)
        {
            throw new HsmException(HsmErrorKind.Configuration, null, $"setenv({ConfigVariable}) failed");
        }
    }

    static class NativeEnvironment
    {
#pragma warning disable SYSLIB1054 // LibraryImport needs AllowUnsafeBlocks; a plain DllImport with string arguments needs none.
        [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
        internal static extern int setenv(string name, string value, int overwrite);
#pragma warning restore SYSLIB1054
    }

    /// <summary>
    /// Initialises a token labelled <paramref name="label"/> in the first free slot unless a token already has
    /// that label: C_InitToken with the SO PIN, then as SO on a session C_InitPIN with the user PIN (v2.40
    /// §5.5.9, §5.5.10). Returns true when it created the token. An existing token's PINs are left alone.
    /// </summary>
    public bool EnsureToken(string label, string soPin, string userPin, string modulePath = DefaultModulePath)
    {
        ArgumentException.ThrowIfNullOrEmpty(userPin);
        return EnsureToken(label, soPin, HsmPin.FromString(userPin), modulePath);
    }

    /// <inheritdoc cref="EnsureToken(string, string, string, string)"/>
    public bool EnsureToken(string label, string soPin, HsmPin userPin, string modulePath = DefaultModulePath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(label);
        ArgumentException.ThrowIfNullOrEmpty(soPin);
        ArgumentNullException.ThrowIfNull(userPin);
        if (userPin.IsEmpty)
        {
            throw new ArgumentException("the user PIN is empty", nameof(userPin));
        }

        if (Encoding.UTF8.GetByteCount(label) > MaxTokenLabelBytes || label != label.Trim())
        {
            throw new ArgumentException($"a token label is at most {MaxTokenLabelBytes} bytes without leading or trailing blanks", nameof(label));
        }

        if (!string.Equals(Environment.GetEnvironmentVariable(ConfigVariable), ConfigPath, StringComparison.Ordinal))
        {
            Activate();
        }

        var runtime = Pkcs11Runtime.Acquire(modulePath, new Pkcs11HsmOptions { ModulePath = modulePath }, _logger);
        try
        {
            lock (runtime.TokenAdministration)
            {
                var slots = runtime.Library.GetSlotList(SlotsType.WithTokenPresent);
                if (slots.Any(s => Initialised(s, label)))
                {
                    return false;
                }

                var free = slots.FirstOrDefault(s => !s.GetTokenInfo().TokenFlags.TokenInitialized)
                    ?? throw new HsmException(HsmErrorKind.TokenUnavailable, null, $"no free slot to initialise token '{label}' in");
                free.InitToken(soPin, label);

                // SoftHSM2 gives the new token a slot id derived from its serial number and adds a fresh empty
                // slot, so the slot just used is found again by label rather than by number.
                var slot = runtime.Library.GetSlotList(SlotsType.WithTokenPresent).Single(s => Initialised(s, label));
                using (var session = slot.OpenSession(SessionType.ReadWrite))
                {
                    session.Login(CKU.CKU_SO, soPin);
                    // C_InitPIN takes the PIN as bytes (v2.40 §5.6.1); they are read for the call and zeroed after.
                    var pin = userPin.Read();
                    try
                    {
                        session.InitPin(pin);
                    }
                    finally
                    {
                        CryptographicOperations.ZeroMemory(pin);
                        session.Logout();
                    }
                }

                HsmLog.SoftHsmTokenInitialised(_logger, label);
                return true;
            }
        }
        catch (Pkcs11Exception ex)
        {
            throw new HsmException(HsmErrorKind.OperationFailed, null, $"token '{label}' cannot be initialised", ex.RV.ToString(), ex);
        }
        finally
        {
            runtime.Release();
        }
    }

    static bool Initialised(ISlot slot, string label)
    {
        var info = slot.GetTokenInfo();
        return info.TokenFlags.TokenInitialized && string.Equals(info.Label, label, StringComparison.Ordinal);
    }
}
