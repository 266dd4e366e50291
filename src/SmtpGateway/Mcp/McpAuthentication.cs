using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Diagnostics;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Submission;

namespace SmtpGateway.Mcp;

/// <summary>
/// The door of /mcp: a tenant session token as the bearer (RFC 6750), verified by the submission pipeline's Identity stage
/// exactly as SMTP AUTH verifies it (MAC in the tenant's HSM token, expiry, revocation, audience; failures throttled per
/// client address and audited, channel mcp). The verified conversation becomes the request's user, so every tool acts for
/// the token's tenant and nobody else; its tenant session slot (Limits:MaxSessions) is held for the request and given
/// back after. Admin keys are no credential here: an operator sends no mail.
/// </summary>
public sealed partial class McpAuthentication(RequestDelegate next, SubmissionPipeline pipeline, IOptions<GatewayConfig> options, TimeProvider time,
    ILoggerFactory loggers)
{
    public const string Path = "/mcp";

    const string Challenge = "Bearer realm=\"smtpgw\"";

    readonly McpConfig _config = options.Value.Mcp;
    readonly ILogger _logger = loggers.CreateLogger("SmtpGateway.Mcp");
    readonly Lock _gate = new();
    readonly Dictionary<string, int> _perTenant = new(StringComparer.Ordinal);
    int _inFlight;

    public async Task InvokeAsync(HttpContext http)
    {
        // Routing ignores case, so the guard must too (/MCP is the same endpoint).
        if (!http.Request.Path.StartsWithSegments(Path, StringComparison.OrdinalIgnoreCase))
        {
            await next(http).ConfigureAwait(false);
            return;
        }

        if (Bearer(http.Request.Headers.Authorization.ToString()) is not { } token)
        {
            // RFC 6750 section 3.1: no credentials at all get the bare challenge, no error code.
            http.Response.Headers.WWWAuthenticate = Challenge;
            await RefuseAsync(http, StatusCodes.Status401Unauthorized, "unauthorized", "A tenant session token is required: Authorization: Bearer <token> (smtpgw token mint).").ConfigureAwait(false);
            return;
        }

        // The unix socket has no peer address; it is local, like loopback.
        var client = http.Connection.RemoteIpAddress ?? IPAddress.Loopback;
        var context = pipeline.Open($"mcp-{RandomNumberGenerator.GetHexString(12, lowercase: true)}", SubmissionChannel.Mcp, client, "mcp", identifyByNetwork: false);
        try
        {
            // The token names its tenant; that tenant's key then verifies it, just as a SASL user name would choose the key.
            // A valid token passes even from an address the throttle holds (as an admin key does): every local bridge
            // reaches the gateway from 127.0.0.1, and one agent retrying an expired token must not lock out the others.
            var verdict = await pipeline.AuthenticateAsync(context, "BEARER", "", TokenService.ClaimedTenant(token) ?? "", token, http.RequestAborted).ConfigureAwait(false);
            if (!verdict.Succeeded)
            {
                await RefuseAuthAsync(http, verdict).ConfigureAwait(false);
                return;
            }

            await ServeAsync(http, new McpCaller(context)).ConfigureAwait(false);
        }
        finally
        {
            SubmissionPipeline.Close(context);
        }
    }

    /// <summary>An authenticated request: its share of the request slots, then its body under the MCP limits, then the SDK.</summary>
    async Task ServeAsync(HttpContext http, McpCaller caller)
    {
        // Bodies are read only now, after the token verified, under the MCP limit instead of the admin API's 1 MiB.
        if (http.Request.ContentLength > _config.MaxRequestBodySize)
        {
            await RefuseAsync(http, StatusCodes.Status413PayloadTooLarge, "too_large",
                $"The request body is larger than {_config.MaxRequestBodySize} bytes (Gateway:Mcp:MaxRequestBodySize); attachments are limited to {_config.MaxAttachmentSize} bytes.").ConfigureAwait(false);
            return;
        }

        var slot = TakeSlot(caller.TenantId);
        if (slot is not null)
        {
            http.Response.Headers.RetryAfter = "1";
            await (slot == "busy"
                ? RefuseAsync(http, StatusCodes.Status503ServiceUnavailable, "busy", "The MCP endpoint is at its request limit (Gateway:Mcp:MaxConcurrentRequests); try again shortly.")
                : RefuseAsync(http, StatusCodes.Status429TooManyRequests, "tenant_busy", "This tenant has as many MCP requests in flight as it may (Gateway:Mcp:MaxConcurrentRequestsPerTenant); try again shortly.")).ConfigureAwait(false);
            return;
        }

        try
        {
            if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } size)
            {
                size.MaxRequestBodySize = _config.MaxRequestBodySize;
            }

            if (http.Features.Get<IHttpMinRequestBodyDataRateFeature>() is { } rate)
            {
                rate.MinDataRate = new MinDataRate(_config.MinRequestBodyDataRate, TimeSpan.FromSeconds(10));
            }

            http.Request.Body = new McpBodyGuard(http.Request.Body);
            http.User = new McpCallerPrincipal(caller);
            try
            {
                await next(http).ConfigureAwait(false);
            }
            catch (McpBodyRejectedException ex) when (!http.Response.HasStarted)
            {
                await RefuseAsync(http, StatusCodes.Status400BadRequest, "too_complex", ex.Message).ConfigureAwait(false);
            }
        }
        finally
        {
            GiveBackSlot(caller.TenantId);
        }
    }

    /// <summary>Null when the request may run (its slots taken); else which limit said no.</summary>
    string? TakeSlot(string tenant)
    {
        lock (_gate)
        {
            if (_inFlight >= _config.MaxConcurrentRequests)
            {
                return "busy";
            }

            var mine = _perTenant.GetValueOrDefault(tenant);
            if (mine >= _config.MaxConcurrentRequestsPerTenant)
            {
                return "tenant_busy";
            }

            _perTenant[tenant] = mine + 1;
            _inFlight++;
            return null;
        }
    }

    void GiveBackSlot(string tenant)
    {
        lock (_gate)
        {
            _inFlight--;
            // Tenant ids come from the configuration, so the table is bounded by it; an idle tenant's entry goes.
            if (--_perTenant[tenant] == 0)
            {
                _perTenant.Remove(tenant);
            }
        }
    }

    async Task RefuseAuthAsync(HttpContext http, AuthVerdict verdict)
    {
        if (verdict.Refusal is not null)
        {
            // Good token, tenant at Limits:MaxSessions: SMTP answers 454 at AUTH; here it is "slow down".
            http.Response.Headers.RetryAfter = "5";
            await RefuseAsync(http, StatusCodes.Status429TooManyRequests, "sessions", "This tenant has as many sessions open as its limit allows (Limits:MaxSessions); try again shortly.").ConfigureAwait(false);
            return;
        }

        if (verdict.Temporary)
        {
            // The token could not be checked (its tenant's HSM token or the revocation list is unavailable): not the client's fault.
            http.Response.Headers.RetryAfter = "30";
            await RefuseAsync(http, StatusCodes.Status503ServiceUnavailable, "unavailable", "The session token cannot be checked now; try again later.").ConfigureAwait(false);
            return;
        }

        if (verdict.Blocked)
        {
            // Past the throttle's limit: answered at once, without the delay (it would only hold a connection open).
            http.Response.Headers.RetryAfter = "60";
            await RefuseAsync(http, StatusCodes.Status429TooManyRequests, "throttled", "Too many failed authentications from this address; try again later.").ConfigureAwait(false);
            return;
        }

        if (verdict.Delay > TimeSpan.Zero)
        {
            // The same growing delay a failing SMTP AUTH gets: guessing costs time from the same address either way.
            await Task.Delay(verdict.Delay, time, http.RequestAborted).ConfigureAwait(false);
        }

        // One answer for every bad token (malformed, expired, revoked, another tenant's, forged): the reason is in the audit log.
        http.Response.Headers.WWWAuthenticate = Challenge + ", error=\"invalid_token\"";
        await RefuseAsync(http, StatusCodes.Status401Unauthorized, "unauthorized", "The session token is not valid (expired, revoked or unknown).").ConfigureAwait(false);
    }

    /// <summary>The value of "Authorization: Bearer &lt;token&gt;" (scheme case-insensitive, RFC 7235 section 2.1); null otherwise.</summary>
    internal static string? Bearer(string header)
    {
        const string scheme = "Bearer ";
        if (!header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        var token = header[scheme.Length..].Trim();
        return token.Length is 0 or > TokenService.MaxTokenLength ? null : token;
    }

    /// <summary>
    /// A JSON-RPC error body with the HTTP status: the SDK's client puts the body into the exception it raises, so an agent
    /// reads why (RFC 6750 for the 401s, RFC 6585 for 429).
    /// </summary>
    async Task RefuseAsync(HttpContext http, int status, string reason, string message)
    {
        McpMetrics.RequestRefused(reason);
        Refused(_logger, http.Connection.RemoteIpAddress?.ToString() ?? "local", status, reason);
        http.Response.StatusCode = status;
        http.Response.ContentType = "application/json";
        await using var writer = new Utf8JsonWriter(http.Response.Body);
        writer.WriteStartObject();
        writer.WriteString("jsonrpc", "2.0");
        writer.WriteNull("id");
        writer.WriteStartObject("error");
        writer.WriteNumber("code", -32001);
        writer.WriteString("message", message);
        writer.WriteStartObject("data");
        writer.WriteString("reason", reason);
        writer.WriteNumber("status", status);
        writer.WriteEndObject();
        writer.WriteEndObject();
        writer.WriteEndObject();
        await writer.FlushAsync(http.RequestAborted).ConfigureAwait(false);
    }

    [LoggerMessage(EventId = EventIds.Mcp + 0, Level = LogLevel.Debug, Message = "MCP request from {Client} refused with {Status}: {Reason}")]
    static partial void Refused(ILogger logger, string client, int status, string reason);
}
