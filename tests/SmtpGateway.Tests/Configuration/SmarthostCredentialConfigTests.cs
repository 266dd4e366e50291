using Microsoft.Extensions.Configuration;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;

namespace SmtpGateway.Tests.Configuration;

/// <summary>"Tenants:&lt;id&gt;:Egress:Smarthost" with a vault credential: never AUTH over plaintext or unverified TLS by default.</summary>
public sealed class SmarthostCredentialConfigTests
{
    const string Path = "Tenants:t:Egress";

    static List<string> Check(TenantSmarthostConfig smarthost)
    {
        var errors = new List<string>();
        GatewayConfigValidator.CheckTenantEgress(Path, new EgressConfig { Smarthost = smarthost }, errors);
        return errors;
    }

    static TenantSmarthost Compile(Dictionary<string, string?> values)
    {
        var root = new ConfigurationBuilder().AddInMemoryCollection(values).Build();
        var tenants = root.GetSection("Tenants").Get<Dictionary<string, TenantConfig>>()!;
        var errors = new List<string>();
        var snapshot = TenantSnapshot.Build(tenants, errors);
        Assert.Empty(errors);
        return snapshot.Find("t")!.Egress.Smarthost!;
    }

    [Fact]
    public void A_credential_over_opportunistic_TLS_is_refused()
    {
        var error = Assert.Single(Check(new TenantSmarthostConfig { Host = "smtp.example", Port = 587, Credential = "relay", Tls = TlsPolicy.Opportunistic }));
        Assert.StartsWith($"{Path}:Smarthost:Tls: Opportunistic would send the credential without TLS", error);
    }

    [Fact]
    public void Every_error_is_reported_at_once()
    {
        var errors = Check(new TenantSmarthostConfig
        {
            Host = "smtp.example", Port = 587, Credential = "bad name!", Tls = TlsPolicy.Opportunistic, AuthMechanism = "CRAM-MD5",
        });

        Assert.Equal(3, errors.Count);
        Assert.Contains(errors, e => e.StartsWith($"{Path}:Smarthost:Credential: 'bad name!' is not a credential name", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith($"{Path}:Smarthost:Tls: Opportunistic", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith($"{Path}:Smarthost:AuthMechanism: 'CRAM-MD5' is not one of PLAIN, LOGIN, XOAUTH2", StringComparison.Ordinal));
    }

    [Fact]
    public void A_mechanism_without_a_credential_is_refused() =>
        Assert.Contains("needs Credential", Assert.Single(Check(new TenantSmarthostConfig { Host = "smtp.example", AuthMechanism = "PLAIN" })));

    [Theory]
    [InlineData(true, TlsPolicy.Opportunistic, "xoauth2")] // implicit TLS: the STARTTLS policy does not apply
    [InlineData(false, TlsPolicy.Required, "LOGIN")]
    [InlineData(false, TlsPolicy.Verify, null)]
    [InlineData(false, null, "Plain")]
    public void TLS_credential_combinations_that_are_accepted(bool implicitTls, TlsPolicy? tls, string? mechanism) =>
        Assert.Empty(Check(new TenantSmarthostConfig
        {
            Host = "smtp.example", Port = 465, Credential = "tenant-a_relay.v2", ImplicitTls = implicitTls, Tls = tls, AuthMechanism = mechanism,
        }));

    [Theory]
    [InlineData("a/b")]
    [InlineData("relay\u00e9")]
    [InlineData("has space")]
    [InlineData("x1234567890123456789012345678901234567890123456789012345678901234")] // 65 characters
    public void Credential_names_outside_the_vault_charset_are_refused(string name) =>
        Assert.Contains(Check(new TenantSmarthostConfig { Host = "smtp.example", Credential = name, Tls = TlsPolicy.Verify }),
            e => e.Contains(":Smarthost:Credential:", StringComparison.Ordinal));

    [Fact]
    public void Tls_defaults_to_Verify_when_a_credential_is_set_and_the_mechanism_is_parsed()
    {
        var smarthost = Compile(new()
        {
            ["Tenants:t:Domains:0"] = "t.example",
            ["Tenants:t:Egress:Smarthost:Host"] = "smtp.example",
            ["Tenants:t:Egress:Smarthost:Port"] = "465",
            ["Tenants:t:Egress:Smarthost:ImplicitTls"] = "true",
            ["Tenants:t:Egress:Smarthost:Credential"] = "relay",
            ["Tenants:t:Egress:Smarthost:AuthMechanism"] = "xoauth2",
        });

        Assert.Equal(new TenantSmarthost("smtp.example", 465, TlsPolicy.Verify, true, "relay", SmarthostAuthMechanism.XOAuth2), smarthost);
    }

    [Fact]
    public void Without_a_credential_the_TLS_policy_stays_unset()
    {
        var smarthost = Compile(new()
        {
            ["Tenants:t:Domains:0"] = "t.example",
            ["Tenants:t:Egress:Smarthost:Host"] = "smtp.example",
        });

        Assert.Equal(new TenantSmarthost("smtp.example", 25, null), smarthost);
    }
}
