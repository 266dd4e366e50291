using System.Buffers;
using System.Text;
using SmtpGateway.Configuration;
using SmtpGateway.Envelope;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Identity;

/// <summary>Regressions for isolation findings from the security review.</summary>
public sealed class ReviewRegressionTests : IDisposable
{
    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-review");

    [Fact]
    public void A_header_block_beyond_the_parse_bound_yields_no_author_so_a_hidden_second_from_cannot_pass()
    {
        var sb = new StringBuilder("From: x@tenant-b.example\r\n");
        while (sb.Length < 1_100_000)
        {
            sb.Append("X-Pad: ").Append('a', 900).Append("\r\n");
        }

        sb.Append("From: ceo@tenant-a.example\r\n\r\nbody\r\n");
        Assert.Null(HeaderFrom.Addresses(new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(sb.ToString()))));
        Assert.Equal(["x@tenant-b.example"], HeaderFrom.Addresses(new ReadOnlySequence<byte>("From: x@tenant-b.example\r\n\r\nbody\r\n"u8.ToArray())));
    }

    [Fact]
    public void A_forged_token_naming_another_tenant_is_a_bad_token_attributed_to_no_one()
    {
        var errors = new List<string>();
        var tenants = TenantSnapshot.Build(new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Domains = ["tenant-a.example"] },
            ["tenant-b"] = new() { Domains = ["tenant-b.example"] },
        }, errors);
        var service = new TokenService(new TokenStore(_data.FullName, TimeProvider.System, new InMemoryTenantKeys()), () => tenants, new IdentityConfig(), TimeProvider.System);
        var real = service.Mint("tenant-b", null, [], null).Token;

        // Same claims (tenant-b, B's key id), MAC replaced: not B's token at all.
        var parts = real.Split('.');
        var forged = $"{parts[0]}.{parts[1]}.{Convert.ToBase64String(new byte[32]).TrimEnd('=').Replace('+', '-').Replace('/', '_')}";
        var check = service.Verify("tenant-a", forged);
        Assert.Equal(("bad signature", (TokenPayload?)null), (check.Reason, check.Payload));

        // The genuine token of B under A's name is the cross-tenant case, attributed to B.
        var cross = service.Verify("tenant-a", real);
        Assert.Equal(TokenService.TenantMismatch, cross.Reason);
        Assert.Equal("tenant-b", cross.Payload!.Tenant);
    }

    [Fact]
    public void Two_tenants_cannot_share_an_hsm_token_or_pin_file()
    {
        var errors = new List<string>();
        TenantSnapshot.Build(new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Domains = ["tenant-a.example"], Hsm = new TenantHsmConfig { PinFile = "/etc/pins/shared.pin" } },
            ["tenant-b"] = new() { Domains = ["tenant-b.example"], Hsm = new TenantHsmConfig { TokenLabel = "smtpgw-tenant-a", PinFile = "/etc/pins/shared.pin" } },
        }, errors);
        Assert.Contains(errors, e => e.StartsWith("Tenants:tenant-b:Hsm:TokenLabel:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Tenants:tenant-b:Hsm:PinFile:", StringComparison.Ordinal));
    }

    public void Dispose() => _data.Delete(true);
}

public sealed class SecretFormattingTests
{
    [Fact]
    public void Records_that_carry_secrets_do_not_print_them()
    {
        var request = new AuthRequest("s1", System.Net.IPAddress.Loopback, "submission", "PLAIN", "", "tenant-a", "sgw1.secret-token");
        Assert.DoesNotContain("secret-token", request.ToString(), StringComparison.Ordinal);
        var key = new TokenKey("k1", DateTimeOffset.UnixEpoch, null, "smtpgw-token-k1") { LegacySecret = SmtpGateway.Hsm.LegacySecretMarker.Present };
        Assert.DoesNotContain("Legacy", key.ToString(), StringComparison.Ordinal);
        var minted = new MintedToken("sgw1.secret-token", new TokenRecord("tok_1", "tenant-a", null, [], DateTimeOffset.UnixEpoch, DateTimeOffset.UnixEpoch, "k1"));
        Assert.DoesNotContain("secret-token", minted.ToString(), StringComparison.Ordinal);
        Assert.Contains("tok_1", minted.ToString(), StringComparison.Ordinal);
    }
}
