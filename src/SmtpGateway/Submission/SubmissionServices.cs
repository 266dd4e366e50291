using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Signing;
using SmtpGateway.Spool;

namespace SmtpGateway.Submission;

/// <summary>Identity facts and services the Identity and Policy stages consult: the tenant map, AUTH, throttling, audit.</summary>
public sealed record IdentityServices(
    Func<TenantSnapshot> Tenants,
    ISmtpAuthenticator Authenticator,
    Func<TokenPayload, TokenCheck> StillValid,
    AuthThrottle Throttle,
    IAuditLog Audit,
    IdentityConfig Config);

/// <summary>
/// Envelope isolation (issue #7) as the pipeline sees it: return-path tags to check at RCPT on bounce domains, the
/// tenants' suppression lists, header hygiene before signing, and where a suppression refusal is reported.
/// <paramref name="ReturnPathThrottle"/> counts failed tag checks per client address (issue 12); null only in tests
/// that do not exercise it.
/// </summary>
public sealed record EnvelopeServices(
    Envelope.ReturnPath ReturnPaths,
    Bounces.SuppressionList Suppression,
    Envelope.HeaderHygiene Hygiene,
    Action<string, string, string>? SuppressedRecipient = null,
    AuthThrottle? ReturnPathThrottle = null);

/// <summary>Everything the stages need, resolved once at start.</summary>
/// <param name="Signer">Null only where no tenant signs (unit tests of other stages).</param>
/// <param name="Envelope">Null only where envelope isolation is not under test.</param>
/// <param name="Budget">Gateway-wide memory budget for messages in flight; one per process.</param>
/// <param name="RateLimits">Per-tenant message, recipient and session counts; one per process (null: the pipeline makes its own).</param>
/// <param name="SigningGate">Gateway-wide fair admission to signing (issue 12); one per process. Null: the pipeline makes its own.</param>
public sealed record SubmissionServices(
    string ServerName,
    LimitsConfig Limits,
    IdentityServices Identity,
    IMessageSpool Spool,
    TimeProvider Time,
    MessageMemoryBudget Budget,
    IMessageSigner? Signer = null,
    EnvelopeServices? Envelope = null,
    Policy.TenantRateLimits? RateLimits = null,
    SigningGate? SigningGate = null);
