using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using SmtpGateway.Delivery;
using SmtpGateway.Identity;

namespace SmtpGateway.Admin;

/// <summary>
/// A tenant's recent delivery events (DataDirectory/events/&lt;tenant&gt;.jsonl), newest first. The file grows without
/// bound, so it is read backwards from its end in fixed chunks: memory stays bounded by the limit, not the file.
/// </summary>
public static class EventEndpoints
{
    public const int DefaultLimit = 100;
    public const int MaxLimit = 1000;

    const int ChunkSize = 64 * 1024;

    /// <summary>
    /// Most bytes one request reads: the limit bounds the events, not the reading (a file shared with another tenant id,
    /// or full of damaged lines, would otherwise be read whole per request); past it, what was found is the answer.
    /// </summary>
    public const long MaxScanBytes = 8 * 1024 * 1024;

    /// <summary>A longer line is no event the gateway wrote (they are a few hundred bytes): skipped, never buffered whole.</summary>
    const int MaxLineBytes = 64 * 1024;

    public static IEndpointRouteBuilder MapEvents(this IEndpointRouteBuilder e)
    {
        e.MapGet("/api/v1/tenants/{tenant}/events", (string tenant, string? limit, HttpContext context, TenantDirectoryService directory, DeliveryEvents events,
            ILoggerFactory loggers) =>
        {
            if (AdminEndpoints.Visible(context, directory, tenant) is null)
            {
                return AdminResults.TenantNotFound();
            }

            var count = DefaultLimit;
            if (limit is not null && (!int.TryParse(limit, NumberStyles.None, CultureInfo.InvariantCulture, out count) || count is < 1 or > MaxLimit))
            {
                return AdminResults.Invalid("limit", $"limit is a whole number from 1 to {MaxLimit} (default {DefaultLimit}).");
            }

            try
            {
                return Results.Ok(events.Log is { } log ? Latest(log.PathFor(tenant), tenant, count) : []);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                ResourceLog.Failed(loggers.CreateLogger("SmtpGateway.Admin"), "events", "list", tenant, ex.Message);
                return AdminResults.Unavailable(AdminResults.EventsUnavailable);
            }
        }).WithTags("events").WithName("ListEvents")
            .WithSummary("The tenant's most recent delivery events (delivered, deferred, bounced, expired, reports, suppressed, paused), newest first; ?limit= (default 100, at most 1000).");
        return e;
    }

    /// <summary>
    /// The last <paramref name="limit"/> whole events of the file (those <paramref name="match"/> takes, when given), newest
    /// first; damaged and half-written lines are skipped.
    /// </summary>
    internal static List<DeliveryEvent> Latest(string path, string tenant, int limit, long maxScanBytes = MaxScanBytes, Func<DeliveryEvent, bool>? match = null)
    {
        var events = new List<DeliveryEvent>();
        if (!File.Exists(path))
        {
            return events;
        }

        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, bufferSize: 1);
        var position = stream.Length;
        var chunk = new byte[ChunkSize];
        byte[] tail = [];          // the start of a line whose end has been read already
        var partial = true;        // what follows the file's last LF is a line still being written
        var oversized = false;     // the line being assembled is past MaxLineBytes: skip it
        var stop = Math.Max(0, stream.Length - maxScanBytes);
        while (position > stop && events.Count < limit)
        {
            var n = (int)Math.Min(ChunkSize, position - stop);
            position -= n;
            stream.Position = position;
            stream.ReadExactly(chunk, 0, n);
            var data = new byte[n + tail.Length];
            chunk.AsSpan(0, n).CopyTo(data);
            tail.CopyTo(data, n);
            var end = data.Length;
            int lf;
            while (events.Count < limit && (lf = data.AsSpan(0, end).LastIndexOf((byte)'\n')) >= 0)
            {
                if (partial)
                {
                    partial = false;
                }
                else if (oversized)
                {
                    oversized = false;
                }
                else
                {
                    Add(data.AsSpan((lf + 1)..end), tenant, match, events);
                }

                end = lf;
            }

            tail = data[..end];
            if (tail.Length > MaxLineBytes)
            {
                tail = [];
                oversized = !partial;
            }
        }

        // The file's first line has no LF before it.
        if (position == 0 && events.Count < limit && !partial && !oversized && tail.Length > 0)
        {
            Add(tail, tenant, match, events);
        }

        return events;
    }

    static void Add(ReadOnlySpan<byte> line, string tenant, Func<DeliveryEvent, bool>? match, List<DeliveryEvent> events)
    {
        if (line.IsEmpty)
        {
            return;
        }

        try
        {
            // File names are a reduced form of the tenant id: keep only this tenant's own lines.
            if (JsonSerializer.Deserialize(line, DeliveryEventJsonContext.Default.DeliveryEvent) is { } e && e.Tenant == tenant && (match is null || match(e)))
            {
                events.Add(e);
            }
        }
        catch (JsonException)
        {
            // A damaged line costs that line only.
        }
    }
}
