using System.Collections.Concurrent;
using System.Reflection;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;

namespace SmtpGateway.Hsm;

/// <summary>
/// One loaded PKCS#11 module, shared by every <see cref="Pkcs11Hsm"/> of the process that names it.
/// Shared because PKCS#11 state is per application, not per caller: C_Initialize is to be called once
/// per process (v2.40 §5.4.1; a second call returns CKR_CRYPTOKI_ALREADY_INITIALIZED and the first
/// C_Finalize would pull the module from under every other user), and the login state of a token is
/// common to all of the application's sessions with it (UG v2.40 §2.6.4). So the token logins, their
/// session pools and handle caches live here, and the module is finalized when the last lease goes.
/// </summary>
internal sealed class Pkcs11Runtime
{
    static readonly Lock RegistryLock = new();
    static readonly Dictionary<string, Pkcs11Runtime> Registry = new(StringComparer.Ordinal);
    static int _resolverInstalled;

    readonly ConcurrentDictionary<string, TokenContext> _tokens = new(StringComparer.Ordinal);
    readonly ILogger _logger;
    int _leases = 1;
    int _edwardsParamsForm; // 0 = OID first, 1 = curve name first; remembers what the module accepted
    readonly Lazy<IMechanism> _sha256RsaPkcs;
    readonly Lazy<IMechanism> _eddsa;
    readonly Lazy<IMechanism> _sha256Hmac;
    readonly Lazy<RawDecryptor?> _raw;

    Pkcs11Runtime(string key, string modulePath, Pkcs11InteropFactories factories, IPkcs11Library library, Pkcs11HsmOptions options, ILogger logger)
    {
        Key = key;
        ModulePath = modulePath;
        Factories = factories;
        Library = library;
        Options = options;
        _logger = logger;
        SoftHsmConfig = Environment.GetEnvironmentVariable(SoftHsmSetup.ConfigVariable);
        _sha256RsaPkcs = new(() => factories.MechanismFactory.Create(CKM.CKM_SHA256_RSA_PKCS));
        _eddsa = new(() => factories.MechanismFactory.Create(Pkcs11Constants.CKM_EDDSA));
        _sha256Hmac = new(() => factories.MechanismFactory.Create(CKM.CKM_SHA256_HMAC));
        _raw = new(() => RawDecryptor.TryLoad(modulePath));
    }

    /// <summary>C_Decrypt into a caller's buffer (64-bit Unix), so no copy of a decrypted key is left behind; null elsewhere.</summary>
    public RawDecryptor? Raw => _raw.Value;

    public string Key { get; }

    public string ModulePath { get; }

    public Pkcs11InteropFactories Factories { get; }

    public IPkcs11Library Library { get; }

    /// <summary>Pool sizes and timeouts: those of the first <see cref="Pkcs11Hsm"/> that loaded the module.</summary>
    public Pkcs11HsmOptions Options { get; }

    /// <summary>C_GetInfo named SoftHSM as the manufacturer (it re-reads token object files on every operation).</summary>
    public bool IsSoftHsm { get; private init; }

    /// <summary>SOFTHSM2_CONF as it was when C_Initialize ran: SoftHSM2 reads its configuration only then.</summary>
    public string? SoftHsmConfig { get; }

    /// <summary>Serialises token initialisation (<see cref="SoftHsmSetup.EnsureToken(string, string, HsmPin, string)"/>) within the process.</summary>
    public Lock TokenAdministration { get; } = new();

    /// <summary>
    /// The signing mechanism for an algorithm, made once per module: both take no parameters, so one immutable
    /// instance serves every concurrent C_SignInit (rather than a finalizable object per signature).
    /// RSA: CKM_SHA256_RSA_PKCS hashes inside the token and applies PKCS#1 v1.5 with the SHA-256 DigestInfo (v2.40
    /// Current Mechanisms §2.1.7), i.e. DKIM rsa-sha256 (RFC 6376 §3.3.1). Ed25519: CKM_EDDSA without parameters is pure
    /// Ed25519 (PKCS#11 v3.0 §2.3, RFC 8032 §5.1), as RFC 8463 §3 prescribes.
    /// </summary>
    public IMechanism SignMechanism(DkimKeyAlgorithm algorithm) => algorithm == DkimKeyAlgorithm.Ed25519 ? _eddsa.Value : _sha256RsaPkcs.Value;

    /// <summary>
    /// CKM_SHA256_HMAC (v2.40 Current Mechanisms §2.17.2: general-length HMAC fixed at the full 32-byte output, no
    /// parameter), made once per module for the same reason as <see cref="SignMechanism"/>.
    /// </summary>
    public IMechanism HmacMechanism => _sha256Hmac.Value;

    public int EdwardsParamsForm
    {
        get => Volatile.Read(ref _edwardsParamsForm);
        set => Volatile.Write(ref _edwardsParamsForm, value);
    }

    /// <summary>Takes a lease on the module, loading and initialising it on first use.</summary>
    public static Pkcs11Runtime Acquire(string modulePath, Pkcs11HsmOptions options, ILogger logger)
    {
        InstallLibdlResolver();
        var key = CanonicalPath(modulePath);
        lock (RegistryLock)
        {
            if (Registry.TryGetValue(key, out var existing))
            {
                existing._leases++;
                return existing;
            }

            var factories = new Pkcs11InteropFactories();
            IPkcs11Library library;
            try
            {
                // MultiThreaded: C_Initialize with CKF_OS_LOCKING_OK (v2.40 §5.4.1), so the module guards its
                // own state and many SMTP sessions can sign at once, each on its own PKCS#11 session.
                library = factories.Pkcs11LibraryFactory.LoadPkcs11Library(factories, key, AppType.MultiThreaded);
            }
            catch (Exception ex)
            {
                var rv = (ex as Pkcs11Exception)?.RV.ToString();
                HsmLog.ModuleLoadFailed(logger, modulePath, rv ?? ex.GetType().Name);
                throw new HsmException(HsmErrorKind.ModuleUnavailable, null, $"PKCS#11 module '{modulePath}' cannot be loaded", rv, ex);
            }

            var softHsm = false;
            try
            {
                var info = library.GetInfo();
                HsmLog.ModuleLoaded(logger, modulePath, info.ManufacturerId, info.LibraryDescription);
                softHsm = info.ManufacturerId.StartsWith("SoftHSM", StringComparison.Ordinal);
            }
            catch (Pkcs11Exception)
            {
                // C_GetInfo is informational only; a module that cannot answer it may still sign.
            }

            var runtime = new Pkcs11Runtime(key, modulePath, factories, library, options, logger) { IsSoftHsm = softHsm };
            Registry[key] = runtime;
            return runtime;
        }
    }

    /// <summary>The SOFTHSM2_CONF a loaded module was initialised with, if any module is loaded.</summary>
    public static IReadOnlyList<string?> LoadedSoftHsmConfigs()
    {
        lock (RegistryLock)
        {
            return [.. Registry.Values.Select(r => r.SoftHsmConfig)];
        }
    }

    /// <summary>Gives the lease back; the last one closes every session and calls C_Finalize.</summary>
    public void Release()
    {
        lock (RegistryLock)
        {
            if (--_leases > 0)
            {
                return;
            }

            Registry.Remove(Key);
        }

        foreach (var context in _tokens.Values)
        {
            context.Close();
        }

        _tokens.Clear();
        foreach (var mechanism in (ReadOnlySpan<Lazy<IMechanism>>)[_sha256RsaPkcs, _eddsa, _sha256Hmac])
        {
            if (mechanism.IsValueCreated)
            {
                mechanism.Value.Dispose();
            }
        }

        if (_raw.IsValueCreated)
        {
            _raw.Value?.Dispose();
        }

        Library.Dispose();
        HsmLog.ModuleFinalized(_logger, ModulePath);
    }

    /// <summary>
    /// The context of the tenant's token. A token label belongs to the first tenant that uses it for the
    /// life of the module: two tenants sharing a token would share keys and a login (blast radius one).
    /// </summary>
    public TokenContext Token(HsmTenantToken token)
    {
        var context = _tokens.GetOrAdd(token.TokenLabel, static (label, t) => new TokenContext(t.Runtime, label, t.TenantId), (Runtime: this, token.TenantId));
        if (!string.Equals(context.OwnerTenantId, token.TenantId, StringComparison.Ordinal))
        {
            throw new HsmException(HsmErrorKind.Configuration, token.TenantId,
                $"token '{token.TokenLabel}' is already in use by another tenant; every tenant needs its own token");
        }

        return context;
    }

    /// <summary>
    /// The slot holding the one present token with this label. Slots are found by label every time a
    /// token is (re)opened, never remembered by number: SoftHSM2 renumbers slots when a token is
    /// initialised, and a removed and reinserted token may come back in another slot.
    /// </summary>
    public ISlot FindSlot(string tenantId, string tokenLabel)
    {
        ISlot? match = null;
        foreach (var slot in Library.GetSlotList(SlotsType.WithTokenPresent))
        {
            ITokenInfo info;
            try
            {
                info = slot.GetTokenInfo();
            }
            catch (Pkcs11Exception)
            {
                // Another token that cannot answer (removed, broken: SoftHSM2 says CKR_GENERAL_ERROR for a token whose
                // directory vanished) must not stop this tenant from finding its own: blast radius one.
                continue;
            }

            if (!info.TokenFlags.TokenInitialized || !string.Equals(info.Label, tokenLabel, StringComparison.Ordinal))
            {
                continue;
            }

            if (match is not null)
            {
                throw new HsmException(HsmErrorKind.Configuration, tenantId,
                    $"more than one present token is labelled '{tokenLabel}'; token labels must be unique");
            }

            match = slot;
        }

        return match ?? throw new HsmException(HsmErrorKind.TokenNotFound, tenantId, $"no present token is labelled '{tokenLabel}'");
    }

    /// <summary>
    /// Pkcs11Interop P/Invokes dlopen/dlsym from "libdl", which the runtime probes as libdl.so: that name exists
    /// only with libc6-dev installed (Debian 12 ships libdl.so.2, and glibc 2.34+ has dlopen in libc.so.6 itself).
    /// The maintainer's advice (Pkcs11Interop issue #239) is to map the name with a DllImportResolver.
    /// </summary>
    internal static void InstallLibdlResolver()
    {
        if (Interlocked.Exchange(ref _resolverInstalled, 1) != 0)
        {
            return;
        }

        try
        {
            NativeLibrary.SetDllImportResolver(typeof(Pkcs11InteropFactories).Assembly, ResolveLibdl);
        }
        catch (InvalidOperationException)
        {
            // Someone else in the process installed a resolver for Pkcs11Interop already; theirs stands.
        }
    }

    static IntPtr ResolveLibdl(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (libraryName != "libdl")
        {
            return IntPtr.Zero; // default probing
        }

        foreach (var candidate in (ReadOnlySpan<string>)["libdl.so.2", "libc.so.6", "libdl.so"])
        {
            if (NativeLibrary.TryLoad(candidate, assembly, searchPath, out var handle))
            {
                return handle;
            }
        }

        return IntPtr.Zero;
    }

    static string CanonicalPath(string modulePath)
    {
        // The same module reached through a symlink (/usr/lib/softhsm/libsofthsm2.so is one) is the same
        // dlopen handle and the same C_Initialize state, so it must be the same registry entry.
        if (!modulePath.Contains('/', StringComparison.Ordinal))
        {
            return modulePath; // a bare name is resolved by the dynamic loader's search path
        }

        var full = Path.GetFullPath(modulePath);
        try
        {
            return File.Exists(full) ? new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? full : full;
        }
        catch (IOException)
        {
            return full;
        }
    }
}
