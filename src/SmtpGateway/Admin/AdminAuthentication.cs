using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using SmtpGateway.Audit;
using SmtpGateway.Diagnostics;
using SmtpGateway.Identity;

namespace SmtpGateway.Admin;

/// <summary>
/// Bearer keys for everything under /api/, and one audit event per /api/ call (ARCHITECTURE §4.7). A client that keeps
/// presenting bad keys is slowed like a client that keeps failing SMTP AUTH (the same <see cref="AuthThrottle"/>, its
/// own table), then answered 429 without a key check. The local CLI's requests over the unix socket are the operator.
/// </summary>
public sealed partial class AdminAuthentication(RequestDelegate next, AdminKeyStore keys, AdminKeyThrottle throttle, IAuditLog audit,
    TimeProvider time, ILoggerFactory loggers)
{
    readonly ILogger _logger = loggers.CreateLogger("SmtpGateway.Admin");
    readonly LogWindow _badKeyWarning = new(TimeSpan.FromMinutes(1));

    public async Task InvokeAsync(HttpContext context)
    {
        if (!context.Request.Path.StartsWithSegments("/api", StringComparison.Ordinal))
        {
            await next(context).ConfigureAwait(false);
            return;
        }

        var principal = await AuthenticateAsync(context).ConfigureAwait(false);
        if (principal is null)
        {
            return;
        }

        context.Features.Set(principal);
        try
        {
            await next(context).ConfigureAwait(false);
        }
        finally
        {
            var status = context.Response.StatusCode;
            audit.Write(new AuditEvent
            {
                Action = AuditActions.Admin,
                Result = status < 400 ? "ok" : status is 401 or 403 or 404 ? "refused" : status.ToString(System.Globalization.CultureInfo.InvariantCulture),
                Reason = status >= 400 ? status.ToString(System.Globalization.CultureInfo.InvariantCulture) : null,
                Tenant = context.Request.RouteValues.TryGetValue("tenant", out var t) && t is string tenant && tenant.Length <= 64 ? tenant : principal.Tenant,
                TokenId = principal.KeyId,
                ClientIp = context.Connection.RemoteIpAddress?.ToString(),
                Subject = $"{context.Request.Method} {RouteOf(context)}",
                Channel = "api",
            });
        }
    }

    /// <summary>The route template, never the raw path: a path is client input (an address, a queue id) of any length.</summary>
    static string RouteOf(HttpContext context) =>
        context.GetEndpoint() is RouteEndpoint route ? route.RoutePattern.RawText ?? "?" : "(no route)";

    async Task<AdminPrincipal?> AuthenticateAsync(HttpContext context)
    {
        // Kestrel gives every TCP connection its addresses; only the unix socket has none (and only this process listens on it).
        if (context.Connection.LocalIpAddress is null && context.Connection.RemoteIpAddress is null)
        {
            return new AdminPrincipal(AdminPrincipal.LocalKeyId, null);
        }

        var client = context.Connection.RemoteIpAddress ?? IPAddress.None;
        if (throttle.Throttle.IsBlocked(client))
        {
            context.Response.Headers.RetryAfter = ((int)throttle.Window.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture);
            await Refuse(context, StatusCodes.Status429TooManyRequests, "Too many bad keys",
                "This client presented too many bad admin keys; try again later.").ConfigureAwait(false);
            return null;
        }

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

        var delay = throttle.Throttle.RecordFailure(client);
        if (_badKeyWarning.ShouldWrite(time, out var skipped))
        {
            AdminLog.BadKey(_logger, client.ToString(), bearer is null ? "missing" : "invalid", skipped);
        }

        audit.Write(new AuditEvent
        {
            Action = AuditActions.Admin,
            Result = "refused",
            Reason = bearer is null ? "no key" : "bad key",
            ClientIp = client.ToString(),
            Subject = $"{context.Request.Method} {RouteOf(context)}",
            Channel = "api",
        });
        if (delay > TimeSpan.Zero)
        {
            await Task.Delay(delay, time, context.RequestAborted).ConfigureAwait(false);
        }

        context.Response.Headers.WWWAuthenticate = "Bearer";
        await Refuse(context, StatusCodes.Status401Unauthorized, "Unauthorized",
            "An admin key is required: Authorization: Bearer <key> (smtpgw admin key create).").ConfigureAwait(false);
        return null;
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
}
