using System.Diagnostics;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Hsm;

/// <summary>How the gateway reaches its PKCS#11 module.</summary>
public sealed record Pkcs11HsmOptions
{
    /// <summary>The module (shared library); SoftHSM2 by default.</summary>
    public string ModulePath { get; init; } = SoftHsmSetup.DefaultModulePath;

    /// <summary>Sessions per token beyond the one that holds the login; more signers than this wait.</summary>
    public int MaxSessionsPerToken { get; init; } = 8;

    /// <summary>
    /// How long an operation blocks for a free session before failing transiently. Short (issue 12, was 10 s): it blocks a
    /// pool thread, and the asynchronous signing gate keeps each tenant's signers within its pool, so only a token that
    /// hangs (or a burst of token and return-path MACs) makes anyone wait; 2 s leaves room for a loaded host's scheduling.
    /// </summary>
    public TimeSpan SessionWaitTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>After the module failed to load, calls fail fast for this long before loading is tried again.</summary>
    public TimeSpan ModuleRetryInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>After a token refused a PIN, that same PIN is not offered to it again for this long (a different PIN is tried at once).</summary>
    public TimeSpan LoginRetryInterval { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// DKIM private keys are signed with as session-object copies, and each key's token object is looked up again at most
    /// this often, so a key deleted by another process stops signing within this time. Zero signs with the token objects
    /// (no copies). Null: <see cref="SoftHsmKeyCopyRecheckInterval"/> with SoftHSM2, whose re-reading of token object
    /// files the copies avoid, and no copies with any other module (a hardware HSM gains nothing, and its policy may
    /// count or forbid copies of private keys).
    /// </summary>
    public TimeSpan? KeyCopyRecheckInterval { get; init; }

    /// <summary>1 s: a fraction of a DNS TTL, and one extra C_GetAttributeValue a second per key at any message rate.</summary>
    public static TimeSpan SoftHsmKeyCopyRecheckInterval { get; } = TimeSpan.FromSeconds(1);
}

/// <summary>
/// <see cref="IHsm"/> over a PKCS#11 module through Pkcs11Interop. The module is loaded on first use
/// (so the gateway starts, and answers 451, when it is missing), once per process; each tenant's token is
/// logged into once with that tenant's PIN; operations run on pooled sessions and cached key handles, so
/// a signature costs C_SignInit + C_Sign (a DKIM key's session copy adds one C_CopyObject per key and login, and one
/// C_GetAttributeValue per recheck interval).
/// </summary>
public sealed class Pkcs11Hsm : IHsm
{
    readonly Pkcs11HsmOptions _options;
    readonly ILogger _logger;
    readonly TimeProvider _time;
    readonly Lock _loadLock = new();
    Pkcs11Runtime? _runtime;
    HsmException? _loadFailure;
    DateTimeOffset _retryLoadAt;
    bool _disposed;

    public Pkcs11Hsm(Pkcs11HsmOptions options, ILogger<Pkcs11Hsm>? logger = null, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrWhiteSpace(options.ModulePath);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxSessionsPerToken, 1);
        _options = options;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _time = timeProvider ?? TimeProvider.System;
    }

    internal HsmCounters Counters { get; } = new();

    public void Connect(HsmTenantToken token)
    {
        Validate(token);
        Execute(token, "connect", "", static (_, _) => true);
    }

    public HsmPublicKey GenerateKeyPair(HsmTenantToken token, string keyLabel, DkimKeyAlgorithm algorithm)
    {
        Validate(token, keyLabel);
        if (!Enum.IsDefined(algorithm))
        {
            throw new ArgumentOutOfRangeException(nameof(algorithm));
        }

        return Execute(token, "keygen", keyLabel, (login, session) =>
        {
            lock (login.Context.Management)
            {
                ClaimLabel(login, session, token, keyLabel);
                var publicKey = algorithm == DkimKeyAlgorithm.Ed25519
                    ? GenerateEd25519(login, session, keyLabel)
                    : GenerateRsa(login, session, keyLabel);
                var value = ReadPublicKey(login, session, publicKey, algorithm);
                HsmLog.KeyPairGenerated(_logger, token.TenantId, algorithm, keyLabel, token.TokenLabel);
                return new HsmPublicKey(algorithm, value);
            }
        });
    }

    public HsmPublicKey? FindPublicKey(HsmTenantToken token, string keyLabel)
    {
        Validate(token, keyLabel);
        return Execute(token, "find", keyLabel, (login, session) =>
        {
            var key = login.FindKey(session, keyLabel, CKO.CKO_PUBLIC_KEY, Counters, _time, CopyRecheck(login));
            return key is null ? null : new HsmPublicKey(key.Algorithm, ReadPublicKey(login, session, key.Handle, key.Algorithm));
        });
    }

    public bool DeleteKeyPair(HsmTenantToken token, string keyLabel)
    {
        Validate(token, keyLabel);
        return Execute(token, "delete", keyLabel, (login, session) =>
        {
            var count = Destroy(login, session, keyLabel, null);
            if (count > 0)
            {
                HsmLog.KeyPairDeleted(_logger, token.TenantId, count, keyLabel, token.TokenLabel);
            }

            return count > 0;
        });
    }

    public byte[] Sign(HsmTenantToken token, string keyLabel, DkimKeyAlgorithm algorithm, ReadOnlySpan<byte> data)
    {
        Validate(token, keyLabel);
        var input = data.ToArray();
        var started = _time.GetTimestamp();
        double? signCpu = null;
        var signature = Execute(token, "sign", keyLabel, (login, session) =>
        {
            var recheck = CopyRecheck(login);
            var key = login.FindKey(session, keyLabel, CKO.CKO_PRIVATE_KEY, Counters, _time, recheck)
                ?? throw new HsmException(HsmErrorKind.KeyNotFound, token.TenantId, $"token '{token.TokenLabel}' has no private key labelled '{keyLabel}'");
            if (key.Algorithm != algorithm)
            {
                throw new HsmException(HsmErrorKind.KeyMismatch, token.TenantId,
                    $"key '{keyLabel}' in token '{token.TokenLabel}' is {key.Algorithm}, not {algorithm}");
            }

            // RSA: CKM_SHA256_RSA_PKCS (PKCS#1 v1.5 with the SHA-256 DigestInfo, DKIM rsa-sha256). Ed25519: CKM_EDDSA,
            // pure Ed25519 (RFC 8463 §3). Both single-part C_Sign: SoftHSM2 has no C_SignUpdate for EdDSA. (Hashing
            // locally and signing with CKM_RSA_PKCS over the DigestInfo gives the same bytes and was measured no faster
            // in SoftHSM2: its cost is the per-C_SignInit rebuild of the key, not the hash; perf/SmtpGateway.SignBench.)
            var mechanism = login.Context.Runtime.SignMechanism(algorithm);
            var handle = TokenLogin.SigningHandle(session, key, _time, recheck);
            var cpuBefore = ThreadCpuTime.Nanoseconds();
            var signature = session.Sign(mechanism, handle, input);
            signCpu = ThreadCpuTime.SecondsBetween(cpuBefore, ThreadCpuTime.Nanoseconds());
            return signature;
        });

        // Recorded outside Execute: a metric listener's exception must not turn a good signature into an HSM failure.
        // The attempt that signed is counted (one retried after a stale session is not).
        HsmMetrics.Signed(algorithm, _time.GetElapsedTime(started));
        if (signCpu is { } cpu)
        {
            HsmMetrics.SignCpuUsed(algorithm, cpu);
        }

        return signature;
    }

    public void GenerateSecretKey(HsmTenantToken token, string keyLabel, HsmSecretKeyType type)
    {
        Validate(token, keyLabel);
        if (!Enum.IsDefined(type))
        {
            throw new ArgumentOutOfRangeException(nameof(type));
        }

        Execute(token, "keygen", keyLabel, (login, session) =>
        {
            var factories = login.Context.Runtime.Factories;
            var template = SecretTemplate(factories, keyLabel, type);
            // CKA_VALUE_LEN is required by both key-generation mechanisms (v2.40 Current Mechanisms §2.8.3 AES,
            // §2.29.4 generic secret), and must not be given to C_CreateObject (footnote 3 of their attribute tables).
            template.Add(factories.ObjectAttributeFactory.Create(CKA.CKA_VALUE_LEN, (ulong)Pkcs11Constants.SecretKeyBytes));
            using var mechanism = factories.MechanismFactory.Create(type == HsmSecretKeyType.Hmac256 ? CKM.CKM_GENERIC_SECRET_KEY_GEN : CKM.CKM_AES_KEY_GEN);
            lock (login.Context.Management)
            {
                ClaimLabel(login, session, token, keyLabel);
                session.GenerateKey(mechanism, template);
            }

            HsmLog.SecretKeyGenerated(_logger, token.TenantId, type, keyLabel, token.TokenLabel);
            return true;
        });
    }

    public void ImportHmacKey(HsmTenantToken token, string keyLabel, ReadOnlySpan<byte> secret)
    {
        Validate(token, keyLabel);
        if (secret.IsEmpty)
        {
            throw new ArgumentException("an HMAC key has at least one byte", nameof(secret));
        }

        var value = secret.ToArray();
        try
        {
            Execute(token, "import", keyLabel, (login, session) =>
            {
                var factories = login.Context.Runtime.Factories;
                var template = SecretTemplate(factories, keyLabel, HsmSecretKeyType.Hmac256);
                // CKA_SENSITIVE true on C_CreateObject makes CKA_ALWAYS_SENSITIVE false (v2.40 §4.9: it was once known
                // outside the token), which is the truth for a migrated key; from now on it is used only inside the token.
                // Pkcs11Interop copies the value into unmanaged memory and frees it without zeroing (UnmanagedMemory.Free);
                // accepted because this runs once per legacy key, whose plaintext sat in a file until this migration.
                using var valueAttribute = factories.ObjectAttributeFactory.Create(CKA.CKA_VALUE, value);
                template.Add(valueAttribute);
                lock (login.Context.Management)
                {
                    ClaimLabel(login, session, token, keyLabel);
                    session.CreateObject(template);
                }

                HsmLog.SecretKeyImported(_logger, token.TenantId, keyLabel, token.TokenLabel);
                return true;
            });
        }
        finally
        {
            CryptographicOperations.ZeroMemory(value);
        }
    }

    public byte[] Hmac(HsmTenantToken token, string keyLabel, ReadOnlySpan<byte> data)
    {
        Validate(token, keyLabel);
        var input = data.ToArray();
        // Single-part C_SignInit + C_Sign with the module's one parameterless CKM_SHA256_HMAC (v2.40 Current Mechanisms
        // §2.17.2): on the per-call path, as for DKIM, the handle comes from the login's cache and no C_Login or
        // C_FindObjects is made.
        return Execute(token, "hmac", keyLabel, (login, session) =>
            session.Sign(login.Context.Runtime.HmacMechanism, SecretKey(login, session, token, keyLabel, HsmSecretKeyType.Hmac256).Handle, input));
    }

    public byte[] Seal(HsmTenantToken token, string keyLabel, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> associatedData)
    {
        Validate(token, keyLabel);
        var input = plaintext.ToArray();
        var aad = associatedData.ToArray();
        try
        {
            return Execute(token, "seal", keyLabel, (login, session) =>
            {
                var key = SecretKey(login, session, token, keyLabel, HsmSecretKeyType.Aes256);
                var nonce = RandomNumberGenerator.GetBytes(Pkcs11Constants.GcmNonceBytes);
                using var mechanism = GcmMechanism(login, nonce, aad, out var parameters);
                using (parameters)
                {
                    // C_Encrypt with CKM_AES_GCM returns ciphertext ‖ tag (v2.40 Current Mechanisms §2.12.4; v3.0 §2.10.6).
                    var output = session.Encrypt(mechanism, key.Handle, input);
                    if (output.Length != input.Length + Pkcs11Constants.GcmTagBytes)
                    {
                        throw new HsmException(HsmErrorKind.OperationFailed, token.TenantId,
                            $"AES-GCM in token '{token.TokenLabel}' returned {output.Length} bytes for {input.Length} bytes of plaintext");
                    }

                    return (byte[])[.. nonce, .. output];
                }
            });
        }
        finally
        {
            CryptographicOperations.ZeroMemory(input);
        }
    }

    public byte[] Open(HsmTenantToken token, string keyLabel, ReadOnlySpan<byte> sealedData, ReadOnlySpan<byte> associatedData)
    {
        Validate(token, keyLabel);
        if (sealedData.Length < Pkcs11Constants.GcmNonceBytes + Pkcs11Constants.GcmTagBytes)
        {
            var ex = new HsmException(HsmErrorKind.DataInvalid, token.TenantId, $"sealed data under key '{keyLabel}' is {sealedData.Length} bytes, shorter than nonce and tag");
            HsmMetrics.Error(token.TenantId, ex.Kind);
            throw ex;
        }

        var nonce = sealedData[..Pkcs11Constants.GcmNonceBytes].ToArray();
        var body = sealedData[Pkcs11Constants.GcmNonceBytes..].ToArray();
        var aad = associatedData.ToArray();
        return Execute(token, "open", keyLabel, (login, session) =>
        {
            var key = SecretKey(login, session, token, keyLabel, HsmSecretKeyType.Aes256);
            using var mechanism = GcmMechanism(login, nonce, aad, out var parameters);
            using (parameters)
            {
                try
                {
                    return login.Context.Runtime.Raw is { } raw
                        ? raw.DecryptGcm(session, key.Handle, nonce, aad, body)
                        : session.Decrypt(mechanism, key.Handle, body);
                }
                catch (Pkcs11Exception ex) when (ex.Method == "C_Decrypt" && Pkcs11Constants.IsDataRefusal(ex.RV))
                {
                    // A failed C_Decrypt ends the operation (v2.40 §5.9), so the session stays usable: not discarded.
                    throw new HsmException(HsmErrorKind.DataInvalid, token.TenantId,
                        $"sealed data under key '{keyLabel}' in token '{token.TokenLabel}' did not authenticate", ex.RV.ToString(), ex);
                }
            }
        });
    }

    public bool HasSecretKey(HsmTenantToken token, string keyLabel)
    {
        Validate(token, keyLabel);
        return Execute(token, "find", keyLabel, (login, session) => login.FindKey(session, keyLabel, CKO.CKO_SECRET_KEY, Counters, _time, CopyRecheck(login)) is not null);
    }

    public bool DeleteSecretKey(HsmTenantToken token, string keyLabel)
    {
        Validate(token, keyLabel);
        return Execute(token, "delete", keyLabel, (login, session) =>
        {
            var deleted = Destroy(login, session, keyLabel, CKO.CKO_SECRET_KEY) > 0;
            if (deleted)
            {
                HsmLog.SecretKeyDeleted(_logger, token.TenantId, keyLabel, token.TokenLabel);
            }

            return deleted;
        });
    }

    TimeSpan CopyRecheck(TokenLogin login) => EffectiveCopyRecheck(_options.KeyCopyRecheckInterval, login.Context.Runtime.IsSoftHsm);

    /// <summary>The configured interval, or when unset: copies with SoftHSM2 only (see <see cref="Pkcs11HsmOptions.KeyCopyRecheckInterval"/>).</summary>
    internal static TimeSpan EffectiveCopyRecheck(TimeSpan? configured, bool softHsm) =>
        configured ?? (softHsm ? Pkcs11HsmOptions.SoftHsmKeyCopyRecheckInterval : TimeSpan.Zero);

    /// <summary>Runs <paramref name="body"/> on a rented session of the tenant's token (tests inspect objects with it).</summary>
    internal T WithSession<T>(HsmTenantToken token, Func<ISession, T> body)
    {
        Validate(token);
        return Execute(token, "inspect", "", (_, session) => body(session));
    }

    public void Dispose()
    {
        Pkcs11Runtime? runtime;
        lock (_loadLock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            runtime = _runtime;
            _runtime = null;
        }

        runtime?.Release();
    }

    /// <summary>
    /// The operation frame: module, token login, a pooled session, the body, and the error mapping. A stale
    /// handle, session or login (token removed and reinserted, object deleted elsewhere, sessions closed) drops
    /// the token's login, pool and cached handles and runs the body once more from a fresh login; the second
    /// failure is reported.
    /// </summary>
    T Execute<T>(HsmTenantToken token, string operation, string keyLabel, Func<TokenLogin, ISession, T> body)
    {
        try
        {
            var context = Runtime().Token(token);
            for (var attempt = 0; ; attempt++)
            {
                var login = context.Acquire(token, Counters, _logger, _time);
                ISession session;
                try
                {
                    session = login.Rent(Counters);
                }
                catch (StaleLoginException) when (attempt == 0)
                {
                    continue;
                }
                catch (StaleLoginException ex)
                {
                    throw new HsmException(HsmErrorKind.TokenUnavailable, token.TenantId, $"token '{token.TokenLabel}' keeps being reset", null, ex);
                }
                catch (Pkcs11Exception ex)
                {
                    if (Pkcs11Constants.IsStale(ex.RV))
                    {
                        context.Invalidate(login, ex.RV.ToString(), Counters, _logger);
                        if (attempt == 0)
                        {
                            continue;
                        }
                    }

                    // Not stale (e.g. CKR_SESSION_COUNT): the login and the other sessions are fine; report and move on.
                    throw new HsmException(HsmErrorKind.TokenUnavailable, token.TenantId, $"no session can be opened on token '{token.TokenLabel}'", ex.RV.ToString(), ex);
                }

                var discard = false;
                try
                {
                    return body(login, session);
                }
                catch (Pkcs11Exception ex) when (Pkcs11Constants.IsStale(ex.RV))
                {
                    discard = true;
                    context.Invalidate(login, ex.RV.ToString(), Counters, _logger);
                    if (attempt == 0)
                    {
                        continue;
                    }

                    throw new HsmException(HsmErrorKind.TokenUnavailable, token.TenantId,
                        $"{operation} in token '{token.TokenLabel}' failed again after logging in afresh", ex.RV.ToString(), ex);
                }
                catch (Pkcs11Exception ex)
                {
                    discard = true;
                    HsmLog.SessionDiscarded(_logger, token.TenantId, token.TokenLabel, ex.RV.ToString());
                    var kind = Pkcs11Constants.IsUnsupported(ex.RV) ? HsmErrorKind.Unsupported : HsmErrorKind.OperationFailed;
                    throw new HsmException(kind, token.TenantId, $"{operation} in token '{token.TokenLabel}' failed", ex.RV.ToString(), ex);
                }
                catch (Exception ex) when (ex is not HsmException)
                {
                    discard = true;
                    throw new HsmException(HsmErrorKind.OperationFailed, token.TenantId, $"{operation} in token '{token.TokenLabel}' failed: {ex.GetType().Name}", null, ex);
                }
                finally
                {
                    login.Return(session, discard);
                }
            }
        }
        catch (HsmException ex)
        {
            HsmMetrics.Error(token.TenantId, ex.Kind);
            HsmLog.OperationFailed(_logger, token.TenantId, operation, keyLabel, token.TokenLabel, ex.Kind, ex.ReturnValue is null ? "" : $" ({ex.ReturnValue})");
            throw;
        }
    }

    Pkcs11Runtime Runtime()
    {
        lock (_loadLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_runtime is not null)
            {
                return _runtime;
            }

            // dlopen of a missing module is cheap, but a misconfigured gateway would log it for every message;
            // fail fast with the last reason until the retry time.
            if (_loadFailure is not null && _time.GetUtcNow() < _retryLoadAt)
            {
                throw new HsmException(HsmErrorKind.ModuleUnavailable, null, _loadFailure.Message);
            }

            try
            {
                _runtime = Pkcs11Runtime.Acquire(_options.ModulePath, _options, _logger);
                _loadFailure = null;
                return _runtime;
            }
            catch (HsmException ex)
            {
                _loadFailure = ex;
                _retryLoadAt = _time.GetUtcNow() + _options.ModuleRetryInterval;
                throw;
            }
        }
    }

    IObjectHandle GenerateRsa(TokenLogin login, ISession session, string keyLabel)
    {
        var factories = login.Context.Runtime.Factories;
        var publicTemplate = PublicTemplate(factories, keyLabel);
        publicTemplate.Add(factories.ObjectAttributeFactory.Create(CKA.CKA_MODULUS_BITS, Pkcs11Constants.RsaModulusBits));
        publicTemplate.Add(factories.ObjectAttributeFactory.Create(CKA.CKA_PUBLIC_EXPONENT, Pkcs11Constants.RsaPublicExponent.ToArray()));
        using var mechanism = factories.MechanismFactory.Create(CKM.CKM_RSA_PKCS_KEY_PAIR_GEN);
        session.GenerateKeyPair(mechanism, publicTemplate, PrivateTemplate(factories, keyLabel), out var publicKey, out _);
        return publicKey;
    }

    IObjectHandle GenerateEd25519(TokenLogin login, ISession session, string keyLabel)
    {
        var runtime = login.Context.Runtime;
        var factories = runtime.Factories;
        // PKCS#11 v3.0 §2.3 lets CKA_EC_PARAMS name an Edwards curve by OID (RFC 8410) or by PrintableString;
        // modules differ in which they take. Try the one this module took last time first.
        var first = runtime.EdwardsParamsForm;
        for (var i = 0; i < 2; i++)
        {
            var form = (first + i) % 2;
            var parameters = form == 0 ? Pkcs11Constants.Ed25519ParamsOid.ToArray() : Pkcs11Constants.Ed25519ParamsName.ToArray();
            var publicTemplate = PublicTemplate(factories, keyLabel);
            publicTemplate.Add(factories.ObjectAttributeFactory.Create(CKA.CKA_EC_PARAMS, parameters));
            using var mechanism = factories.MechanismFactory.Create(Pkcs11Constants.CKM_EC_EDWARDS_KEY_PAIR_GEN);
            try
            {
                session.GenerateKeyPair(mechanism, publicTemplate, PrivateTemplate(factories, keyLabel), out var publicKey, out _);
                runtime.EdwardsParamsForm = form;
                return publicKey;
            }
            catch (Pkcs11Exception ex) when (i == 0 && ex.RV is CKR.CKR_ATTRIBUTE_VALUE_INVALID or CKR.CKR_CURVE_NOT_SUPPORTED
                or CKR.CKR_DOMAIN_PARAMS_INVALID or CKR.CKR_TEMPLATE_INCONSISTENT)
            {
                HsmLog.EdwardsParamsRefused(_logger, form == 0 ? "oid" : "name", ex.RV.ToString());
            }
        }

        throw new UnreachableException();
    }

    /// <summary>
    /// Fails with KeyExists when any object in the token has the label, so one label names one thing (callers hold the
    /// token's Management lock, which makes check-then-create atomic within the process); forgets cached handles of it.
    /// </summary>
    void ClaimLabel(TokenLogin login, ISession session, HsmTenantToken token, string keyLabel)
    {
        var factory = login.Context.Runtime.Factories.ObjectAttributeFactory;
        Counters.FindObject();
        // Token objects: the gateway's only session objects are its copies of private keys, and a copy of a key that
        // another process deleted lives on until its next recheck or the end of the login.
        if (session.FindAllObjects([factory.Create(CKA.CKA_TOKEN, true), factory.Create(CKA.CKA_LABEL, keyLabel)]).Count > 0)
        {
            throw new HsmException(HsmErrorKind.KeyExists, token.TenantId, $"token '{token.TokenLabel}' already holds objects labelled '{keyLabel}'");
        }

        login.ForgetKey(keyLabel);
    }

    /// <summary>Destroys the objects with that label (of that class, or of any); returns how many there were.</summary>
    int Destroy(TokenLogin login, ISession session, string keyLabel, CKO? objectClass)
    {
        var factory = login.Context.Runtime.Factories.ObjectAttributeFactory;
        // Token objects; ForgetKey destroys a private key's session copy.
        List<IObjectAttribute> template = [factory.Create(CKA.CKA_TOKEN, true), factory.Create(CKA.CKA_LABEL, keyLabel)];
        if (objectClass is { } cls)
        {
            template.Add(factory.Create(CKA.CKA_CLASS, cls));
        }

        lock (login.Context.Management)
        {
            login.ForgetKey(keyLabel);
            Counters.FindObject();
            var objects = session.FindAllObjects(template);
            foreach (var handle in objects)
            {
                session.DestroyObject(handle);
            }

            // Again: a signer that found the key between the first ForgetKey and the destroy has cached it (and copied it).
            login.ForgetKey(keyLabel);

            return objects.Count;
        }
    }

    /// <summary>The secret key of that label and type, from the login's handle cache after the first lookup.</summary>
    CachedKey SecretKey(TokenLogin login, ISession session, HsmTenantToken token, string keyLabel, HsmSecretKeyType type)
    {
        var key = login.FindKey(session, keyLabel, CKO.CKO_SECRET_KEY, Counters, _time, CopyRecheck(login))
            ?? throw new HsmException(HsmErrorKind.KeyNotFound, token.TenantId, $"token '{token.TokenLabel}' has no secret key labelled '{keyLabel}'");
        return key.SecretType == type
            ? key
            : throw new HsmException(HsmErrorKind.KeyMismatch, token.TenantId, $"key '{keyLabel}' in token '{token.TokenLabel}' is {key.SecretType}, not {type}");
    }

    /// <summary>
    /// CKM_AES_GCM with CK_GCM_PARAMS (v2.40 Current Mechanisms §2.12.3): the 96-bit nonce, the associated data and a
    /// 128-bit tag. ulIvBits (a v2.40 header field the text never describes, dropped in v3.0) is given as the nonce's
    /// length in bits, which is what modules that read it expect. Made per call: the nonce differs every time.
    /// </summary>
    static IMechanism GcmMechanism(TokenLogin login, byte[] nonce, byte[] aad, out IDisposable parameters)
    {
        var factories = login.Context.Runtime.Factories;
        var gcm = factories.MechanismParamsFactory.CreateCkGcmParams(nonce, (ulong)nonce.Length * 8, aad, Pkcs11Constants.GcmTagBytes * 8);
        parameters = gcm;
        return factories.MechanismFactory.Create(CKM.CKM_AES_GCM, gcm);
    }

    /// <summary>
    /// A secret key (ARCHITECTURE.md §3 "Secrets at rest"): token object, private, sensitive and non-extractable like a
    /// DKIM private key (v2.40 §4.9: CKA_VALUE is never revealed and C_WrapKey refuses it), and usable for its one
    /// purpose only: an HMAC key signs and verifies, an AES key-encryption key encrypts and decrypts; neither wraps,
    /// unwraps or derives, so it cannot be used to lift other keys out of the token.
    /// </summary>
    static List<IObjectAttribute> SecretTemplate(Pkcs11InteropFactories factories, string keyLabel, HsmSecretKeyType type)
    {
        var f = factories.ObjectAttributeFactory;
        var mac = type == HsmSecretKeyType.Hmac256;
        return
        [
            f.Create(CKA.CKA_CLASS, CKO.CKO_SECRET_KEY),
            f.Create(CKA.CKA_KEY_TYPE, mac ? CKK.CKK_GENERIC_SECRET : CKK.CKK_AES),
            f.Create(CKA.CKA_TOKEN, true),
            f.Create(CKA.CKA_PRIVATE, true),
            f.Create(CKA.CKA_SENSITIVE, true),
            f.Create(CKA.CKA_EXTRACTABLE, false),
            f.Create(CKA.CKA_SIGN, mac),
            f.Create(CKA.CKA_VERIFY, mac),
            f.Create(CKA.CKA_ENCRYPT, !mac),
            f.Create(CKA.CKA_DECRYPT, !mac),
            f.Create(CKA.CKA_WRAP, false),
            f.Create(CKA.CKA_UNWRAP, false),
            f.Create(CKA.CKA_DERIVE, false),

            // Fixed for life (v2.40 §4.4, v3.0 §4.4): nobody holding the PIN may later give the key a use it was not made
            // for (C_SetAttributeValue CKA_WRAP/CKA_DERIVE) or copy it with other attributes (C_CopyObject).
            f.Create(CKA.CKA_MODIFIABLE, false),
            f.Create(CKA.CKA_COPYABLE, false),
            f.Create(CKA.CKA_LABEL, keyLabel),
            f.Create(CKA.CKA_ID, Pkcs11Constants.KeyId(keyLabel)),
        ];
    }

    /// <summary>The public half: a token object anyone logged in may read and verify with, usable for nothing else.</summary>
    static List<IObjectAttribute> PublicTemplate(Pkcs11InteropFactories factories, string keyLabel)
    {
        var f = factories.ObjectAttributeFactory;
        return
        [
            f.Create(CKA.CKA_TOKEN, true),
            f.Create(CKA.CKA_PRIVATE, false),
            f.Create(CKA.CKA_VERIFY, true),
            f.Create(CKA.CKA_ENCRYPT, false),
            f.Create(CKA.CKA_WRAP, false),
            f.Create(CKA.CKA_LABEL, keyLabel),
            f.Create(CKA.CKA_ID, Pkcs11Constants.KeyId(keyLabel)),
        ];
    }

    /// <summary>
    /// The private half (ARCHITECTURE.md §4 promise 3): a token object (persists), private (needs the
    /// tenant's login), sensitive and non-extractable (C_GetAttributeValue refuses CKA_VALUE / CKA_PRIVATE_EXPONENT
    /// and C_WrapKey refuses it, v2.40 §4.9), and able to sign only: no decrypt, unwrap or derive.
    /// </summary>
    static List<IObjectAttribute> PrivateTemplate(Pkcs11InteropFactories factories, string keyLabel)
    {
        var f = factories.ObjectAttributeFactory;
        return
        [
            f.Create(CKA.CKA_TOKEN, true),
            f.Create(CKA.CKA_PRIVATE, true),
            f.Create(CKA.CKA_SENSITIVE, true),
            f.Create(CKA.CKA_EXTRACTABLE, false),
            f.Create(CKA.CKA_SIGN, true),
            f.Create(CKA.CKA_DECRYPT, false),
            f.Create(CKA.CKA_UNWRAP, false),
            f.Create(CKA.CKA_DERIVE, false),
            f.Create(CKA.CKA_LABEL, keyLabel),
            f.Create(CKA.CKA_ID, Pkcs11Constants.KeyId(keyLabel)),
        ];
    }

    static byte[] ReadPublicKey(TokenLogin login, ISession session, IObjectHandle publicKey, DkimKeyAlgorithm algorithm)
    {
        if (algorithm == DkimKeyAlgorithm.Rsa2048)
        {
            var rsa = session.GetAttributeValue(publicKey, [CKA.CKA_MODULUS, CKA.CKA_PUBLIC_EXPONENT]);
            return Pkcs11Constants.RsaSubjectPublicKeyInfo(rsa[0].GetValueAsByteArray(), rsa[1].GetValueAsByteArray());
        }

        var point = session.GetAttributeValue(publicKey, [CKA.CKA_EC_POINT])[0].GetValueAsByteArray();
        return Pkcs11Constants.Ed25519PointToRaw(point)
            ?? throw new HsmException(HsmErrorKind.KeyMismatch, login.TenantId, $"CKA_EC_POINT of {point.Length} bytes is no Ed25519 public key");
    }

    static void Validate(HsmTenantToken token)
    {
        ArgumentNullException.ThrowIfNull(token);
        // These come from configuration (a PIN file may be empty), so they are HsmExceptions like every other
        // refusal, not argument errors; the message names the field, never its value.
        var missing = string.IsNullOrWhiteSpace(token.TenantId) ? "tenant id"
            : string.IsNullOrWhiteSpace(token.TokenLabel) ? "token label"
            : token.Pin is null || token.Pin.IsEmpty ? "user PIN"
            : null;
        if (missing is not null)
        {
            throw new HsmException(HsmErrorKind.Configuration, token.TenantId, $"the HSM token of tenant '{token.TenantId}' has no {missing}");
        }
    }

    static void Validate(HsmTenantToken token, string keyLabel)
    {
        Validate(token);
        ArgumentException.ThrowIfNullOrWhiteSpace(keyLabel);
    }
}
