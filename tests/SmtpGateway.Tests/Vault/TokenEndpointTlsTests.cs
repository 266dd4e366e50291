using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Tests.Spool;
using SmtpGateway.Vault;

namespace SmtpGateway.Tests.Vault;

/// <summary>The token endpoint's certificate: system roots, else the configured trust anchors; a wrong name never passes.</summary>
public sealed class TokenEndpointTlsTests
{
    static (X509Certificate2 Ca, X509Certificate2 Leaf) Chain(string host = "login.example")
    {
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=Test Token CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        var ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));

        using var leafKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var leafRequest = new CertificateRequest($"CN={host}", leafKey, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName(host);
        leafRequest.CertificateExtensions.Add(san.Build());
        using var leaf = leafRequest.Create(ca, DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(10), RandomNumberGenerator.GetBytes(8));
        // Through PKCS#12, so the server side of SslStream gets a key it can use on Linux.
        using var withKey = leaf.CopyWithPrivateKey(leafKey);
        return (ca, X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null));
    }

    [Fact]
    public void A_chain_to_a_trust_anchor_passes_and_anything_else_fails()
    {
        var (ca, leaf) = Chain();
        using (ca)
        using (leaf)
        {
            var anchors = new X509Certificate2Collection { ca };
            var other = new X509Certificate2Collection { Chain().Ca };

            Assert.True(OAuth2TokenClient.ValidateCertificate(null, leaf, null, SslPolicyErrors.None));
            Assert.True(OAuth2TokenClient.ValidateCertificate(anchors, leaf, null, SslPolicyErrors.RemoteCertificateChainErrors));
            Assert.False(OAuth2TokenClient.ValidateCertificate(null, leaf, null, SslPolicyErrors.RemoteCertificateChainErrors));
            Assert.False(OAuth2TokenClient.ValidateCertificate(other, leaf, null, SslPolicyErrors.RemoteCertificateChainErrors));
            Assert.False(OAuth2TokenClient.ValidateCertificate(anchors, leaf, null, SslPolicyErrors.RemoteCertificateChainErrors | SslPolicyErrors.RemoteCertificateNameMismatch));
            Assert.False(OAuth2TokenClient.ValidateCertificate(anchors, null, null, SslPolicyErrors.RemoteCertificateNotAvailable));
        }
    }

    [Fact]
    public async Task A_real_https_endpoint_under_a_private_ca_serves_the_refresh()
    {
        var (ca, leaf) = Chain("localhost");
        using (ca)
        using (leaf)
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            var port = ((IPEndPoint)listener.LocalEndpoint).Port;
            var server = Task.Run(async () =>
            {
                using var client = await listener.AcceptTcpClientAsync();
                await using var tls = new SslStream(client.GetStream());
                await tls.AuthenticateAsServerAsync(leaf);
                var request = new List<byte>();
                var buffer = new byte[4096];
                while (!Encoding.ASCII.GetString([.. request]).Contains("refresh_token=rt-1", StringComparison.Ordinal))
                {
                    var n = await tls.ReadAsync(buffer);
                    request.AddRange(buffer.AsSpan(0, n).ToArray());
                }

                var body = """{"access_token":"at-over-tls","token_type":"Bearer","expires_in":3600}""";
                await tls.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n{body}"));
                return Encoding.ASCII.GetString([.. request]);
            });

            using var data = new TempDirectory();
            var keys = new Fakes.InMemoryTenantKeys();
            using var vault = new CredentialVault(data.Path, keys, new Listener.RecordingAudit(), TimeProvider.System, new SmtpGateway.Configuration.VaultConfig(),
                OAuth2TokenClient.CreateHandler([ca]), NullLogger<CredentialVault>.Instance);
            var version = vault.Set("tenant-a", "o365", NewSecret.RefreshToken("me@a.example", "rt-1"u8.ToArray(), null, $"https://localhost:{port}/token", "c1"));

            using (var secret = await vault.OpenAsync(version, CredentialVault.PurposeSmtpAuth, null, CancellationToken.None))
            {
                Assert.Equal("at-over-tls", Encoding.UTF8.GetString(secret.Secret));
            }

            var seen = await server;
            Assert.StartsWith("POST /token HTTP/1.1", seen, StringComparison.Ordinal);
            Assert.Contains("application/x-www-form-urlencoded", seen, StringComparison.Ordinal);
        }
    }
}
