using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using SmtpGateway.Storage;

namespace SmtpGateway.Delivery;

/// <summary>One line of DataDirectory/events/&lt;tenant&gt;.jsonl: what happened to one recipient in one attempt.</summary>
public sealed record DeliveryEvent
{
    public required DateTimeOffset Time { get; init; }

    /// <summary>
    /// delivered | deferred | bounced | expired (our own attempts); bounced | soft-bounced | complained | delivery-report
    /// (Source "report": a DSN or ARF report received at a return path); suppressed (a RCPT refused for the suppression
    /// list; Id is then the session id); paused (the tenant's outbound queue is held for its bounce rate).
    /// </summary>
    public required string Event { get; init; }

    /// <summary>Queue id.</summary>
    public required string Id { get; init; }

    public required string Tenant { get; init; }

    /// <summary>Envelope sender ("" for the null sender).</summary>
    public required string From { get; init; }

    public required string Recipient { get; init; }

    /// <summary>The reply that decided, e.g. "550 5.1.1 No such user", or the gateway's own (DNS, connection, TLS policy).</summary>
    public required string Reply { get; init; }

    /// <summary>"mx1.example.net[192.0.2.1]:25"; null when no host was reached.</summary>
    public string? Host { get; init; }

    /// <summary>"TLSv1.3 TLS_AES_256_GCM_SHA384"; null for plaintext or no session.</summary>
    public string? Tls { get; init; }

    /// <summary>Attempt number (1-based).</summary>
    public required int Attempt { get; init; }

    /// <summary>For deferred: when the next attempt is due.</summary>
    public DateTimeOffset? NextAttemptAt { get; init; }

    /// <summary>For bounced and expired: the queue id of the DSN sent to the sender, if any.</summary>
    public string? DsnId { get; init; }

    /// <summary>The reverse-path the message was sent with (the tenant's VERP return path), when it differs from From.</summary>
    public string? ReturnPath { get; init; }

    /// <summary>"report" when the event comes from a bounce or complaint received later; null for our own attempts.</summary>
    public string? Source { get; init; }

    /// <summary>For reports: the queue id under which the report itself was received.</summary>
    public string? ReportId { get; init; }

    /// <summary>For complaints: the ARF Feedback-Type (RFC 5965 section 3.1).</summary>
    public string? FeedbackType { get; init; }

    /// <summary>For a suppression: whether the recipient was added to the tenant's suppression list.</summary>
    public bool? Suppressed { get; init; }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(DeliveryEvent))]
internal sealed partial class DeliveryEventJsonContext : JsonSerializerContext
{
    /// <summary>
    /// Files for operators and their tools, never embedded in HTML: "+" in a return path and "+00:00" in a time stay
    /// readable (and greppable) instead of "\u002B". Control characters and quotes are still escaped.
    /// </summary>
    public static DeliveryEventJsonContext Relaxed { get; } = new(new JsonSerializerOptions
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    });
}

/// <summary>
/// Delivery events as JSON lines, one file per tenant (DataDirectory/events/&lt;tenant&gt;.jsonl), appended with O_APPEND so
/// that every line lands whole. Not fsynced per line: it is a record of outcomes, the spool state is the truth.
/// Tenant file names are reduced to a safe form exactly as the drop folders are.
/// </summary>
public sealed class DeliveryEventLog : IDisposable
{
    readonly string _directory;
    readonly ILogger _logger;
    readonly Lock _gate = new();
    readonly Dictionary<string, AppendOnlyFile> _files = new(StringComparer.Ordinal);
    bool _disposed;

    public DeliveryEventLog(string directory, ILogger logger)
    {
        _directory = Path.GetFullPath(directory);
        _logger = logger;
    }

    public string Directory => _directory;

    /// <summary>The file of <paramref name="tenant"/>'s events.</summary>
    public string PathFor(string tenant) => Path.Combine(_directory, DropTransport.TenantDirectoryName(tenant) + ".jsonl");

    public void Write(DeliveryEvent delivery)
    {
        ArgumentNullException.ThrowIfNull(delivery);
        var json = JsonSerializer.SerializeToUtf8Bytes(delivery, DeliveryEventJsonContext.Relaxed.DeliveryEvent);
        var line = new byte[json.Length + 1];
        json.CopyTo(line, 0);
        line[^1] = (byte)'\n';
        try
        {
            lock (_gate)
            {
                if (_disposed)
                {
                    return;
                }

                if (!_files.TryGetValue(delivery.Tenant, out var file))
                {
                    _files[delivery.Tenant] = file = AppendOnlyFile.Open(PathFor(delivery.Tenant));
                }

                file.Write(line);
            }
        }
        catch (IOException ex)
        {
            DeliveryLog.EventLogFailed(_logger, ex);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
            foreach (var file in _files.Values)
            {
                file.Dispose();
            }

            _files.Clear();
        }
    }
}
