using SmtpGateway.Configuration;
using SmtpGateway.Signing;
using SmtpGateway.Tests.Signing;

namespace SmtpGateway.Tests.Mcp;

public sealed class McpConfigTests
{
    static GatewayConfig Valid() => new()
    {
        Listeners = [new ListenerConfig { Name = "relay", Kind = ListenerKind.Relay, Address = "127.0.0.1", Port = 2526 }],
    };

    [Fact]
    public void The_defaults_are_valid_and_leave_room_for_the_attachment_cap_as_base64()
    {
        var config = Valid();
        Assert.DoesNotContain(GatewayConfigValidator.Collect(config), e => e.StartsWith("Gateway:Mcp", StringComparison.Ordinal));
        // A 30 MiB attachment (40 MiB of base64) fits the default body, so the tool itself answers it with its own error.
        Assert.True(config.Mcp.MaxRequestBodySize > (30L * 1024 * 1024 + 2) / 3 * 4);
        Assert.Contains("List-Unsubscribe", config.Mcp.EffectiveAllowedHeaders);
    }

    [Fact]
    public void Every_mcp_error_is_listed_and_gateway_built_headers_cannot_be_allowed()
    {
        var config = Valid();
        config.Mcp = new McpConfig
        {
            MaxAttachmentSize = config.Limits.MaxMessageSize + 1,
            MaxRequestBodySize = 1024,
            MaxConcurrentRequests = 0,
            AllowedHeaders = ["List-Id", "DKIM-Signature", "content-type", "Resent-From", "Bad Name:", ""],
        };

        var errors = GatewayConfigValidator.Collect(config).Where(e => e.StartsWith("Gateway:Mcp", StringComparison.Ordinal)).ToList();

        Assert.Contains(errors, e => e.StartsWith("Gateway:Mcp:MaxAttachmentSize", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Gateway:Mcp:MaxRequestBodySize", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("MaxConcurrentRequests", StringComparison.Ordinal));
        foreach (var forbidden in new[] { "DKIM-Signature", "content-type", "Resent-From" })
        {
            Assert.Contains(errors, e => e.Contains($"'{forbidden}' is set by the gateway itself", StringComparison.Ordinal));
        }

        Assert.Equal(2, errors.Count(e => e.Contains("is not a header field name", StringComparison.Ordinal)));
        Assert.DoesNotContain(errors, e => e.Contains("'List-Id'", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("From", true)]
    [InlineData("bcc", true)]
    [InlineData("Content-Disposition", true)]
    [InlineData("ARC-Seal", true)]
    [InlineData("Resent-To", true)]
    [InlineData("Received", true)]
    [InlineData("List-Unsubscribe", false)]
    [InlineData("X-Entity-Ref-ID", false)]
    public void Identity_trace_signature_and_mime_fields_are_forbidden(string name, bool forbidden) =>
        Assert.Equal(forbidden, McpConfig.IsForbiddenHeader(name));

    [Fact]
    public void A_published_dkim_record_matches_its_selector_by_key_type_and_key_whitespace_aside()
    {
        var keys = new SoftwareKeySigner();
        var rsa = keys.AddRsa("tenant-a.example", "r1");
        var ed = keys.AddEd25519("tenant-a.example", "e1");

        Assert.True(DkimDnsRecord.Matches(DkimDnsRecord.Value(rsa), rsa));
        Assert.True(DkimDnsRecord.Matches(DkimDnsRecord.Value(ed), ed));
        // Providers fold long values and omit k= (rsa is the default, RFC 6376 section 3.6.1).
        var folded = $"v=DKIM1; p={rsa.PublicKey[..100]} {rsa.PublicKey[100..]}";
        Assert.True(DkimDnsRecord.Matches(folded, rsa));
        // Another key, or the right key under the wrong type, is a mismatch; a revoked (empty p=) record too.
        Assert.False(DkimDnsRecord.Matches(DkimDnsRecord.Value(ed), rsa));
        Assert.False(DkimDnsRecord.Matches($"v=DKIM1; k=rsa; p={ed.PublicKey}", ed));
        Assert.False(DkimDnsRecord.Matches("v=DKIM1; k=rsa; p=", rsa));
        Assert.False(DkimDnsRecord.Matches("v=spf1 -all", rsa));
    }
}
