using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace SmtpGateway.Configuration;

/// <summary>
/// Immutable snapshot compiled from a validated <see cref="GatewayConfig"/>: parsed endpoints and networks,
/// loaded TLS material. Built once at start; a reload builds a new one (Config → Model → State).
/// </summary>
public sealed class GatewayModel
{
    GatewayModel(IReadOnlyList<ListenerModel> listeners, TlsModel? tls)
    {
        Listeners = listeners;
        Tls = tls;
    }

    public IReadOnlyList<ListenerModel> Listeners { get; }

    public TlsModel? Tls { get; }

    public static GatewayModel Build(GatewayConfig config)
    {
        var listeners = config.Listeners
            .Select(l => new ListenerModel(l.Name, l.Kind, new IPEndPoint(IPAddress.Parse(l.Address), l.Port)))
            .ToList();

        TlsModel? tls = null;
        if (!string.IsNullOrWhiteSpace(config.Tls.CertificatePath) && !string.IsNullOrWhiteSpace(config.Tls.KeyPath))
        {
            tls = LoadTls(config.Tls.CertificatePath, config.Tls.KeyPath);
        }

        return new GatewayModel(listeners, tls);
    }

    public static TlsModel LoadTls(string certificatePath, string keyPath)
    {
        var leaf = X509Certificate2.CreateFromPemFile(certificatePath, keyPath);
        var chain = new X509Certificate2Collection();
        chain.ImportFromPemFile(certificatePath);
        var intermediates = new X509Certificate2Collection();
        foreach (var cert in chain)
        {
            if (cert.Thumbprint != leaf.Thumbprint)
            {
                intermediates.Add(cert);
            }
        }

        return new TlsModel(SslStreamCertificateContext.Create(leaf, intermediates, offline: true));
    }
}
