using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using SmtpGateway.Identity;
using SmtpGateway.Storage;

namespace SmtpGateway.Bounces;

/// <summary>One suppressed recipient of one tenant.</summary>
/// <param name="Address">Normalised address (local part lower case, domain in A-labels).</param>
/// <param name="Reason">"hard-bounce", "complaint" or "manual".</param>
/// <param name="Detail">The status or feedback type and queue id that caused it, for the operator.</param>
public sealed record SuppressionEntry(string Address, string Reason, string? Detail, DateTimeOffset At);

/// <summary>A line of suppression/&lt;tenant&gt;.jsonl.</summary>
public sealed record SuppressionRecord(string Op, string Address, string? Reason, string? Detail, DateTimeOffset At);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(SuppressionRecord))]
[JsonSerializable(typeof(List<SuppressionEntry>))]
internal sealed partial class SuppressionJsonContext : JsonSerializerContext;

/// <summary>
/// Per-tenant suppression lists: DataDirectory/suppression/&lt;tenant&gt;.jsonl, an append-only log of add/remove lines
/// written with O_APPEND by the gateway (bounces, complaints) and by `smtpgw suppression` alike. Each process keeps the
/// folded set in memory and reads new lines at most once per <see cref="RefreshInterval"/>, so a removal by the CLI
/// reaches a running gateway within about a second. One tenant's list never affects another's (isolation promise 6).
/// </summary>
public sealed class SuppressionList : IDisposable
{
    /// <summary>A list is an operator tool, not a mail store: refuse to grow past this many entries per tenant.</summary>
    public const int MaxEntriesPerTenant = 1_000_000;

    readonly string _directory;
    readonly TimeProvider _time;
    readonly Lock _lock = new();
    readonly Dictionary<string, TenantList> _tenants = new(StringComparer.Ordinal);

    public SuppressionList(string dataDirectory, TimeProvider time)
    {
        _directory = Path.Combine(dataDirectory, "suppression");
        _time = time;
    }

    public TimeSpan RefreshInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The form addresses are kept and compared in.</summary>
    public static string? Normalize(string address)
    {
        var a = address.Trim().Trim('<', '>');
        var at = a.LastIndexOf('@');
        if (at <= 0 || at == a.Length - 1 || a.Length > 512 || a.Any(char.IsControl))
        {
            return null;
        }

        var domain = DomainName.Normalize(a[(at + 1)..]);
        return domain is null ? null : $"{a[..at].ToLowerInvariant()}@{domain}";
    }

    public bool Contains(string tenant, string address)
    {
        var key = Normalize(address);
        if (key is null)
        {
            return false;
        }

        var list = For(tenant);
        lock (list)
        {
            return Refreshed(tenant, list).Entries.ContainsKey(key);
        }
    }

    /// <summary>Adds <paramref name="address"/>; false when it was already listed (nothing written) or is not an address.</summary>
    public bool Add(string tenant, string address, string reason, string? detail)
    {
        var key = Normalize(address);
        if (key is null)
        {
            return false;
        }

        var list = For(tenant);
        lock (list)
        {
            Refreshed(tenant, list);
            if (list.Entries.ContainsKey(key) || list.Entries.Count >= MaxEntriesPerTenant)
            {
                return false;
            }

            var record = new SuppressionRecord("add", key, reason, Sanitize(detail), _time.GetUtcNow());
            Append(tenant, list, record);
            return true;
        }
    }

    /// <summary>Removes <paramref name="address"/>; false when it was not listed.</summary>
    public bool Remove(string tenant, string address)
    {
        var key = Normalize(address);
        if (key is null)
        {
            return false;
        }

        var list = For(tenant);
        lock (list)
        {
            Refreshed(tenant, list);
            if (!list.Entries.ContainsKey(key))
            {
                return false;
            }

            Append(tenant, list, new SuppressionRecord("remove", key, null, null, _time.GetUtcNow()));
            return true;
        }
    }

    public IReadOnlyList<SuppressionEntry> List(string tenant)
    {
        var list = For(tenant);
        lock (list)
        {
            return [.. Refreshed(tenant, list).Entries.Values.OrderBy(e => e.At).ThenBy(e => e.Address, StringComparer.Ordinal)];
        }
    }

    public static string ToJson(IReadOnlyList<SuppressionEntry> entries) =>
        JsonSerializer.Serialize(entries.ToList(), SuppressionJsonContext.Default.ListSuppressionEntry);

    string PathFor(string tenant) => Path.Combine(_directory, tenant + ".jsonl");

    void Append(string tenant, TenantList list, SuppressionRecord record)
    {
        list.File ??= AppendOnlyFile.Open(PathFor(tenant));
        var json = JsonSerializer.SerializeToUtf8Bytes(record, SuppressionJsonContext.Default.SuppressionRecord);

        // If a writer died mid-line, end its torn fragment first: appended to it, this record would be skipped as damaged
        // (a bounce that silently suppresses nothing). Two writers racing here at worst leave an empty line, which is skipped.
        var torn = EndsTorn(PathFor(tenant));
        var line = new byte[json.Length + (torn ? 2 : 1)];
        if (torn)
        {
            line[0] = (byte)'\n';
        }

        json.CopyTo(line, torn ? 1 : 0);
        line[^1] = (byte)'\n';
        list.File.Write(line);

        // Our own line is read back by the next refresh like anyone else's; apply it now so the caller sees it at once.
        ReadNew(tenant, list);
    }

    static bool EndsTorn(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        if (stream.Length == 0)
        {
            return false;
        }

        stream.Position = stream.Length - 1;
        return stream.ReadByte() != '\n';
    }

    /// <summary>
    /// Each tenant's list has its own lock (held while its file is read): one tenant's large list loading does not stall
    /// RCPT for every other tenant. The global lock only guards the map of lists.
    /// </summary>
    TenantList For(string tenant)
    {
        lock (_lock)
        {
            if (!_tenants.TryGetValue(tenant, out var list))
            {
                _tenants[tenant] = list = new TenantList();
            }

            return list;
        }
    }

    TenantList Refreshed(string tenant, TenantList list)
    {
        var now = _time.GetTimestamp();
        if (list.CheckedAt is not { } checkedAt || _time.GetElapsedTime(checkedAt, now) >= RefreshInterval)
        {
            ReadNew(tenant, list);
            list.CheckedAt = now;
        }

        return list;
    }

    /// <summary>Applies whole lines appended since the last read; a half-written last line waits for the next read.</summary>
    void ReadNew(string tenant, TenantList list)
    {
        var path = PathFor(tenant);
        if (!File.Exists(path))
        {
            return;
        }

        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        if (stream.Length < list.Offset)
        {
            // Replaced (restored from a backup, edited by hand): start over.
            list.Entries.Clear();
            list.Offset = 0;
        }

        if (stream.Length == list.Offset)
        {
            return;
        }

        stream.Position = list.Offset;
        var buffer = new byte[stream.Length - list.Offset];
        stream.ReadExactly(buffer);
        var end = Array.LastIndexOf(buffer, (byte)'\n');
        if (end < 0)
        {
            return;
        }

        foreach (var raw in Encoding.UTF8.GetString(buffer, 0, end).Split('\n'))
        {
            if (raw.Length == 0)
            {
                continue;
            }

            SuppressionRecord? record;
            try
            {
                record = JsonSerializer.Deserialize(raw, SuppressionJsonContext.Default.SuppressionRecord);
            }
            catch (JsonException)
            {
                continue; // a damaged line costs that line only
            }

            if (record?.Address is null || Normalize(record.Address) is not { } key)
            {
                continue;
            }

            if (record.Op == "add")
            {
                list.Entries[key] = new SuppressionEntry(key, record.Reason ?? "manual", record.Detail, record.At);
            }
            else if (record.Op == "remove")
            {
                list.Entries.Remove(key);
            }
        }

        list.Offset += end + 1;
    }

    static string? Sanitize(string? text) =>
        text is null ? null : new string([.. text.Where(c => !char.IsControl(c)).Take(300)]);

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var list in _tenants.Values)
            {
                list.File?.Dispose();
            }

            _tenants.Clear();
        }
    }

    sealed class TenantList
    {
        public Dictionary<string, SuppressionEntry> Entries { get; } = new(StringComparer.Ordinal);

        public long Offset { get; set; }

        /// <summary>TimeProvider timestamp of the last read of the file; null before the first.</summary>
        public long? CheckedAt { get; set; }

        public AppendOnlyFile? File { get; set; }
    }
}
