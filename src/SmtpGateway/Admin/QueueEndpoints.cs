using System.Globalization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using SmtpGateway.Delivery;
using SmtpGateway.Identity;
using SmtpGateway.Spool;

namespace SmtpGateway.Admin;

/// <summary>
/// A tenant's delivery queue: list, show, retry, delete (what `smtpgw queue` does, through the same
/// <see cref="QueueView"/> and <see cref="QueueControl"/>). Queue ids are global, so every id is checked against the
/// route's tenant: another tenant's message answers exactly as an unknown id does.
/// </summary>
public static class QueueEndpoints
{
    public const int DefaultLimit = 100;
    public const int MaxLimit = 1000;

    public static IEndpointRouteBuilder MapQueue(this IEndpointRouteBuilder e)
    {
        // The collection on its own (not the group's ""), so that its route template, audited per call, has no trailing slash.
        e.MapGet("/api/v1/tenants/{tenant}/queue", (string tenant, string? state, string? limit, string? after, HttpContext context, TenantDirectoryService directory,
            FileSpool spool, ILoggerFactory loggers) =>
        {
            if (AdminEndpoints.Visible(context, directory, tenant) is null)
            {
                return AdminResults.TenantNotFound();
            }

            var errors = new Dictionary<string, string[]>();
            if (QueueView.StateError(state) is { } stateError)
            {
                errors["state"] = [stateError];
            }

            var count = DefaultLimit;
            if (limit is not null && (!int.TryParse(limit, NumberStyles.None, CultureInfo.InvariantCulture, out count) || count is < 1 or > MaxLimit))
            {
                errors["limit"] = [$"limit is a whole number from 1 to {MaxLimit} (default {DefaultLimit})."];
            }

            if (after is not null && !FileSpool.IsValidId(after))
            {
                errors["after"] = ["after is a queue id (1-64 ASCII letters and digits): the last id of the previous page."];
            }

            if (errors.Count > 0)
            {
                return AdminResults.Invalid(errors);
            }

            try
            {
                return Results.Ok(QueueView.Page(spool, tenant, state, after, count));
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                ResourceLog.Failed(loggers.CreateLogger("SmtpGateway.Admin"), "queue", "list", tenant, ex.Message);
                return AdminResults.Unavailable(AdminResults.QueueUnavailable);
            }
        }).WithTags("queue").WithName("ListQueue").WithSummary(
            "The tenant's queued, deferred and failed messages, oldest first (?state=queued|deferred|failed), a page at a time: ?limit= (default 100, at most 1000), ?after=<the last id of the previous page>; as `queue list --json`.");

        var queue = e.MapGroup("/api/v1/tenants/{tenant}/queue").WithTags("queue");
        queue.MapGet("/{id}", (string tenant, string id, HttpContext context, TenantDirectoryService directory, FileSpool spool) =>
            Check(context, directory, tenant, id)
            ?? (QueueView.OwnerOf(spool, id) == tenant && QueueView.Show(spool, id) is { } found ? Results.Ok(found) : NoSuchMessage()))
            .WithName("GetQueueMessage").WithSummary("One message: envelope, per-recipient state and last replies, and its header lines (as `queue show`).");

        queue.MapDelete("/{id}", (string tenant, string id, HttpContext context, TenantDirectoryService directory, FileSpool spool, DeliveryService delivery,
                TimeProvider time, ILoggerFactory loggers, CancellationToken cancellationToken) =>
            ActAsync(context, directory, spool, delivery, time, loggers, tenant, new QueueRequest("delete", id), clearBackoff: null, cancellationToken))
            .WithName("DeleteQueueMessage").WithSummary("Removes a queued or failed message without delivering it or sending a DSN.");

        queue.MapPost("/{id}/retry", (string tenant, string id, HttpContext context, TenantDirectoryService directory, FileSpool spool, DeliveryService delivery,
                TimeProvider time, ILoggerFactory loggers, CancellationToken cancellationToken) =>
            // Destination backoff is shared by every tenant: only an operator's retry forgets it (as `queue retry` does),
            // so a tenant key cannot make the gateway hammer a destination that is refusing other tenants' mail.
            ActAsync(context, directory, spool, delivery, time, loggers, tenant, new QueueRequest("retry", id),
                AdminPrincipal.Of(context) is { IsOperator: true } ? delivery.ClearBackoff : null, cancellationToken))
            .WithName("RetryQueueMessage").WithSummary("Makes a queued message due now; the gateway attempts it at once.");
        return e;
    }

    /// <summary>404 for a tenant the key may not see, 400 for something that is not a queue id (before any path is made from it).</summary>
    static IResult? Check(HttpContext context, TenantDirectoryService directory, string tenant, string id) =>
        AdminEndpoints.Visible(context, directory, tenant) is null ? AdminResults.TenantNotFound()
        : FileSpool.IsValidId(id) ? null
        : AdminResults.Invalid("id", "a queue id is 1-64 ASCII letters and digits.");

    /// <summary>The same answer, byte for byte, for an unknown id and for another tenant's: a tenant key learns nothing of other queues.</summary>
    static IResult NoSuchMessage() => AdminResults.NotFound("No such message.");

    static async Task<IResult> ActAsync(HttpContext context, TenantDirectoryService directory, FileSpool spool, DeliveryService delivery, TimeProvider time,
        ILoggerFactory loggers, string tenant, QueueRequest request, Action? clearBackoff, CancellationToken cancellationToken)
    {
        var id = request.Id!;
        if (Check(context, directory, tenant, id) is { } refused)
        {
            return refused;
        }

        // The envelope's tenant id, not the display name: a message of no tenant ("default" in lists) is no tenant's.
        if (QueueView.OwnerOf(spool, id) != tenant)
        {
            return NoSuchMessage();
        }

        // The running gateway's own delivery service: the id is claimed from it, so no attempt runs while the files change.
        var response = await QueueControl.ExecuteAsync(spool, request, time, delivery, clearBackoff, cancellationToken).ConfigureAwait(false);
        ResourceLog.Queue(loggers.CreateLogger("SmtpGateway.Admin"), request.Verb, id, tenant, AdminPrincipal.Of(context)!.ToString(), response.Message);
        if (response.Ok)
        {
            return Results.Ok(new QueueActionResult(id, response.Message));
        }

        // Gone meanwhile (delivered, deleted) is 404; anything else (failed, an attempt still running) is a conflict.
        return QueueView.OwnerOf(spool, id) is null ? NoSuchMessage() : AdminResults.Conflict(response.Message);
    }
}
