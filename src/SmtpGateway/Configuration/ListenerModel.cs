using System.Net;
using System.Net.Security;
using System.Security.Authentication;

namespace SmtpGateway.Configuration;

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
