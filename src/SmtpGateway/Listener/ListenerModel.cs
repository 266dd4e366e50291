using System.Net;
using System.Net.Security;
using System.Security.Authentication;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Audit;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Spool;

namespace SmtpGateway.Listener;

/// <summary>One endpoint, compiled from <see cref="ListenerConfig"/>.</summary>
public sealed record ListenerModel(string Name, ListenerKind Kind, IPEndPoint EndPoint)
{
    public bool ImplicitTls => Kind == ListenerKind.ImplicitTls;

    public bool OffersStartTls => Kind == ListenerKind.Submission;

    /// <summary>AUTH belongs to submission (RFC 6409); the legacy relay endpoint identifies clients by address.</summary>
    public bool OffersAuth => Kind != ListenerKind.Relay;
}

/// <summary>TLS material shared by every TLS session: built once so each handshake does not reload the chain.</summary>
public sealed class TlsModel(SslStreamCertificateContext certificateContext)
{
    /// <summary>TLS 1.2 and 1.3 only (RFC 8996 deprecates 1.0 and 1.1).</summary>
    public const SslProtocols Protocols = SslProtocols.Tls12 | SslProtocols.Tls13;

    public SslServerAuthenticationOptions ServerOptions() => new()
    {
        ServerCertificateContext = certificateContext,
        EnabledSslProtocols = Protocols,
        ClientCertificateRequired = false,
        CertificateRevocationCheckMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck,
    };
}

/// <summary>Identity facts and services a session consults: the tenant map, AUTH, throttling, audit.</summary>
public sealed record IdentityServices(
    Func<TenantSnapshot> Tenants,
    ISmtpAuthenticator Authenticator,
    Func<TokenPayload, TokenCheck> StillValid,
    AuthThrottle Throttle,
    IAuditLog Audit,
    IdentityConfig Config);

/// <summary>Everything a session needs, resolved once per listener, not per connection.</summary>
public sealed record SessionServices(
    string ServerName,
    LimitsConfig Limits,
    TlsModel? Tls,
    IdentityServices Identity,
    IMessageSpool Spool,
    TimeProvider Time,
    ListenerMetrics Metrics,
    Signing.IMessageSigner? Signer = null,
    EnvelopeServices? Envelope = null);

/// <summary>
/// Envelope isolation (issue #7) as a session sees it: return-path tags to check at RCPT on bounce domains, the
/// tenants' suppression lists, header hygiene before signing, and where a suppression refusal is reported.
/// </summary>
public sealed record EnvelopeServices(
    Envelope.ReturnPath ReturnPaths,
    Bounces.SuppressionList Suppression,
    Envelope.HeaderHygiene Hygiene,
    Action<string, string, string>? SuppressedRecipient = null);
