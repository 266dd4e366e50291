using System.Text;
using SmtpGateway.Cli;
using SmtpGateway.Identity.Tokens;

namespace SmtpGateway.Tests.Mcp;

public sealed class McpBridgeTests
{
    static string Base64Url(string s) => Convert.ToBase64String(Encoding.UTF8.GetBytes(s)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    [Theory]
    [InlineData("""{"v":1}""")]
    [InlineData("""{"v":1,"t":null}""")]
    [InlineData("""{"v":1,"t":"default"}""")]
    [InlineData("""{"v":1,"t":"../etc"}""")]
    [InlineData("""null""")]
    [InlineData("""[1]""")]
    public void A_token_whose_claims_name_no_valid_tenant_claims_none(string claims) =>
        Assert.Null(TokenService.ClaimedTenant($"sgw1.{Base64Url(claims)}.AAAA"));

    [Fact]
    public void A_well_formed_claim_names_its_tenant_unverified() =>
        Assert.Equal("tenant-a", TokenService.ClaimedTenant($"sgw1.{Base64Url("""{"v":1,"t":"tenant-a"}""")}.AAAA"));

    [Theory]
    [InlineData("http://127.0.0.1:8025/mcp", true)]
    [InlineData("http://[::1]:8025/mcp", true)]
    [InlineData("http://localhost:8025/mcp", true)]
    [InlineData("https://gw.example:8025/mcp", true)]
    [InlineData("http://gw.example:8025/mcp", false)]
    [InlineData("http://10.0.0.5:8025/mcp", false)]
    [InlineData("ftp://127.0.0.1/mcp", false)]
    [InlineData("/mcp", false)]
    public void The_bridge_sends_the_token_over_plain_http_only_on_loopback(string url, bool accepted)
    {
        var endpoint = McpCommand.Endpoint(url, null, out var error);
        Assert.Equal(accepted, endpoint is not null);
        Assert.Equal(accepted, error is null);
    }
}
