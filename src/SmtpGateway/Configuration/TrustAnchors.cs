using System.Security.Cryptography.X509Certificates;

namespace SmtpGateway.Configuration;

/// <summary>
/// The private roots of Delivery:Tls:TrustAnchorsPath, trusted besides the system roots by every outbound TLS client the
/// gateway has (SMTP delivery, OAuth 2.0 token endpoints), so both check certificates the same way.
/// </summary>
public static class TrustAnchors
{
    /// <summary>
    /// Whether <paramref name="certificate"/> chains to one of <paramref name="anchors"/>, through the intermediates the
    /// peer sent (<paramref name="chain"/>). Revocation is not checked: private test and enterprise roots rarely publish it.
    /// </summary>
    public static bool ChainsTo(X509Certificate2Collection? anchors, X509Certificate certificate, X509Chain? chain)
    {
        if (anchors is not { Count: > 0 })
        {
            return false;
        }

        using var anchored = new X509Chain();
        anchored.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        anchored.ChainPolicy.CustomTrustStore.AddRange(anchors);
        anchored.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        if (chain is not null)
        {
            foreach (var element in chain.ChainElements)
            {
                anchored.ChainPolicy.ExtraStore.Add(element.Certificate);
            }
        }

        using var leaf = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        return anchored.Build(leaf);
    }
}
