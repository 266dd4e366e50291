using System.Globalization;
using System.Net;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Diagnostics;
using SmtpGateway.Identity;

namespace SmtpGateway.Admin;

/// <summary>
/// Bearer keys for everything under /api/ (and /metrics unless Gateway:Admin:AnonymousMetrics), and one audit event per
/// /api/ call (ARCHITECTURE §4.7). A client that keeps presenting bad keys is slowed like a client that keeps failing SMTP
/// AUTH (the same <see cref="AuthThrottle"/>, its own table), then answered 429 without a delay; a valid key is always
/// accepted, so nobody sharing the address (a NAT, a proxy, every local script) can lock the operator out.
/// Requests over the local CLI's unix socket are the operator.
/// </summary>
public sealed partial class AdminAuthentication(RequestDelegate next, AdminKeyStore keys, AdminKeyThrottle throttle, IAuditLog audit,
    TenantDirectoryService tenants, IOptions<GatewayConfig> options, TimeProvider time, ILoggerFactory loggers)
{
    /// <summary>Set on every connection of the unix socket by <see cref="AdminServer"/>: positive identification, never inferred.</summary>
    internal const string LocalSocketItem = "smtpgw.admin.local-socket";

    /// <summary>Refused-key audit events per minute, gateway-wide: a flood from many addresses must not rotate real history out.</summary>
    internal const int RefusedAuditsPerMinute = 100;

    readonly ILogger _logger = loggers.CreateLogger("SmtpGateway.Admin");
    readonly LogWindow _badKeyWarning = new(TimeSpan.FromMinutes(1));
    readonly bool _anonymousMetrics = options.Value.Admin.AnonymousMetrics;
    readonly Lock _auditBudgetLock = new();
    long _auditMinute;
    int _auditsThisMinute;
    int _auditsSkipped;

    public async Task InvokeAsync(HttpContext context)
    {
        // Routing matches paths case-insensitively, so the guard must too (/API/v1/... is the same route).
        var api = context.Request.Path.StartsWithSegments("/api", StringComparison.OrdinalIgnoreCase)
            || (context.GetEndpoint() is RouteEndpoint route && route.RoutePattern.RawText?.StartsWith("/api", StringComparison.OrdinalIgnoreCase) == true);
        var metrics = !_anonymousMetrics && context.Request.Path.StartsWithSegments(AdminMetrics.Path, StringComparison.OrdinalIgnoreCase);
        if (!api && !metrics)
        {
            await next(context).ConfigureAwait(false);
            return;
        }

        var principal = await AuthenticateAsync(context).ConfigureAwait(false);
        if (principal is null)
        {
            return;
        }

        if (metrics)
        {
            // Every series has a tenant label: a tenant key must not see the others. Scrapes are not audited (one per 15 s).
            await (principal.IsOperator ? next(context) : AdminResults.OperatorOnly().ExecuteAsync(context)).ConfigureAwait(false);
            return;
        }

        context.Features.Set(principal);
        try
        {
            await next(context).ConfigureAwait(false);
        }
        finally
        {
            Audit(context, principal);
        }
    }

    void Audit(HttpContext context, AdminPrincipal principal)
    {
        var status = context.Response.StatusCode;
        // The route's tenant is client input: it is named only when it is a configured tenant (an id, never free text).
        var routeTenant = context.Request.RouteValues.TryGetValue("tenant", out var t) && t is string s && tenants.Current.Find(s) is not null ? s : null;
        var crossTenant = principal.Tenant is not null && routeTenant is not null && routeTenant != principal.Tenant && status == StatusCodes.Status404NotFound;
        audit.Write(new AuditEvent
        {
            Action = AuditActions.Admin,
            Result = status < 400 ? "ok" : status is 401 or 403 or 404 ? "refused" : status.ToString(CultureInfo.InvariantCulture),
            Reason = crossTenant ? $"404: tenant '{routeTenant}' is another tenant's" : status >= 400 ? status.ToString(CultureInfo.InvariantCulture) : null,
            // A tenant key's events belong to its tenant (the one that made the attempt, as on the SMTP side).
            Tenant = principal.Tenant ?? routeTenant,
            TokenId = principal.KeyId,
            ClientIp = context.Connection.RemoteIpAddress?.ToString(),
            Subject = $"{context.Request.Method} {RouteOf(context)}",
            Channel = "api",
            CrossTenant = crossTenant,
        });
    }

    /// <summary>The route template, never the raw path: a path is client input (an address, a queue id) of any length.</summary>
    static string RouteOf(HttpContext context) =>
        context.GetEndpoint() is RouteEndpoint route ? route.RoutePattern.RawText ?? "?" : "(no route)";

    static bool IsLocalSocket(HttpContext context) =>
        context.Features.Get<IConnectionItemsFeature>()?.Items.ContainsKey(LocalSocketItem) == true;

    async Task<AdminPrincipal?> AuthenticateAsync(HttpContext context)
    {
        if (IsLocalSocket(context))
        {
            return new AdminPrincipal(AdminPrincipal.LocalKeyId, null);
        }

        var client = context.Connection.RemoteIpAddress ?? IPAddress.None;
        var header = context.Request.Headers.Authorization.ToString();
        var bearer = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header["Bearer ".Length..].Trim() : null;
        AdminPrincipal? principal;
        try
        {
            principal = keys.Verify(bearer);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or System.Text.Json.JsonException or UnauthorizedAccessException)
        {
            // The key file is unreadable or unsafe: no key can be checked, so none is accepted (fail closed, 503).
            AdminLog.KeyFileUnusable(_logger, ex.Message);
            await Refuse(context, StatusCodes.Status503ServiceUnavailable, "Admin keys unavailable",
                "The admin key file cannot be read; see the gateway log.").ConfigureAwait(false);
            return null;
        }

        if (principal is not null)
        {
            return principal;
        }

        if (throttle.Throttle.IsBlocked(client))
        {
            // At once, without holding the connection: a blocked guesser must not tie up the endpoint's connections.
            context.Response.Headers.RetryAfter = ((int)throttle.Window.TotalSeconds).ToString(CultureInfo.InvariantCulture);
            await Refuse(context, StatusCodes.Status429TooManyRequests, "Too many bad keys",
                "This client presented too many bad admin keys; try again later.").ConfigureAwait(false);
            return null;
        }

        var delay = throttle.Throttle.RecordFailure(client);
        if (_badKeyWarning.ShouldWrite(time, out var skipped))
        {
            AdminLog.BadKey(_logger, client.ToString(), bearer is null ? "missing" : "invalid", skipped);
        }

        AuditRefusedKey(context, client, bearer is null ? "no key" : "bad key");
        if (delay > TimeSpan.Zero)
        {
            await Task.Delay(delay, time, context.RequestAborted).ConfigureAwait(false);
        }

        context.Response.Headers.WWWAuthenticate = "Bearer";
        await Refuse(context, StatusCodes.Status401Unauthorized, "Unauthorized",
            "An admin key is required: Authorization: Bearer <key> (smtpgw admin key create).").ConfigureAwait(false);
        return null;
    }

    /// <summary>
    /// One audit event per refused key, up to <see cref="RefusedAuditsPerMinute"/> a minute gateway-wide; the rest are
    /// counted into one event when the next minute's first one is written.
    /// </summary>
    void AuditRefusedKey(HttpContext context, IPAddress client, string reason)
    {
        int skipped;
        lock (_auditBudgetLock)
        {
            var minute = time.GetUtcNow().ToUnixTimeSeconds() / 60;
            if (minute != _auditMinute)
            {
                _auditMinute = minute;
                _auditsThisMinute = 0;
            }

            if (++_auditsThisMinute > RefusedAuditsPerMinute)
            {
                _auditsSkipped++;
                return;
            }

            skipped = _auditsSkipped;
            _auditsSkipped = 0;
        }

        audit.Write(new AuditEvent
        {
            Action = AuditActions.Admin,
            Result = "refused",
            Reason = skipped == 0 ? reason : $"{reason} ({skipped} earlier refused keys not audited: over {RefusedAuditsPerMinute} a minute)",
            ClientIp = client.ToString(),
            Subject = $"{context.Request.Method} {RouteOf(context)}",
            Channel = "api",
        });
    }

    static Task Refuse(HttpContext context, int status, string title, string detail) =>
        Results.Problem(statusCode: status, title: title, detail: detail).ExecuteAsync(context);
}

/// <summary>The bad-admin-key throttle: its own table, so a key-guessing client cannot lock anyone out of SMTP AUTH.</summary>
public sealed class AdminKeyThrottle(AuthThrottle throttle, TimeSpan window)
{
    public AuthThrottle Throttle => throttle;

    public TimeSpan Window => window;
}

static partial class AdminLog
{
    [LoggerMessage(EventId = EventIds.Admin + 0, Level = LogLevel.Information, Message = "Admin endpoint listening on {Endpoints}")]
    public static partial void Listening(ILogger logger, string endpoints);

    [LoggerMessage(EventId = EventIds.Admin + 1, Level = LogLevel.Warning, Message = "Admin request from {Client} refused: {Problem} key ({Skipped} more refusals in the last minute not logged)")]
    public static partial void BadKey(ILogger logger, string client, string problem, int skipped);

    [LoggerMessage(EventId = EventIds.Admin + 2, Level = LogLevel.Error, Message = "Admin key file unusable, every admin request is refused: {Reason}")]
    public static partial void KeyFileUnusable(ILogger logger, string reason);

    [LoggerMessage(EventId = EventIds.Admin + 3, Level = LogLevel.Warning, Message = "Admin request {TraceId} answered 503: {Kind}: {Reason}")]
    public static partial void DependencyFailed(ILogger logger, string traceId, string kind, string reason);
}
