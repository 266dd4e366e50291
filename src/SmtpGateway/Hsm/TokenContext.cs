using System.Collections.Concurrent;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;

namespace SmtpGateway.Hsm;

/// <summary>Counters that tests read to prove the per-message path does no login and no object search.</summary>
internal sealed class HsmCounters
{
    long _logins;
    long _findObjects;
    long _sessionsOpened;
    long _resets;

    public long Logins => Interlocked.Read(ref _logins);

    /// <summary>C_FindObjectsInit/C_FindObjects/C_FindObjectsFinal rounds.</summary>
    public long FindObjects => Interlocked.Read(ref _findObjects);

    public long SessionsOpened => Interlocked.Read(ref _sessionsOpened);

    /// <summary>Times a token's login, sessions and handles were dropped after a stale handle or session.</summary>
    public long Resets => Interlocked.Read(ref _resets);

    public void Login() => Interlocked.Increment(ref _logins);

    public void FindObject() => Interlocked.Increment(ref _findObjects);

    public void SessionOpened() => Interlocked.Increment(ref _sessionsOpened);

    public void Reset() => Interlocked.Increment(ref _resets);
}

/// <summary>
/// A key object found in a token: its handle, its CKA_KEY_TYPE (checked on lookup to be one the gateway makes), and for a
/// private key the session-object copy signing uses (see <see cref="TokenLogin.SigningHandle"/>).
/// </summary>
internal sealed class CachedKey(IObjectHandle handle, ulong keyType, IObjectHandle? sessionCopy = null, long copiedAt = 0)
{
    long _confirmedAt = copiedAt;

    /// <summary>The token object.</summary>
    public IObjectHandle Handle { get; } = handle;

    public ulong KeyType { get; } = keyType;

    /// <summary>A copy of the private key as a session object of the login's anchor session, or null to sign with <see cref="Handle"/>.</summary>
    public IObjectHandle? SessionCopy { get; } = sessionCopy;

    /// <summary>When the token object was last seen to exist (a <see cref="TimeProvider"/> timestamp).</summary>
    public long ConfirmedAt
    {
        get => Volatile.Read(ref _confirmedAt);
        set => Volatile.Write(ref _confirmedAt, value);
    }

    /// <summary>For key pairs: RSA or Edwards (the only two types <see cref="TokenLogin.FindKey"/> accepts for them).</summary>
    public DkimKeyAlgorithm Algorithm => KeyType == Pkcs11Constants.CKK_EC_EDWARDS ? DkimKeyAlgorithm.Ed25519 : DkimKeyAlgorithm.Rsa2048;

    /// <summary>For secret keys: generic secret (HMAC) or AES.</summary>
    public HsmSecretKeyType SecretType => KeyType == (ulong)CKK.CKK_AES ? HsmSecretKeyType.Aes256 : HsmSecretKeyType.Hmac256;
}

/// <summary>
/// One tenant's token within a loaded module: holds the current <see cref="TokenLogin"/> and replaces
/// it when the PIN changes or the token's handles go stale.
/// </summary>
internal sealed class TokenContext(Pkcs11Runtime runtime, string tokenLabel, string ownerTenantId)
{
    readonly Lock _gate = new();
    TokenLogin? _current;
    RefusedPin? _refused;

    public Pkcs11Runtime Runtime { get; } = runtime;

    public string TokenLabel { get; } = tokenLabel;

    public string OwnerTenantId { get; } = ownerTenantId;

    /// <summary>Serialises key generation and deletion in this token, so "label already taken" is checked atomically.</summary>
    public Lock Management { get; } = new();

    /// <summary>
    /// The logged-in state for this token, logging in first if needed. The per-message path returns from
    /// the first line: a volatile read and a comparison of two PIN fingerprints, no PKCS#11 call and no PIN read.
    /// </summary>
    public TokenLogin Acquire(HsmTenantToken token, HsmCounters counters, ILogger logger, TimeProvider time)
    {
        var login = Volatile.Read(ref _current);
        if (login is not null && token.Pin.SameAs(login.Pin))
        {
            return login;
        }

        lock (_gate)
        {
            login = _current;
            if (login is not null && token.Pin.SameAs(login.Pin))
            {
                return login;
            }

            // A PIN the token refused is not offered again until the hold-off has passed: real HSMs lock the user
            // PIN after a few wrong tries (CKF_USER_PIN_FINAL_TRY / CKF_USER_PIN_LOCKED, v2.40 §3.2), and a
            // misconfigured tenant would otherwise spend them in seconds, one message each. Checked before the
            // logout below, so a wrong PIN also cannot knock out a good login.
            if (_refused is { } refused && time.GetUtcNow() < refused.Until && token.Pin.Matches(refused.Fingerprint))
            {
                throw new HsmException(HsmErrorKind.LoginFailed, token.TenantId,
                    $"login to token '{TokenLabel}' for tenant '{token.TenantId}' was refused at {refused.At:O}; the same PIN is not retried before {refused.Until:O}",
                    refused.ReturnValue);
            }

            if (login is not null)
            {
                // C_Login while logged in returns CKR_USER_ALREADY_LOGGED_IN without checking the PIN, so a
                // different PIN can only be verified by logging out first. Config is the authority on the PIN.
                HsmLog.PinChanged(logger, token.TenantId, TokenLabel);
                Volatile.Write(ref _current, null);
                login.Retire(logout: true);
            }

            try
            {
                login = TokenLogin.Open(this, token, counters, logger);
            }
            catch (HsmException ex) when (ex.Kind == HsmErrorKind.LoginFailed)
            {
                var now = time.GetUtcNow();
                _refused = new RefusedPin(token.Pin.FingerprintCopy(), now, now + Runtime.Options.LoginRetryInterval, ex.ReturnValue);
                throw;
            }

            // _refused stays: a PIN the token refused remains wrong after another PIN got in.
            Volatile.Write(ref _current, login);
            return login;
        }
    }

    /// <summary>Drops a login whose handles or sessions went stale; the next <see cref="Acquire"/> logs in afresh.</summary>
    public void Invalidate(TokenLogin login, string reason, HsmCounters counters, ILogger logger)
    {
        lock (_gate)
        {
            // Logging out is token-wide for the application (UG v2.40 §2.6.4), so only the login that is still
            // current may do it, and under the gate, before a successor can log in: an older login that lost
            // the race must not log out its successor.
            var wasCurrent = ReferenceEquals(_current, login);
            if (wasCurrent)
            {
                Volatile.Write(ref _current, null);
                counters.Reset();
                HsmLog.TokenReset(logger, OwnerTenantId, TokenLabel, reason);
            }

            login.Retire(logout: wasCurrent);
        }
    }

    sealed record RefusedPin(byte[] Fingerprint, DateTimeOffset At, DateTimeOffset Until, string? ReturnValue);

    public void Close()
    {
        lock (_gate)
        {
            _current?.Retire(logout: true);
            _current = null;
        }
    }
}

/// <summary>
/// One login to one token: the session that holds the login, a pool of sessions for operations, and
/// the key handles found through them.
/// </summary>
/// <remarks>
/// PKCS#11 leaves concurrent use of one session undefined (UG v2.40 §2.6.6), so each operation rents a
/// session for itself. Login state is shared by all of the application's sessions with the token and
/// ends when the last one closes (UG v2.40 §2.6.4, v2.40 §5.6.2), which is why a dedicated anchor
/// session stays open for the login's lifetime while pooled sessions come and go. Object handles are
/// valid in every session of the application for as long as the object exists (UG v2.40 §2.6.5), so a
/// handle found once serves every later sign on any pooled session.
/// </remarks>
internal sealed class TokenLogin
{
    readonly TokenContext _context;
    readonly ISession _anchor;
    readonly ConcurrentStack<ISession> _idle = new();
    readonly SemaphoreSlim _capacity;
    readonly ConcurrentDictionary<(string Label, CKO Class), CachedKey> _keys = new();
    readonly TimeSpan _wait;

    /// <summary>Guards the anchor session, which also creates and destroys the keys' session copies (a session is one caller's at a time, v2.40 §2.6.7).</summary>
    readonly Lock _anchorGate = new();
    readonly ILogger _logger;

    /// <summary>ForgetKey calls so far (see FindKey).</summary>
    long _forgets;
    volatile bool _retired;

    TokenLogin(TokenContext context, string tenantId, ISlot slot, ISession anchor, HsmPin pin, ILogger logger)
    {
        _context = context;
        _logger = logger;
        TenantId = tenantId;
        Slot = slot;
        _anchor = anchor;
        Pin = pin;
        _capacity = new SemaphoreSlim(context.Runtime.Options.MaxSessionsPerToken);
        _wait = context.Runtime.Options.SessionWaitTimeout;
    }

    public TokenContext Context => _context;

    /// <summary>The PIN this login was made with (its fingerprint tells whether configuration has changed it since).</summary>
    public HsmPin Pin { get; }

    public string TenantId { get; }

    public ISlot Slot { get; }

    public bool Retired => _retired;

    public static TokenLogin Open(TokenContext context, HsmTenantToken token, HsmCounters counters, ILogger logger)
    {
        var runtime = context.Runtime;
        ISlot slot;
        ISession anchor;
        try
        {
            slot = runtime.FindSlot(token.TenantId, token.TokenLabel);
            anchor = slot.OpenSession(SessionType.ReadWrite);
        }
        catch (HsmException ex) when (ex.Kind == HsmErrorKind.TokenNotFound)
        {
            HsmLog.TokenNotFound(logger, token.TenantId, token.TokenLabel);
            throw;
        }
        catch (Pkcs11Exception ex)
        {
            throw new HsmException(HsmErrorKind.TokenUnavailable, token.TenantId, $"token '{token.TokenLabel}' cannot be opened", ex.RV.ToString(), ex);
        }

        HsmMetrics.SessionOpened();
        counters.SessionOpened();
        try
        {
            counters.Login();
            // The PIN is read from its source for this C_Login only (v2.40 §5.6.3 takes it as a byte string, not text)
            // and zeroed straight after; between logins the process holds its fingerprint, not the PIN.
            var pin = ReadPin(token);
            try
            {
                try
                {
                    anchor.Login(CKU.CKU_USER, pin);
                }
                catch (Pkcs11Exception ex) when (ex.RV == CKR.CKR_USER_ALREADY_LOGGED_IN)
                {
                    // Something else in this process logged in to the token (C_Login is per application, not per
                    // caller). Log out and in again so the PIN we were given is actually verified.
                    anchor.Logout();
                    anchor.Login(CKU.CKU_USER, pin);
                }
            }
            finally
            {
                CryptographicOperations.ZeroMemory(pin);
            }
        }
        catch (HsmException)
        {
            CloseQuietly(anchor);
            HsmMetrics.Login(token.TenantId, "error");
            throw;
        }
        catch (Pkcs11Exception ex)
        {
            CloseQuietly(anchor);
            var refused = Pkcs11Constants.IsPinRefusal(ex.RV);
            HsmMetrics.Login(token.TenantId, refused ? "refused" : "error");
            if (refused)
            {
                HsmLog.LoginRefused(logger, token.TenantId, token.TokenLabel, ex.RV.ToString());
            }

            // The inner Pkcs11Exception says only "Method C_Login returned CKR_…"; the PIN is in no message.
            throw new HsmException(refused ? HsmErrorKind.LoginFailed : HsmErrorKind.TokenUnavailable, token.TenantId,
                $"login to token '{token.TokenLabel}' for tenant '{token.TenantId}' {(refused ? "refused" : "failed")}", ex.RV.ToString(), ex);
        }

        HsmMetrics.Login(token.TenantId, "ok");
        HsmLog.LoggedIn(logger, token.TenantId, token.TokenLabel, slot.SlotId);
        return new TokenLogin(context, token.TenantId, slot, anchor, token.Pin, logger);
    }

    /// <summary>The PIN bytes from their source; a source that cannot be read (file gone, mode widened) is configuration trouble.</summary>
    static byte[] ReadPin(HsmTenantToken token)
    {
        try
        {
            return token.Pin.Read();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            // The source's message names the file or variable and what is wrong with it, never the PIN.
            throw new HsmException(HsmErrorKind.Configuration, token.TenantId, $"the PIN of tenant '{token.TenantId}' cannot be read: {ex.Message}", null, ex);
        }
    }

    /// <summary>A session for one operation; give it back with <see cref="Return"/>.</summary>
    public ISession Rent(HsmCounters counters)
    {
        if (_retired)
        {
            throw new StaleLoginException();
        }

        // Issue 12: the signing gate keeps each tenant's signers within its share (at most this pool's size), so a signer
        // finds a session free; what can still wait here is a token or return-path MAC meeting a full pool. Take a free
        // session without blocking; else wait briefly (the holders are C_Sign calls of a millisecond or so) and fail
        // transiently rather than hold a pool thread for long.
        if (!_capacity.Wait(0) && !_capacity.Wait(_wait))
        {
            throw new HsmException(HsmErrorKind.SessionUnavailable, TenantId,
                $"all {_context.Runtime.Options.MaxSessionsPerToken} sessions of token '{_context.TokenLabel}' stayed busy for {_wait.TotalSeconds:0.#} s");
        }

        if (_idle.TryPop(out var session))
        {
            return session;
        }

        try
        {
            session = Slot.OpenSession(SessionType.ReadWrite);
        }
        catch
        {
            _capacity.Release();
            throw;
        }

        HsmMetrics.SessionOpened();
        counters.SessionOpened();
        return session;
    }

    /// <summary>Returns a rented session; one that saw an error is closed rather than reused.</summary>
    public void Return(ISession session, bool discard)
    {
        if (discard || _retired)
        {
            CloseQuietly(session);
        }
        else
        {
            _idle.Push(session);
            if (_retired)
            {
                DrainIdle(); // retired while we pushed: nobody else will close it
            }
        }

        _capacity.Release();
    }

    /// <summary>
    /// The key object of that class and label: from the cache, or found once with C_FindObjects and
    /// cached. Misses are not cached, so a key made later (by `smtpgw dkim keygen`) is found.
    /// </summary>
    /// <param name="copyRecheck">For a private key: <see cref="Pkcs11HsmOptions.KeyCopyRecheckInterval"/>; zero or less makes no session copy.</param>
    public CachedKey? FindKey(ISession session, string keyLabel, CKO objectClass, HsmCounters counters, TimeProvider time, TimeSpan copyRecheck)
    {
        if (_keys.TryGetValue((keyLabel, objectClass), out var cached))
        {
            return cached;
        }

        // A ForgetKey from here on (a delete or a new key under the label) means what the search finds may be gone.
        var forgets = Interlocked.Read(ref _forgets);
        var factory = _context.Runtime.Factories.ObjectAttributeFactory;
        counters.FindObject();
        List<IObjectAttribute> template = [factory.Create(CKA.CKA_CLASS, objectClass), factory.Create(CKA.CKA_LABEL, keyLabel)];
        if (objectClass == CKO.CKO_PRIVATE_KEY)
        {
            // The token object: its session copy carries the same label and class.
            template.Add(factory.Create(CKA.CKA_TOKEN, true));
        }

        var found = session.FindAllObjects(template);
        if (found.Count == 0)
        {
            return null;
        }

        if (found.Count > 1)
        {
            throw new HsmException(HsmErrorKind.KeyMismatch, TenantId,
                $"token '{_context.TokenLabel}' holds {found.Count} {objectClass} objects labelled '{keyLabel}'");
        }

        var keyType = session.GetAttributeValue(found[0], [CKA.CKA_KEY_TYPE])[0].GetValueAsUlong();
        var known = objectClass == CKO.CKO_SECRET_KEY
            ? keyType is (ulong)CKK.CKK_GENERIC_SECRET or (ulong)CKK.CKK_AES
            : keyType is (ulong)CKK.CKK_RSA or Pkcs11Constants.CKK_EC_EDWARDS;
        if (!known)
        {
            throw new HsmException(HsmErrorKind.KeyMismatch, TenantId,
                $"key '{keyLabel}' in token '{_context.TokenLabel}' has key type 0x{keyType:x}, which the gateway does not use for {objectClass}");
        }

        var plain = new CachedKey(found[0], keyType);
        lock (_anchorGate)
        {
            // Another caller may have cached it meanwhile (one copy per key and login); a key forgotten since the search
            // is used this once, uncached and uncopied. A retired login's anchor is closed (under this gate): no copy either.
            if (_keys.TryGetValue((keyLabel, objectClass), out cached))
            {
                return cached;
            }

            if (Interlocked.Read(ref _forgets) != forgets)
            {
                return plain;
            }

            var copy = objectClass == CKO.CKO_PRIVATE_KEY && copyRecheck > TimeSpan.Zero && !_retired ? CopyToSession(found[0], keyLabel) : null;
            var key = copy is null ? plain : new CachedKey(found[0], keyType, copy, time.GetTimestamp());
            _keys[(keyLabel, objectClass)] = key;
            return key;
        }
    }

    /// <summary>
    /// The handle to sign with: the key's session copy, or the token object when there is none.
    /// </summary>
    /// <remarks>
    /// SoftHSM2 re-reads a token object's file (open, fcntl locks, read: about 20 system calls) every time an operation
    /// starts with it, to notice changes made by other processes; a session object lives in the module's memory (or, in
    /// a hardware HSM, in the device's) and is used as it is. The copy is made with C_CopyObject, which can neither reveal
    /// a sensitive value nor make a key extractable (v2.40 §4.9); it stays private (it needs this login) and ends with the
    /// anchor session. What the copy cannot see is the token object being deleted by another program (`softhsm2-util`,
    /// or `smtpgw dkim rotate --retire` with the admin API unreachable; through the API the retire runs in this process
    /// and forgets the key at once), so the token object is looked up again once per
    /// <see cref="Pkcs11HsmOptions.KeyCopyRecheckInterval"/>: a deleted key (CKR_OBJECT_HANDLE_INVALID) drops the login
    /// like any stale handle, and the next lookup reports it missing.
    /// </remarks>
    public static IObjectHandle SigningHandle(ISession session, CachedKey key, TimeProvider time, TimeSpan recheck)
    {
        if (key.SessionCopy is not { } copy || recheck <= TimeSpan.Zero)
        {
            return key.Handle;
        }

        // Negative when the key was cached through another Pkcs11Hsm with another clock (they share the login): check then too.
        var now = time.GetTimestamp();
        var elapsed = time.GetElapsedTime(key.ConfirmedAt, now);
        if (elapsed >= recheck || elapsed < TimeSpan.Zero)
        {
            // Deleted: CKR_OBJECT_HANDLE_INVALID. Changed to sign no more (possible only for a key made modifiable
            // elsewhere): the token object is used, so the module refuses as it would have without the copy.
            if (!session.GetAttributeValue(key.Handle, [CKA.CKA_SIGN])[0].GetValueAsBool())
            {
                return key.Handle;
            }

            key.ConfirmedAt = now;
        }

        return copy;
    }

    /// <summary>
    /// The session copy of a private key, or null when the token will not copy it: then the key signs as the token object
    /// until the login ends (a new login tries again), which is how it signed before copies existed.
    /// </summary>
    IObjectHandle? CopyToSession(IObjectHandle handle, string keyLabel)
    {
        try
        {
            return _anchor.CopyObject(handle, [_context.Runtime.Factories.ObjectAttributeFactory.Create(CKA.CKA_TOKEN, false)]);
        }
        catch (Pkcs11Exception ex) when (!Pkcs11Constants.IsStale(ex.RV))
        {
            // Never (CKR_ACTION_PROHIBITED: CKA_COPYABLE or CKA_MODIFIABLE false; no C_CopyObject) or not now (a full
            // session-object store): either way the signature must not fail for it, and retrying every message would
            // cost a search and a log line each. A stale handle or session goes to the caller's reset.
            HsmLog.KeyNotCopied(_logger, TenantId, keyLabel, _context.TokenLabel, ex.RV.ToString());
            return null;
        }
    }

    /// <summary>Drops the cached handles of that label, and destroys a private key's session copy.</summary>
    public void ForgetKey(string keyLabel)
    {
        // Under the gate, like FindKey's check-and-cache: a lookup that searched before this point caches nothing.
        lock (_anchorGate)
        {
            Interlocked.Increment(ref _forgets);
            _keys.TryRemove((keyLabel, CKO.CKO_PUBLIC_KEY), out _);
            _keys.TryRemove((keyLabel, CKO.CKO_SECRET_KEY), out _);
            if (!_keys.TryRemove((keyLabel, CKO.CKO_PRIVATE_KEY), out var removed) || removed.SessionCopy is not { } copy || _retired)
            {
                // No copy, or a retired login closed the anchor and the copy with it.
                return;
            }

            try
            {
                _anchor.DestroyObject(copy);
            }
            catch (Pkcs11Exception)
            {
                // Gone with its session already (token removed); a signer still holding it gets a stale handle and retries.
            }
        }
    }

    /// <summary>Closes the pool and the anchor. Sessions still rented are closed when they come back.</summary>
    public void Retire(bool logout)
    {
        if (_retired)
        {
            return;
        }

        _retired = true;

        // The session copies end with the anchor session below.
        _keys.Clear();
        DrainIdle();
        lock (_anchorGate)
        {
            if (logout)
            {
                try
                {
                    _anchor.Logout();
                }
                catch (Pkcs11Exception)
                {
                    // Already logged out, or the token is gone: either way nobody is logged in any more.
                }
            }

            CloseQuietly(_anchor);
        }
    }

    void DrainIdle()
    {
        while (_idle.TryPop(out var session))
        {
            CloseQuietly(session);
        }
    }

    static void CloseQuietly(ISession session)
    {
        try
        {
            session.Dispose();
        }
        catch (Pkcs11Exception)
        {
            // A session of a removed token is closed already; nothing else to release.
        }

        HsmMetrics.SessionClosed();
    }
}

/// <summary>Raised when a login was retired between being acquired and used; handled like a stale handle.</summary>
internal sealed class StaleLoginException : Exception
{
    public StaleLoginException()
        : base("token login was retired")
    {
    }

    public StaleLoginException(string message)
        : base(message)
    {
    }

    public StaleLoginException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
