using System.Text.Json;
using System.Text.Json.Nodes;
using DnsClient;
using Microsoft.Extensions.Logging;
using ModelContextProtocol.Protocol;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Signing;

namespace SmtpGateway.Mcp.Tools;

/// <summary>
/// list_sending_domains: the caller's domains, their DKIM selectors, and whether each selector's TXT record is published
/// with the key the gateway signs with, asked of the gateway's own resolvers (Gateway:Dns:Servers) now, uncached: an agent
/// that just published a record wants to know whether it is seen yet.
/// </summary>
internal sealed class SendingDomainsTool(DkimAdministration dkim, ILookupClient dns, IAuditLog audit, ILogger logger) : GatewayTool(Definition, audit, logger)
{
    public const string Name = "list_sending_domains";

    static readonly Tool Definition = new()
    {
        Name = Name,
        Title = "Your sending domains",
        Description = "The domains you may send from, each with its DKIM selectors and whether the selector's DNS TXT record is published as expected (published, missing, mismatch, dns_error).",
        InputSchema = Schema("""{ "type": "object", "properties": {}, "additionalProperties": false }"""),
        Annotations = new ToolAnnotations { ReadOnlyHint = true, DestructiveHint = false, IdempotentHint = true, OpenWorldHint = true },
    };

    /// <summary>A DNS client from Gateway:Dns (servers, timeout, retries), without the cache: the answer must be today's.</summary>
    public static ILookupClient Resolver(GatewayConfig gateway)
    {
        var servers = gateway.Dns.Endpoints();
        var options = servers.Length > 0 ? new LookupClientOptions(servers) : new LookupClientOptions();
        options.UseCache = false;
        options.Timeout = gateway.Dns.Timeout;
        options.Retries = gateway.Dns.Retries;
        options.ThrowDnsErrors = false;
        options.ContinueOnDnsError = false;
        return new LookupClient(options);
    }

    protected override async ValueTask<(ToolResult, CallToolResult)> CallAsync(McpCaller caller, IDictionary<string, JsonElement>? arguments, CancellationToken cancellationToken)
    {
        if (ArgumentsOf(arguments).Keys.FirstOrDefault() is { } unknown)
        {
            return (ToolResult.Invalid, Error($"list_sending_domains: takes no arguments (got '{McpText.Printable(unknown)}')."));
        }

        var tenant = caller.TenantId;
        var domains = caller.Context.Tenants.Find(tenant)?.Domains ?? new HashSet<string>();
        var selectors = dkim.Published(tenant);
        var checks = await Task.WhenAll(selectors.Select(s => CheckAsync(s, cancellationToken))).ConfigureAwait(false);
        var result = new JsonArray();
        foreach (var domain in domains.Order(StringComparer.Ordinal))
        {
            var ofDomain = selectors.Select((s, i) => (Selector: s, Dns: checks[i])).Where(p => p.Selector.Domain == domain).ToList();
            result.Add(new JsonObject
            {
                ["domain"] = domain,
                // Signing needs an active selector whose record resolvers can see.
                ["ready"] = ofDomain.Any(p => p.Selector.State == SelectorState.Active && p.Dns == "published"),
                ["selectors"] = new JsonArray([.. ofDomain.Select(p => (JsonNode)new JsonObject
                {
                    ["selector"] = p.Selector.Selector,
                    ["algorithm"] = p.Selector.Algorithm == DkimAlgorithm.Ed25519 ? "ed25519-sha256" : "rsa-sha256",
                    ["state"] = p.Selector.State.ToString().ToLowerInvariant(),
                    ["record_name"] = DkimDnsRecord.Name(p.Selector),
                    ["expected_value"] = DkimDnsRecord.Value(p.Selector),
                    ["dns"] = p.Dns,
                })]),
            });
        }

        return (ToolResult.Ok, Success(new JsonObject { ["domains"] = result }));
    }

    async Task<string> CheckAsync(DkimSelector selector, CancellationToken cancellationToken)
    {
        IDnsQueryResponse response;
        try
        {
            response = await dns.QueryAsync(DkimDnsRecord.Name(selector), QueryType.TXT, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (DnsResponseException)
        {
            return "dns_error";
        }

        if (response.HasError)
        {
            return response.Header.ResponseCode == DnsHeaderResponseCode.NotExistentDomain ? "missing" : "dns_error";
        }

        var values = response.Answers.TxtRecords().Select(r => string.Concat(r.Text)).ToList();
        return values.Count == 0 ? "missing" : values.Any(v => DkimDnsRecord.Matches(v, selector)) ? "published" : "mismatch";
    }
}
