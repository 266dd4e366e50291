using SmtpGateway.Bounces;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Policy;
using SmtpGateway.Smtp;

namespace SmtpGateway.Tests.Policy;

public sealed class SenderPolicyTests
{
    static readonly TenantSnapshot Tenants = Build();
    static readonly TenantSession A = new("tenant-a", TenantSessionKind.Token, null, []);
    static readonly TenantSession B = new("tenant-b", TenantSessionKind.Network, null, []);
    static readonly TenantSession AScoped = new("tenant-a", TenantSessionKind.Token, null, ["alerts@tenant-a.example", "news.tenant-a.example"]);

    static TenantSnapshot Build()
    {
        var errors = new List<string>();
        var snapshot = TenantSnapshot.Build(new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Domains = ["tenant-a.example", "news.tenant-a.example"], BounceDomain = "bounces.tenant-a.example" },
            ["tenant-b"] = new() { Domains = ["tenant-b.example"], BounceDomain = "bounces.tenant-b.example" },
        }, errors);
        Assert.Empty(errors);
        return snapshot;
    }

    static SmtpPath Path(string address)
    {
        Assert.Equal(PathError.None, SmtpGrammar.TryParsePath($"TO:<{address}>", "TO:", false, out var path));
        return path!;
    }

    [Theory]
    [InlineData("alice@tenant-a.example", true, false)]
    [InlineData("alice@TENANT-A.EXAMPLE", true, false)]
    [InlineData("ceo@tenant-b.example", false, true)]
    [InlineData("x@unrelated.example", false, false)]
    [InlineData("x@tenаnt-a.example", false, false)] // Cyrillic lookalike
    [InlineData("", false, false)] // null sender
    public void Mail_from_must_be_in_the_sessions_tenant(string from, bool accepted, bool crossTenant)
    {
        var decision = SenderPolicy.MailFrom(A, from, Tenants);
        Assert.Equal(accepted, decision.Accepted);
        Assert.Equal(crossTenant, decision.CrossTenant);
        if (!accepted)
        {
            Assert.Equal(550, decision.Reply!.Code);
            Assert.Equal("5.7.1", decision.Reply.Enhanced);
        }
    }

    [Fact]
    public void Token_sender_scope_narrows_the_tenant_domains()
    {
        Assert.True(SenderPolicy.MailFrom(AScoped, "alerts@tenant-a.example", Tenants).Accepted);
        Assert.True(SenderPolicy.MailFrom(AScoped, "ALERTS@tenant-a.example", Tenants).Accepted);
        Assert.True(SenderPolicy.MailFrom(AScoped, "anyone@news.tenant-a.example", Tenants).Accepted);
        Assert.Equal("outside the token's sender scope", SenderPolicy.MailFrom(AScoped, "bob@tenant-a.example", Tenants).Reason);
    }

    [Fact]
    public void Header_from_needs_every_address_owned()
    {
        Assert.True(SenderPolicy.HeaderFrom(A, ["a@tenant-a.example"], Tenants).Accepted);
        Assert.True(SenderPolicy.HeaderFrom(B, ["x@tenant-a.example"], Tenants).CrossTenant);
        Assert.False(SenderPolicy.HeaderFrom(A, ["a@tenant-a.example", "b@tenant-b.example"], Tenants).Accepted);
        Assert.Equal(SmtpReplies.HeaderFromMissing, SenderPolicy.HeaderFrom(A, [], Tenants).Reply);
    }

    [Theory]
    [InlineData("bob@tenant-a.example", true)]
    [InlineData("b+good@bounces.tenant-a.example", true)]
    [InlineData("Postmaster@bounces.tenant-a.example", true)]
    [InlineData("bob@Tenant-B.Example", true)]
    [InlineData("victim@elsewhere.example", false)]
    [InlineData("\"victim@elsewhere.example\"@tenant-a.example", false)]
    [InlineData("victim%elsewhere.example@tenant-a.example", false)]
    [InlineData("elsewhere.example!victim@tenant-a.example", false)]
    [InlineData("victim@[127.0.0.1]", false)]
    public void Unauthenticated_clients_reach_only_tenant_domains(string recipient, bool accepted)
    {
        var decision = SenderPolicy.Recipient(null, Path(recipient), Tenants, null, false, ValidTag, out _);
        Assert.Equal(accepted, decision.Accepted);
        if (!accepted)
        {
            Assert.Equal("554 5.7.1 Relay access denied", decision.Reply!.ToString());
        }
    }

    [Fact]
    public void One_inbound_transaction_serves_one_tenant()
    {
        Assert.True(SenderPolicy.Recipient(null, Path("x@tenant-a.example"), Tenants, null, false, ValidTag, out var first).Accepted);
        Assert.Equal("tenant-a", first);
        var second = SenderPolicy.Recipient(null, Path("y@tenant-b.example"), Tenants, first, false, ValidTag, out _);
        Assert.Equal(452, second.Reply!.Code);
    }

    [Fact]
    public void Tenant_sessions_may_send_anywhere()
    {
        Assert.True(SenderPolicy.Recipient(A, Path("anyone@elsewhere.example"), Tenants, null, false, ValidTag, out var t).Accepted);
        Assert.Equal("tenant-a", t);
    }

    /// <summary>Stands in for the MAC check: only tenant-a's "b+good" is a return path it made.</summary>
    static bool ValidTag(string tenant, string local) => tenant == "tenant-a" && local == "b+good";

    [Theory]
    [InlineData("b+forged@bounces.tenant-a.example")]
    [InlineData("someone@bounces.tenant-a.example")]
    [InlineData("b+good@bounces.tenant-b.example")]
    public void Bounce_domains_take_only_valid_return_paths(string recipient)
    {
        var decision = SenderPolicy.Recipient(null, Path(recipient), Tenants, null, false, ValidTag, out _);
        Assert.Equal("550 5.1.1 No such recipient", decision.Reply!.ToString());
    }

    [Fact]
    public void A_bounce_domain_that_is_also_a_sending_domain_reserves_only_the_return_path_shape()
    {
        var errors = new List<string>();
        var shared = TenantSnapshot.Build(new Dictionary<string, TenantConfig>
        {
            ["tenant-c"] = new() { Domains = ["tenant-c.example"], BounceDomain = "tenant-c.example" },
        }, errors);
        Assert.Empty(errors);
        static bool Valid(string tenant, string local) => local == "b+good";

        Assert.True(SenderPolicy.Recipient(null, Path("sales@tenant-c.example"), shared, null, false, Valid, out _).Accepted);
        Assert.True(SenderPolicy.Recipient(null, Path("b+good@tenant-c.example"), shared, null, false, Valid, out _).Accepted);
        Assert.Equal(SmtpReplies.UnknownReturnPath, SenderPolicy.Recipient(null, Path("B+forged@tenant-c.example"), shared, null, false, Valid, out _).Reply);
        Assert.True(BounceProcessor.IsReturnPathAddress(shared.Find("tenant-c")!, "b+good@tenant-c.example"));
        Assert.False(BounceProcessor.IsReturnPathAddress(shared.Find("tenant-c")!, "sales@tenant-c.example"));
    }

    [Fact]
    public void A_suppressed_recipient_is_refused_to_the_tenant_session_only()
    {
        var refused = SenderPolicy.Recipient(A, Path("gone@elsewhere.example"), Tenants, null, suppressed: true, ValidTag, out _);
        Assert.Equal(SmtpReplies.Suppressed, refused.Reply);
        Assert.StartsWith("550 5.7.1", refused.Reply!.ToString(), StringComparison.Ordinal);

        // Inbound mail is not the tenant sending: suppression is about what the tenant may send.
        Assert.True(SenderPolicy.Recipient(null, Path("x@tenant-a.example"), Tenants, null, suppressed: true, ValidTag, out _).Accepted);
    }
}
