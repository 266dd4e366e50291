using System.Text;
using System.Text.Json.Serialization;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery;

/// <summary>One message in `queue list --json` / `queue show --json` and in the admin API's queue.</summary>
public sealed record QueueItem(
    string Id, string Tenant, string State, string From, DateTimeOffset ReceivedAt, int Attempts, DateTimeOffset? NextAttemptAt,
    DateTimeOffset? LastAttemptAt, long Size, IReadOnlyList<QueueRecipient> Recipients);

public sealed record QueueRecipient(string Address, string Status, string? LastReply, DateTimeOffset? UpdatedAt);

/// <summary>One message with what `queue show` prints besides the item: where it came from and its header lines.</summary>
public sealed record QueueDetails(QueueItem Message, string? ClientAddress, string? Listener, IReadOnlyList<string> Headers);

/// <summary>The answer to a retry or delete: the same sentence the CLI prints ("&lt;id&gt;: due now").</summary>
public sealed record QueueActionResult(string Id, string Message);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(List<QueueItem>))]
[JsonSerializable(typeof(QueueItem))]
internal sealed partial class QueueJsonContext : JsonSerializerContext;

/// <summary>
/// The spool as an operator sees it, for `smtpgw queue` and the admin API alike (one mapping, so both show the same).
/// States: queued (never attempted), deferred (attempted, some recipient still pending), failed (in failed/).
/// Reading only: safe next to a running gateway.
/// </summary>
public static class QueueView
{
    public static readonly IReadOnlyList<string> States = ["queued", "deferred", "failed"];

    /// <summary>Most header lines shown: enough for any real message, bounded for a hostile one.</summary>
    const int MaxHeaderLines = 200;

    /// <summary>Null for a valid state filter (or none), else the error.</summary>
    public static string? StateError(string? state) =>
        state is null || States.Contains(state) ? null : $"state must be queued, deferred or failed, not '{Printable(state, 40)}'.";

    /// <summary>Queued and failed messages, oldest first, optionally of one tenant and in one state.</summary>
    internal static List<QueueItem> List(FileSpool spool, string? tenant, string? state) =>
        [.. spool.List(SpoolArea.Queue).Concat(spool.List(SpoolArea.Failed))
            .Select(ToItem)
            .Where(i => tenant is null || i.Tenant == tenant)
            .Where(i => state is null || i.State == state)];

    /// <summary>
    /// One page of a tenant's messages (the admin API), oldest first (ids sort by arrival), after <paramref name="after"/>:
    /// at most <paramref name="limit"/>, so a request costs a page, not the spool. The owner is the envelope's tenant id (a
    /// message of no tenant belongs to none); a message the running spool already knows is another tenant's is skipped
    /// without reading its file.
    /// </summary>
    internal static List<QueueItem> Page(FileSpool spool, string tenant, string? state, string? after, int limit)
    {
        var items = new List<QueueItem>();
        var ids = spool.Ids(SpoolArea.Queue).Select(id => (Id: id, Area: SpoolArea.Queue))
            .Concat(spool.Ids(SpoolArea.Failed).Select(id => (Id: id, Area: SpoolArea.Failed)))
            .Where(e => after is null || string.CompareOrdinal(e.Id, after) > 0)
            .Order(Comparer<(string Id, SpoolArea Area)>.Create((a, b) => string.CompareOrdinal(a.Id, b.Id) is var c and not 0 ? c : a.Area.CompareTo(b.Area)));
        foreach (var (id, area) in ids)
        {
            if (items.Count >= limit)
            {
                break;
            }

            if (area == SpoolArea.Queue && spool.TenantOf(id) is { } known && known != tenant)
            {
                continue;
            }

            if (spool.Read(id, area) is { } entry && entry.Envelope.TenantId == tenant && ToItem(entry) is var item && (state is null || item.State == state))
            {
                items.Add(item);
            }
        }

        return items;
    }

    /// <summary>The tenant id of a message's envelope: null when it has none (DSNs, mail for no tenant) or no message has that id.</summary>
    internal static string? OwnerOf(FileSpool spool, string id) =>
        FileSpool.IsValidId(id) && spool.Peek(id) is { } found ? found.Entry.Envelope.TenantId : null;

    /// <summary>One message (queued or failed) without its header lines (one read of its envelope); null when there is none.</summary>
    internal static QueueItem? Item(FileSpool spool, string id) =>
        FileSpool.IsValidId(id) && spool.Peek(id) is { } found ? ToItem(found.Entry) : null;

    /// <summary>One message (queued or failed) with its header lines; null when no message has that id (or it is no id).</summary>
    internal static QueueDetails? Show(FileSpool spool, string id)
    {
        if (!FileSpool.IsValidId(id) || spool.Peek(id) is not { } found)
        {
            return null;
        }

        using var content = found.Message.OpenContent();
        return new QueueDetails(ToItem(found.Entry), found.Entry.Envelope.ClientAddress, found.Entry.Envelope.Listener, [.. HeaderLines(content)]);
    }

    internal static QueueItem ToItem(SpoolEntry entry)
    {
        var state = entry.Area == SpoolArea.Failed ? "failed" : entry.State.Attempts == 0 ? "queued" : "deferred";
        return new QueueItem(entry.Id, TenantOf(entry), state, entry.Envelope.MailFrom, entry.Envelope.ReceivedAt, entry.State.Attempts,
            entry.State.NextAttemptAt, entry.State.LastAttemptAt, entry.Size,
            entry.State.Recipients.Select(r => new QueueRecipient(r.Address, r.Status.ToString().ToLowerInvariant(), r.LastReply, r.UpdatedAt)).ToList());
    }

    static string TenantOf(SpoolEntry entry) => entry.Envelope.TenantId ?? "default";

    /// <summary>The header section as text lines (up to the empty line, at most 200 lines), control characters shown as '?'.</summary>
    internal static IEnumerable<string> HeaderLines(Stream content)
    {
        using var reader = new StreamReader(content, Encoding.UTF8, detectEncodingFromByteOrderMarks: false, leaveOpen: true);
        for (var i = 0; i < MaxHeaderLines && reader.ReadLine() is { Length: > 0 } line; i++)
        {
            yield return Printable(line, int.MaxValue);
        }
    }

    static string Printable(string text, int max) => new([.. text.Take(max).Select(c => char.IsControl(c) && c != '\t' ? '?' : c)]);
}
