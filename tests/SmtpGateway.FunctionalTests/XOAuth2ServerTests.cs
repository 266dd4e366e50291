using System.Net.Http.Json;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using MailKit.Net.Smtp;
using MailKit.Security;
using MimeKit;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Calibrates the scripted XOAUTH2 upstream (<see cref="XOAuth2Server"/>) without the gateway: its token endpoint
/// issues access tokens only for the right refresh token and client (RFC 6749 section 6), and its SMTP server takes
/// mail from MailKit's own SaslMechanismOAuth2 with an issued token, and 535 with anything else.
/// </summary>
public sealed class XOAuth2ServerTests(ITestOutputHelper output) : IDisposable
{
    const string User = "mailer@tenant-c.example";
    const string ClientId = "smtpgw-functional-client";
    const string ClientSecret = "client-secret-for-the-test";
    const string RefreshToken = "refresh-token-for-the-test-0123456789";

    readonly string _dir = Directory.CreateTempSubdirectory("smtpgw-ft-xoauth2-").FullName;

    [Fact]
    public async Task Token_endpoint_refreshes_only_for_the_right_client_and_SMTP_accepts_only_its_tokens_over_verified_TLS()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var (certificate, _) = await TestCertificate.GetAsync();
        using var server = await XOAuth2Server.StartAsync(_dir, new XOAuth2ServerOptions
        {
            User = User,
            ClientId = ClientId,
            ClientSecret = ClientSecret,
            RefreshToken = RefreshToken,
            ExpiresIn = TimeSpan.FromMinutes(10),
        }, cts.Token);
        try
        {
            using var anchor = X509CertificateLoader.LoadCertificateFromFile(certificate);
            using var http = new HttpClient(new SocketsHttpHandler
            {
                SslOptions = new SslClientAuthenticationOptions
                {
                    // The test certificate, as the gateway will trust it (Delivery:Tls:TrustAnchorsPath).
                    RemoteCertificateValidationCallback = (_, cert, _, errors) => Trusted(anchor, cert, errors),
                },
            });

            async Task<HttpResponseMessage> RefreshAsync(params (string, string)[] form) =>
                await http.PostAsync(server.TokenEndpoint, new FormUrlEncodedContent(form.Select(p => KeyValuePair.Create(p.Item1, p.Item2))), cts.Token);

            // Wrong refresh token, wrong client, missing secret, wrong grant: all refused, none counted.
            Assert.Equal(400, (int)(await RefreshAsync(("grant_type", "refresh_token"), ("refresh_token", "nope"), ("client_id", ClientId), ("client_secret", ClientSecret))).StatusCode);
            Assert.Equal(401, (int)(await RefreshAsync(("grant_type", "refresh_token"), ("refresh_token", RefreshToken), ("client_id", "other"), ("client_secret", ClientSecret))).StatusCode);
            Assert.Equal(401, (int)(await RefreshAsync(("grant_type", "refresh_token"), ("refresh_token", RefreshToken), ("client_id", ClientId))).StatusCode);
            Assert.Equal(400, (int)(await RefreshAsync(("grant_type", "password"), ("refresh_token", RefreshToken), ("client_id", ClientId), ("client_secret", ClientSecret))).StatusCode);
            Assert.Equal(0, server.RefreshCount);

            var response = await RefreshAsync(("grant_type", "refresh_token"), ("refresh_token", RefreshToken), ("client_id", ClientId), ("client_secret", ClientSecret));
            Assert.Equal(200, (int)response.StatusCode);
            var body = await response.Content.ReadFromJsonAsync<JsonElement>(cts.Token);
            Assert.Equal("Bearer", body.GetProperty("token_type").GetString());
            Assert.Equal(600, body.GetProperty("expires_in").GetInt32());
            var accessToken = body.GetProperty("access_token").GetString()!;
            Assert.Equal(1, server.RefreshCount);

            // MailKit's XOAUTH2 (what the gateway uses) with a token the endpoint did not issue: 535, nothing accepted.
            var refused = await Assert.ThrowsAsync<AuthenticationException>(() => SendAsync(server, anchor, "not-an-issued-token", "refused", cts.Token));
            output.WriteLine($"refused: {refused.Message}");
            var events = await server.WaitAsync(es => es.Any(e => e is { Event: "auth", Result: "refused" }), "refused AUTH", TimeSpan.FromSeconds(10), cts.Token);
            Assert.Equal("invalid or expired access token", events.Single(e => e.Event == "auth").Reason);

            // With the issued token: accepted, the message stored, the SASL string checked.
            await SendAsync(server, anchor, accessToken, "accepted", cts.Token);
            events = await server.WaitAsync(es => es.Any(e => e.Event == "message"), "message", TimeSpan.FromSeconds(10), cts.Token);
            Assert.Contains(events, e => e is { Event: "auth", Result: "ok", Mechanism: "XOAUTH2", User: User });
            var message = Assert.Single(server.Messages());
            Assert.Equal(User, message.User);
            Assert.Equal(["<someone@example.net>"], message.Rcpt);
            Assert.Contains("Subject: accepted", await File.ReadAllTextAsync(message.File!, cts.Token), StringComparison.Ordinal);
            output.WriteLine(server.Output);
        }
        catch
        {
            output.WriteLine(server.Output);
            throw;
        }
    }

    static bool Trusted(X509Certificate2 anchor, X509Certificate? presented, SslPolicyErrors errors)
    {
        if (presented is null || (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None)
        {
            return false;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(anchor);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        using var leaf = new X509Certificate2(presented);
        return chain.Build(leaf);
    }

    static async Task SendAsync(XOAuth2Server server, X509Certificate2 anchor, string accessToken, string subject, CancellationToken cancellationToken)
    {
        using var client = new SmtpClient { ServerCertificateValidationCallback = (_, cert, _, errors) => Trusted(anchor, cert, errors) };
        await client.ConnectAsync("127.0.0.1", server.SmtpPort, SecureSocketOptions.SslOnConnect, cancellationToken);
        Assert.Contains("XOAUTH2", client.AuthenticationMechanisms);
        await client.AuthenticateAsync(new SaslMechanismOAuth2(User, accessToken), cancellationToken);
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse("app@tenant-c.example"));
        message.To.Add(MailboxAddress.Parse("someone@example.net"));
        message.Subject = subject;
        message.Body = new TextPart("plain") { Text = "Hello.\n.leading dot\n" };
        await client.SendAsync(message, cancellationToken);
        await client.DisconnectAsync(true, cancellationToken);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
