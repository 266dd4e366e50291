namespace SmtpGateway.Hsm;

/// <summary>What went wrong, coarse enough for a caller to choose a reply and for an operator to alert on.</summary>
public enum HsmErrorKind
{
    /// <summary>The PKCS#11 module could not be loaded or initialised (C_Initialize).</summary>
    ModuleUnavailable,
    /// <summary>No present token carries the configured label.</summary>
    TokenNotFound,
    /// <summary>The token went away or stopped answering (removed, sessions closed under us, device error).</summary>
    TokenUnavailable,
    /// <summary>C_Login refused (wrong, locked or expired PIN).</summary>
    LoginFailed,
    /// <summary>No session could be had within the wait timeout: every pooled session is busy.</summary>
    SessionUnavailable,
    /// <summary>A PKCS#11 call failed in a way that may pass (C_Sign, C_GenerateKeyPair, …).</summary>
    OperationFailed,
    /// <summary>The token has no key pair with that label.</summary>
    KeyNotFound,
    /// <summary>The label is already taken in the token.</summary>
    KeyExists,
    /// <summary>The key under that label is not what the caller asked for (other algorithm, or two objects share the label).</summary>
    KeyMismatch,
    /// <summary>The module does not support what was asked (mechanism, curve, key usage).</summary>
    Unsupported,
    /// <summary>The configuration contradicts the isolation rules (a token label claimed by two tenants, a label on two tokens).</summary>
    Configuration,
    /// <summary>Sealed data did not authenticate under the key (AES-GCM tag mismatch: tampered, or sealed for another tenant or record).</summary>
    DataInvalid,
}

/// <summary>
/// Every failure of the HSM layer. The message is safe to log: it names tenant, token label, key label
/// and the PKCS#11 return value, never a PIN or key material.
/// </summary>
public sealed class HsmException : Exception
{
    public HsmException()
    {
    }

    public HsmException(string message)
        : base(message)
    {
    }

    public HsmException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    internal HsmException(HsmErrorKind kind, string? tenantId, string message, string? returnValue = null, Exception? innerException = null)
        : base(returnValue is null ? message : $"{message} ({returnValue})", innerException)
    {
        Kind = kind;
        TenantId = tenantId;
        ReturnValue = returnValue;
    }

    public HsmErrorKind Kind { get; } = HsmErrorKind.OperationFailed;

    /// <summary>The tenant the operation was for, when known.</summary>
    public string? TenantId { get; }

    /// <summary>The PKCS#11 return value's name (e.g. CKR_PIN_INCORRECT), when a PKCS#11 call failed.</summary>
    public string? ReturnValue { get; }

    /// <summary>
    /// True when retrying later may succeed (module, token, session or login trouble): the SMTP caller
    /// answers 451 4.3.0. False for errors that will not pass by themselves (no such key, label taken,
    /// unsupported mechanism, contradictory configuration).
    /// </summary>
    public bool Transient => Kind is HsmErrorKind.ModuleUnavailable or HsmErrorKind.TokenNotFound or HsmErrorKind.TokenUnavailable
        or HsmErrorKind.LoginFailed or HsmErrorKind.SessionUnavailable or HsmErrorKind.OperationFailed;
}
