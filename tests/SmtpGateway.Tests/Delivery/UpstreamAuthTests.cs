using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Spool;
using SmtpGateway.Vault;
using static SmtpGateway.Tests.Spool.SpoolTestKit;

namespace SmtpGateway.Tests.Delivery;

/// <summary>
/// AUTH to a tenant's own smarthost with a vault credential (issue 11 items 4 and 5), against the in-process test server
/// over verified TLS: the SASL bytes on the wire, zeroed secrets, the credential version in the pool key, refusals that
/// defer and the grace-window fallback.
/// </summary>
public sealed class UpstreamAuthTests : IAsyncLifetime
{
    const string Tenant = "tenant-a";
    const string User = "relay@tenant-a.example";

    readonly TempDirectory _dir = new();
    readonly TestSmtpServer _server = new() { AuthMechanisms = ["PLAIN", "LOGIN", "XOAUTH2"] };
    readonly FakeTimeProvider _time = new(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
    readonly FakeUpstreamCredentials _vault;
    readonly X509Certificate2 _certificate = LoopbackCertificate();
    string _anchors = "";
    FileSpool _spool = null!;

    public UpstreamAuthTests() => _vault = new FakeUpstreamCredentials(_time);

    public async Task InitializeAsync()
    {
        _spool = NewSpool(_dir.Combine("spool"), TimeProvider.System, fsync: false);
        _anchors = _dir.Combine("anchors.pem");
        await File.WriteAllTextAsync(_anchors, _certificate.ExportCertificatePem());
        _server.StartTlsCertificate = _certificate;
    }

    public async Task DisposeAsync()
    {
        _spool.Dispose();
        await _server.DisposeAsync();
        _certificate.Dispose();
        _dir.Dispose();
    }

    SmarthostTransport NewTransport(Action<TenantSmarthostConfig>? configure = null, bool withVault = true, bool trusted = true)
    {
        var smarthost = new TenantSmarthostConfig { Host = "127.0.0.1", Port = _server.Port, Credential = "relay" };
        configure?.Invoke(smarthost);
        var config = new GatewayConfig { ServerName = "gw.test", Delivery = { Mode = DeliveryMode.Smarthost, AllowPrivateDestinations = true } };
        config.Delivery.Smarthost.ConnectTimeout = TimeSpan.FromSeconds(5);
        config.Delivery.Tls.TrustAnchorsPath = trusted ? _anchors : null;
        var tenants = new Dictionary<string, TenantConfig> { [Tenant] = new() { Egress = new EgressConfig { Smarthost = smarthost } } };
        var egress = EgressDirectoryTests.NewDirectory(config.ServerName, config.Delivery.Tls, tenants);
        return new SmarthostTransport(config, egress, _time, NullLogger.Instance, withVault ? _vault : null);
    }

    async Task<SpooledMessage> SpoolAsync()
    {
        var envelope = NewEnvelope(_spool, TimeProvider.System, ["rcpt@example.net"], "sender@tenant-a.example", Tenant);
        await _spool.CommitAsync(envelope, Segmented(SampleMessage(), 1000), CancellationToken.None);
        return (await _spool.LoadAsync(envelope.Id, CancellationToken.None))!;
    }

    async Task<(SpooledMessage Message, RecipientResult Result)> DeliverAsync(SmarthostTransport transport)
    {
        var message = await SpoolAsync();
        var result = Assert.Single(await transport.DeliverAsync(message, message.Envelope.Recipients, CancellationToken.None));
        return (message, result);
    }

    static string B64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    /// <summary>Every buffer the vault handed out was zeroed after AUTH, and none is still open.</summary>
    void AssertSecretsZeroed()
    {
        Assert.NotEmpty(_vault.Handed);
        Assert.All(_vault.Handed, buffer => Assert.All(buffer, b => Assert.Equal(0, b)));
    }

    [Fact]
    public async Task PLAIN_sends_the_RFC_4616_response_over_verified_STARTTLS_and_zeroes_the_secret()
    {
        _vault.Set(Tenant, "relay", User, "s3cret-P\u00e4ssword");
        await using var transport = NewTransport();

        var (message, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        var exchange = Assert.Single(_server.AuthExchanges);
        Assert.Equal("PLAIN", exchange.Mechanism);

        // [authzid] NUL authcid NUL passwd, UTF-8, as the initial response (RFC 4954 section 4).
        var expected = "\0relay@tenant-a.example\0s3cret-P\u00e4ssword";
        Assert.Equal(["AUTH PLAIN " + B64(expected)], exchange.WireLines);
        Assert.Equal(Encoding.UTF8.GetBytes(expected), Assert.Single(exchange.Responses));
        Assert.Equal(1, _server.TlsSessions);
        Assert.Single(_server.Messages);
        var open = Assert.Single(_vault.Opens);
        Assert.Equal(("smtp-auth", message.Envelope.Id, 1), (open.Purpose, open.QueueId, open.Version.Version));
        AssertSecretsZeroed();
    }

    [Fact]
    public async Task LOGIN_answers_the_user_name_then_the_password_prompt_when_PLAIN_is_not_offered()
    {
        _server.AuthMechanisms = ["LOGIN"];
        _vault.Set(Tenant, "relay", User, "hunter2");
        await using var transport = NewTransport();

        var (_, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        var exchange = Assert.Single(_server.AuthExchanges);
        Assert.Equal(["AUTH LOGIN", B64(User), B64("hunter2")], exchange.WireLines);
        AssertSecretsZeroed();
    }

    [Fact]
    public async Task Configured_mechanism_wins_over_the_default_choice()
    {
        _vault.Set(Tenant, "relay", User, "hunter2");
        await using var transport = NewTransport(s => s.AuthMechanism = "login");

        var (_, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        Assert.Equal("LOGIN", Assert.Single(_server.AuthExchanges).Mechanism);
    }

    [Fact]
    public async Task XOAUTH2_is_chosen_for_an_OAuth2_credential_and_sends_Googles_format()
    {
        _vault.Set(Tenant, "relay", User, "ya29.a0-token", UpstreamCredentialKind.OAuth2);
        await using var transport = NewTransport();

        var (_, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        var exchange = Assert.Single(_server.AuthExchanges);
        var expected = "user=relay@tenant-a.example\u0001auth=Bearer ya29.a0-token\u0001\u0001";
        Assert.Equal(["AUTH XOAUTH2 " + B64(expected)], exchange.WireLines);
        Assert.Equal(Encoding.ASCII.GetBytes(expected), Assert.Single(exchange.Responses));
        AssertSecretsZeroed();
    }

    [Fact]
    public async Task Refused_XOAUTH2_answers_the_JSON_challenge_with_an_empty_line_and_defers()
    {
        _server.AuthReply = (_, _) => "535 5.7.8 Username and Password not accepted";
        _vault.Set(Tenant, "relay", User, "expired-token", UpstreamCredentialKind.OAuth2);
        await using var transport = NewTransport();

        var (_, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        var exchange = Assert.Single(_server.AuthExchanges);
        Assert.Equal("", exchange.WireLines[^1]);
        Assert.StartsWith("454 4.7.0 ", result.Reply);
        AssertSecretsZeroed();
    }

    [Fact]
    public async Task Implicit_TLS_authenticates_from_the_first_byte()
    {
        _server.StartTlsCertificate = null;
        _server.ImplicitTlsCertificate = _certificate;
        _vault.Set(Tenant, "relay", User, "hunter2");
        await using var transport = NewTransport(s => s.ImplicitTls = true);

        var (_, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        Assert.NotNull(result.Tls);
        Assert.DoesNotContain(_server.Commands, c => c == "STARTTLS");
        Assert.Single(_server.AuthExchanges);
    }

    [Theory]
    [InlineData(true, null)]
    [InlineData(false, TlsPolicy.Required)] // Required is raised to Verify when a credential is sent
    [InlineData(false, null)]
    public async Task The_certificate_is_always_verified_before_a_credential_is_sent(bool implicitTls, TlsPolicy? tls)
    {
        if (implicitTls)
        {
            _server.StartTlsCertificate = null;
            _server.ImplicitTlsCertificate = _certificate;
        }

        _vault.Set(Tenant, "relay", User, "hunter2");
        await using var transport = NewTransport(s => (s.ImplicitTls, s.Tls) = (implicitTls, tls), trusted: false);

        var (_, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        Assert.StartsWith("451 4.7.5 ", result.Reply);
        Assert.Empty(_server.AuthExchanges);
        Assert.Empty(_vault.Opens);
    }

    [Theory]
    [InlineData("535 5.7.8 Authentication credentials invalid", "454 4.7.0 ")]
    [InlineData("534 5.7.9 Authentication mechanism is too weak", "454 4.7.0 ")]
    [InlineData("432 4.7.12 A password transition is needed", "432 4.7.12 ")] // a remote 4yz keeps its own code
    public async Task A_refused_credential_defers_every_recipient_reports_the_refusal_and_never_names_the_secret(string remote, string expected)
    {
        _server.AuthReply = (_, _) => remote;
        _vault.Set(Tenant, "relay", User, "wrong-password");
        await using var transport = NewTransport();

        var (message, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        Assert.StartsWith(expected + $"127.0.0.1[127.0.0.1]:{_server.Port} refused upstream credential relay#v1 (", result.Reply, StringComparison.Ordinal);
        Assert.DoesNotContain("wrong-password", result.Reply, StringComparison.Ordinal);
        var refusal = Assert.Single(_vault.Refusals);
        Assert.Equal((1, message.Envelope.Id), (refusal.Version.Version, refusal.QueueId));
        Assert.Contains(remote[4..], refusal.Reply, StringComparison.Ordinal);
        Assert.Empty(_server.Messages);
        Assert.DoesNotContain(_server.Commands, c => c.StartsWith("MAIL", StringComparison.Ordinal));
        Assert.Equal(0, transport.Pool.OpenCount("127.0.0.1", _server.Port)); // the unauthenticated session is not pooled
        AssertSecretsZeroed();
    }

    [Fact]
    public async Task After_rotation_new_connections_use_the_new_version_and_the_old_idle_one_is_not_reused()
    {
        _vault.Set(Tenant, "relay", User, "password-one");
        await using var transport = NewTransport();
        Assert.Equal(DeliveryOutcome.Delivered, (await DeliverAsync(transport)).Result.Outcome);
        Assert.Equal(1, transport.Pool.OpenCount("127.0.0.1", _server.Port)); // v1 session idle in the pool

        _vault.Rotate(Tenant, "relay", "password-two", TimeSpan.FromMinutes(10));
        Assert.Equal(DeliveryOutcome.Delivered, (await DeliverAsync(transport)).Result.Outcome);

        Assert.Equal(2, _server.Connections);
        var exchanges = _server.AuthExchanges.ToArray();
        Assert.Equal(2, exchanges.Length);
        Assert.EndsWith("\0password-two", Encoding.UTF8.GetString(exchanges[1].Responses[0]), StringComparison.Ordinal);
        Assert.NotEqual(exchanges[0].Connection, exchanges[1].Connection);
        Assert.Equal(2, _server.Messages.Last().Connection);

        // The v1 session drained once v2 worked; the v2 session is reused without another AUTH.
        Assert.Equal(1, transport.Pool.OpenCount("127.0.0.1", _server.Port));
        Assert.Equal(DeliveryOutcome.Delivered, (await DeliverAsync(transport)).Result.Outcome);
        Assert.Equal(2, _server.Connections);
        Assert.Equal(2, _server.AuthExchanges.Count);
        Assert.Equal(2, _server.Messages.Last().Connection);
    }

    [Fact]
    public void The_pool_key_differs_by_credential_version()
    {
        var v1 = new SmtpPoolKey(Tenant, "gw.test", null, "smtp.example", 587, WireTls.Verify, new PoolCredential("relay", 1));
        var v2 = v1 with { Credential = new PoolCredential("relay", 2) };

        Assert.NotEqual(v1, v2);
        Assert.NotEqual(v1, v1 with { Credential = null });
        Assert.Equal(v1, new SmtpPoolKey(Tenant, "gw.test", null, "smtp.example", 587, WireTls.Verify, new PoolCredential("relay", 1)));
        Assert.Contains("relay#v2", v2.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_refused_new_version_falls_back_to_the_previous_one_in_its_grace_window_on_a_fresh_connection()
    {
        _server.AuthReply = (_, responses) => Encoding.UTF8.GetString(responses[0]).EndsWith("\0old-password", StringComparison.Ordinal)
            ? "235 2.7.0 Authentication successful"
            : "535 5.7.8 Authentication credentials invalid";
        _vault.Set(Tenant, "relay", User, "old-password");
        _vault.Rotate(Tenant, "relay", "typo-password", TimeSpan.FromMinutes(10));
        await using var transport = NewTransport();

        var (_, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Delivered, result.Outcome);
        var exchanges = _server.AuthExchanges.ToArray();
        Assert.Equal(2, exchanges.Length);
        Assert.StartsWith("535", exchanges[0].Reply, StringComparison.Ordinal);
        Assert.StartsWith("235", exchanges[1].Reply, StringComparison.Ordinal);
        Assert.NotEqual(exchanges[0].Connection, exchanges[1].Connection);
        Assert.Equal(2, Assert.Single(_vault.Refusals).Version.Version);
        AssertSecretsZeroed();

        // The refused version is tried after the fallback for a while: the next message reuses the v1 session, no AUTH.
        Assert.Equal(DeliveryOutcome.Delivered, (await DeliverAsync(transport)).Result.Outcome);
        Assert.Equal(2, _server.AuthExchanges.Count);
        Assert.Single(_vault.Refusals);

        // After the grace window only v2 is left, and it is refused: deferred.
        _time.Advance(TimeSpan.FromMinutes(11));
        var (_, late) = await DeliverAsync(transport);
        Assert.Equal(DeliveryOutcome.Deferred, late.Outcome);
        Assert.Contains("relay#v2", late.Reply, StringComparison.Ordinal);
    }

    [Fact]
    public async Task When_every_usable_version_is_refused_the_mail_is_deferred_after_two_attempts()
    {
        _server.AuthReply = (_, _) => "535 5.7.8 Authentication credentials invalid";
        _vault.Set(Tenant, "relay", User, "one");
        _vault.Rotate(Tenant, "relay", "two", TimeSpan.FromMinutes(10));
        _vault.Rotate(Tenant, "relay", "three", TimeSpan.FromMinutes(10));
        await using var transport = NewTransport();

        var (_, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        Assert.StartsWith("454 4.7.0 ", result.Reply);
        Assert.Equal([3, 2], _vault.Refusals.Select(r => r.Version.Version));
        Assert.Equal(2, _server.AuthExchanges.Count);
        Assert.Empty(_server.Messages);
    }

    [Theory]
    [InlineData(true, "454 4.7.0 Upstream credential relay has no usable version in the vault")]
    [InlineData(false, "454 4.7.0 Upstream credential relay unavailable (no credential vault is configured)")]
    public async Task No_stored_version_or_no_vault_defers_without_connecting(bool withVault, string expected)
    {
        await using var transport = NewTransport(withVault: withVault);

        var (_, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        Assert.Equal(expected, result.Reply);
        Assert.Equal(0, _server.Connections);
    }

    [Theory]
    [InlineData(false, "454 4.7.0 Upstream credential relay#v1 unavailable (record does not decrypt)")]
    [InlineData(true, "454 4.7.0 Upstream credential relay#v1 unavailable (CryptographicException)")] // its message is not recorded
    public async Task A_credential_the_vault_cannot_open_defers_and_sends_no_AUTH(bool unexpected, string expected)
    {
        _vault.Set(Tenant, "relay", User, "hunter2");
        _vault.OpenFails = unexpected
            ? new CryptographicException("record does not decrypt")
            : new UpstreamCredentialException("record does not decrypt", transient: false);
        await using var transport = NewTransport();

        var (_, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        Assert.Equal(expected, result.Reply);
        Assert.Empty(_server.AuthExchanges);
        Assert.Empty(_server.Messages);
        Assert.Equal(0, transport.Pool.OpenCount("127.0.0.1", _server.Port));
    }

    [Theory]
    [InlineData(new string[0], UpstreamCredentialKind.Password, "PLAIN or LOGIN")]
    [InlineData(new[] { "PLAIN", "LOGIN" }, UpstreamCredentialKind.OAuth2, "XOAUTH2")]
    public async Task A_server_without_a_usable_mechanism_defers_before_the_secret_is_opened(string[] offered, UpstreamCredentialKind kind, string wanted)
    {
        _server.AuthMechanisms = offered;
        _vault.Set(Tenant, "relay", User, "hunter2", kind);
        await using var transport = NewTransport();

        var (_, result) = await DeliverAsync(transport);

        Assert.Equal(DeliveryOutcome.Deferred, result.Outcome);
        Assert.Equal($"454 4.7.0 127.0.0.1[127.0.0.1]:{_server.Port} does not offer AUTH {wanted}", result.Reply);
        Assert.Empty(_vault.Opens);
    }

    [Fact]
    public void SASL_mechanisms_build_exact_responses_and_zero_every_buffer_they_made()
    {
        var version = new UpstreamCredentialVersion(Tenant, "relay", 1, UpstreamCredentialKind.Password, User, DateTimeOffset.UnixEpoch, null);
        using var secret = new UpstreamSecret(version, Encoding.UTF8.GetBytes("pw"));

        using var login = new SecretSaslLogin(User, secret);
        Assert.Equal(B64(User), login.Challenge(B64("Username:")));
        Assert.Equal(B64("pw"), login.Challenge(B64("Password:")));
        Assert.Equal("", login.Challenge(""));
        using var plain = new SecretSaslPlain(User, secret);
        Assert.Equal(B64($"\0{User}\0pw"), plain.Challenge(null));
        using var xoauth2 = new SecretSaslXOAuth2(User, secret);
        Assert.Equal(B64($"user={User}\u0001auth=Bearer pw\u0001\u0001"), xoauth2.Challenge(null));

        foreach (var mechanism in new SecretSaslMechanism[] { login, plain, xoauth2 })
        {
            Assert.NotEmpty(mechanism.Responses);
            mechanism.Dispose();
            Assert.All(mechanism.Responses, buffer => Assert.All(buffer, b => Assert.Equal(0, b)));
        }
    }

    [Theory]
    [InlineData("535: 5.7.8 Authentication credentials invalid", 535, "5.7.8 Authentication credentials invalid")]
    [InlineData("454: 4.7.0 Temporary\nfailure", 454, "4.7.0 Temporary failure")]
    [InlineData("Mechanism too weak", 0, "Mechanism too weak")]
    public void MailKit_refusal_messages_are_parsed_into_code_and_text(string message, int code, string text) =>
        Assert.Equal((code, text), UpstreamAuthenticator.ParseRefusal(message));

    /// <summary>A self-signed certificate for 127.0.0.1 (IP SAN), the smarthost address the tests connect to.</summary>
    static X509Certificate2 LoopbackCertificate()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=127.0.0.1", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var ephemeral = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(1));
        return X509CertificateLoader.LoadPkcs12(ephemeral.Export(X509ContentType.Pfx), null);
    }
}
