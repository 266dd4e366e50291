using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace SmtpGateway.Admin;

/// <summary>The API's refusals, as application/problem+json (RFC 9457), in one place so that equal cases answer alike.</summary>
public static class AdminResults
{
    /// <summary>
    /// An absent tenant and another tenant's tenant (for a tenant-scoped key) get this same answer, byte for byte, so a
    /// key scoped to one tenant cannot probe which others exist.
    /// </summary>
    public static IResult TenantNotFound() =>
        Results.Problem(statusCode: StatusCodes.Status404NotFound, title: "Not Found", detail: NoSuchTenant);

    /// <summary>The detail of <see cref="TenantNotFound"/>: the CLI tells it from a 404 about the resource by it.</summary>
    public const string NoSuchTenant = "No such tenant.";

    public static IResult NotFound(string what) =>
        Results.Problem(statusCode: StatusCodes.Status404NotFound, title: "Not Found", detail: what);

    public static IResult OperatorOnly() =>
        Results.Problem(statusCode: StatusCodes.Status403Forbidden, title: "Forbidden", detail: "This resource needs an operator key.");

    /// <summary>400 with every error, keyed by the field it is about.</summary>
    public static IResult Invalid(IDictionary<string, string[]> errors) => Results.ValidationProblem(errors, title: "The request is invalid.");

    public static IResult Invalid(string field, string error) => Invalid(new Dictionary<string, string[]> { [field] = [error] });

    public static IResult Conflict(string detail) =>
        Results.Problem(statusCode: StatusCodes.Status409Conflict, title: "Conflict", detail: detail);

    /// <summary>
    /// A dependency failed, answered without the exception's text (it can name PIN sources, paths, token labels, and a
    /// tenant key must not read them); the cause goes to the gateway's log with the request's trace id.
    /// </summary>
    public static IResult Unavailable(HttpContext context, Exception cause)
    {
        var logger = context.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger("SmtpGateway.Admin");
        AdminLog.DependencyFailed(logger, context.TraceIdentifier, cause.GetType().Name, cause.Message);
        return Unavailable($"The gateway could not complete this now; its log has the cause (trace id {context.TraceIdentifier}).");
    }

    /// <summary>
    /// The detail of every 503 of the vault: the cause (an exception's text) names paths, PIN sources, token labels and
    /// upstream answers, none of which a tenant key may learn, so it goes to the gateway's log only.
    /// </summary>
    public const string VaultUnavailable = "The vault is unavailable; the gateway log has the cause.";

    /// <summary>The detail of a 503 of the delivery events; as <see cref="VaultUnavailable"/>, the cause is logged only.</summary>
    public const string EventsUnavailable = "The delivery events are unavailable; the gateway log has the cause.";

    /// <summary>The detail of a 503 of the queue; as <see cref="VaultUnavailable"/>, the cause is logged only.</summary>
    public const string QueueUnavailable = "The queue is unavailable; the gateway log has the cause.";

    /// <summary>The detail of a 503 of the suppression list; as <see cref="VaultUnavailable"/>, the cause is logged only.</summary>
    public const string SuppressionUnavailable = "The suppression list is unavailable; the gateway log has the cause.";

    /// <summary>A dependency (the HSM, the disk) failed: 503, like the SMTP side's 4xx, never a half-done change reported as done.</summary>
    public static IResult Unavailable(string detail) =>
        Results.Problem(statusCode: StatusCodes.Status503ServiceUnavailable, title: "Service Unavailable", detail: detail);
}
