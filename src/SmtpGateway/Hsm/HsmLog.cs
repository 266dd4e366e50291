using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Hsm;

/// <summary>HSM log messages; event ids 1800-1899 (<see cref="EventIds.Hsm"/>). PINs and key material never appear.</summary>
internal static partial class HsmLog
{
    [LoggerMessage(EventId = EventIds.Hsm + 0, Level = LogLevel.Information, Message = "PKCS#11 module {ModulePath} loaded ({Manufacturer} {Description})")]
    public static partial void ModuleLoaded(ILogger logger, string modulePath, string manufacturer, string description);

    [LoggerMessage(EventId = EventIds.Hsm + 1, Level = LogLevel.Error, Message = "PKCS#11 module {ModulePath} cannot be loaded: {Reason}")]
    public static partial void ModuleLoadFailed(ILogger logger, string modulePath, string reason);

    [LoggerMessage(EventId = EventIds.Hsm + 2, Level = LogLevel.Information, Message = "PKCS#11 module {ModulePath} finalized")]
    public static partial void ModuleFinalized(ILogger logger, string modulePath);

    [LoggerMessage(EventId = EventIds.Hsm + 10, Level = LogLevel.Information, Message = "Tenant {Tenant}: logged in to token {TokenLabel} (slot {SlotId})")]
    public static partial void LoggedIn(ILogger logger, string tenant, string tokenLabel, ulong slotId);

    [LoggerMessage(EventId = EventIds.Hsm + 11, Level = LogLevel.Warning, Message = "Tenant {Tenant}: login to token {TokenLabel} refused ({ReturnValue})")]
    public static partial void LoginRefused(ILogger logger, string tenant, string tokenLabel, string returnValue);

    [LoggerMessage(EventId = EventIds.Hsm + 12, Level = LogLevel.Warning, Message = "Tenant {Tenant}: token {TokenLabel} not found among present tokens")]
    public static partial void TokenNotFound(ILogger logger, string tenant, string tokenLabel);

    [LoggerMessage(EventId = EventIds.Hsm + 13, Level = LogLevel.Warning, Message = "Tenant {Tenant}: dropping sessions and cached handles of token {TokenLabel} ({Reason})")]
    public static partial void TokenReset(ILogger logger, string tenant, string tokenLabel, string reason);

    [LoggerMessage(EventId = EventIds.Hsm + 14, Level = LogLevel.Information, Message = "Tenant {Tenant}: PIN for token {TokenLabel} changed in configuration; logging in again")]
    public static partial void PinChanged(ILogger logger, string tenant, string tokenLabel);

    [LoggerMessage(EventId = EventIds.Hsm + 20, Level = LogLevel.Information, Message = "Tenant {Tenant}: generated {Algorithm} key pair {KeyLabel} in token {TokenLabel}")]
    public static partial void KeyPairGenerated(ILogger logger, string tenant, DkimKeyAlgorithm algorithm, string keyLabel, string tokenLabel);

    [LoggerMessage(EventId = EventIds.Hsm + 21, Level = LogLevel.Information, Message = "Tenant {Tenant}: deleted {Count} objects labelled {KeyLabel} from token {TokenLabel}")]
    public static partial void KeyPairDeleted(ILogger logger, string tenant, int count, string keyLabel, string tokenLabel);

    [LoggerMessage(EventId = EventIds.Hsm + 22, Level = LogLevel.Debug, Message = "Ed25519 EC params form {Form} refused by the module ({ReturnValue}); trying the other form")]
    public static partial void EdwardsParamsRefused(ILogger logger, string form, string returnValue);

    [LoggerMessage(EventId = EventIds.Hsm + 23, Level = LogLevel.Information, Message = "Tenant {Tenant}: generated {KeyType} secret key {KeyLabel} in token {TokenLabel}")]
    public static partial void SecretKeyGenerated(ILogger logger, string tenant, HsmSecretKeyType keyType, string keyLabel, string tokenLabel);

    [LoggerMessage(EventId = EventIds.Hsm + 24, Level = LogLevel.Information, Message = "Tenant {Tenant}: imported HMAC key {KeyLabel} into token {TokenLabel} (sensitive, non-extractable)")]
    public static partial void SecretKeyImported(ILogger logger, string tenant, string keyLabel, string tokenLabel);

    [LoggerMessage(EventId = EventIds.Hsm + 25, Level = LogLevel.Information, Message = "Tenant {Tenant}: deleted secret key {KeyLabel} from token {TokenLabel}")]
    public static partial void SecretKeyDeleted(ILogger logger, string tenant, string keyLabel, string tokenLabel);

    [LoggerMessage(EventId = EventIds.Hsm + 26, Level = LogLevel.Information, Message = "Tenant {Tenant}: private key {KeyLabel} in token {TokenLabel} cannot be copied into a session ({ReturnValue}); signing with the token object")]
    public static partial void KeyNotCopied(ILogger logger, string tenant, string keyLabel, string tokenLabel, string returnValue);

    [LoggerMessage(EventId = EventIds.Hsm + 30, Level = LogLevel.Warning, Message = "Tenant {Tenant}: {Operation} with key {KeyLabel} in token {TokenLabel} failed: {Kind}{ReturnValue}")]
    public static partial void OperationFailed(ILogger logger, string tenant, string operation, string keyLabel, string tokenLabel, HsmErrorKind kind, string returnValue);

    [LoggerMessage(EventId = EventIds.Hsm + 31, Level = LogLevel.Debug, Message = "Tenant {Tenant}: discarding a session of token {TokenLabel} after {ReturnValue}")]
    public static partial void SessionDiscarded(ILogger logger, string tenant, string tokenLabel, string returnValue);

    [LoggerMessage(EventId = EventIds.Hsm + 50, Level = LogLevel.Warning, Message = "Tenant {Tenant}: moved the HSM PIN file out of the data directory, from {LegacyPath} to {PinPath}")]
    public static partial void LegacyPinFileMoved(ILogger logger, string tenant, string legacyPath, string pinPath);

    [LoggerMessage(EventId = EventIds.Hsm + 51, Level = LogLevel.Information, Message = "Tenant {Tenant}: HSM PIN from {PinSource}")]
    public static partial void PinSourceChosen(ILogger logger, string tenant, string pinSource);

    [LoggerMessage(EventId = EventIds.Hsm + 40, Level = LogLevel.Information, Message = "SoftHSM2 configuration {ConfigPath} (tokens in {TokenDirectory})")]
    public static partial void SoftHsmConfigured(ILogger logger, string configPath, string tokenDirectory);

    [LoggerMessage(EventId = EventIds.Hsm + 41, Level = LogLevel.Information, Message = "SoftHSM2 token {TokenLabel} initialised")]
    public static partial void SoftHsmTokenInitialised(ILogger logger, string tokenLabel);
}
