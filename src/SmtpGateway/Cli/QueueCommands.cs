using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Hosting;
using SmtpGateway.Spool;

namespace SmtpGateway.Cli;

/// <summary>One message in `queue list --json` / `queue show --json`.</summary>
internal sealed record QueueItem(
    string Id, string Tenant, string State, string From, DateTimeOffset ReceivedAt, int Attempts, DateTimeOffset? NextAttemptAt,
    DateTimeOffset? LastAttemptAt, long Size, IReadOnlyList<QueueRecipient> Recipients);

internal sealed record QueueRecipient(string Address, string Status, string? LastReply, DateTimeOffset? UpdatedAt);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(List<QueueItem>))]
[JsonSerializable(typeof(QueueItem))]
internal sealed partial class QueueJsonContext : JsonSerializerContext;

/// <summary>
/// `smtpgw queue list|show|retry|delete`: the spool seen and steered by an operator. Listing and showing read the spool's
/// files (safe next to a running gateway). Retry and delete act directly on a stopped gateway's spool, and through the
/// running gateway's control directory otherwise (see <see cref="QueueControl"/>).
/// States: queued (never attempted), deferred (attempted, some recipient still pending), failed (in failed/).
/// </summary>
public static class QueueCommands
{
    static readonly TimeSpan GatewayAnswerTimeout = TimeSpan.FromSeconds(40);

    public static Command Build(Func<Option<string?>> configOption)
    {
        var queue = new Command("queue", "Inspect and steer the delivery queue (works on a running gateway and on a stopped one's spool).");
        queue.Subcommands.Add(List(configOption()));
        queue.Subcommands.Add(Show(configOption()));
        queue.Subcommands.Add(Retry(configOption()));
        queue.Subcommands.Add(Delete(configOption()));
        return queue;
    }

    static Command List(Option<string?> config)
    {
        var tenant = new Option<string?>("--tenant") { Description = "Only this tenant's messages." };
        var state = new Option<string?>("--state") { Description = "queued, deferred or failed (default: all)." };
        var json = new Option<bool>("--json") { Description = "Print a JSON array for scripts." };
        var command = new Command("list", "List queued, deferred and failed messages, oldest first.") { config, tenant, state, json };
        command.SetAction(parse => Run(parse.GetValue(config), spool =>
        {
            var wanted = parse.GetValue(state)?.ToLowerInvariant();
            if (wanted is not (null or "queued" or "deferred" or "failed"))
            {
                throw new FormatException($"--state must be queued, deferred or failed, not '{wanted}'.");
            }

            var items = spool.List(SpoolArea.Queue).Concat(spool.List(SpoolArea.Failed))
                .Select(ToItem)
                .Where(i => parse.GetValue(tenant) is not { } t || i.Tenant == t)
                .Where(i => wanted is null || i.State == wanted)
                .ToList();
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(items, QueueJsonContext.Default.ListQueueItem));
                return 0;
            }

            Console.WriteLine($"{"ID",-20} {"TENANT",-14} {"STATE",-8} {"TRIES",5} {"NEXT",-20} {"SIZE",9} {"FROM",-30} RECIPIENTS (pending/total), LAST REPLY");
            foreach (var i in items)
            {
                var pending = i.Recipients.Count(r => r.Status == "pending");
                var last = i.Recipients.Where(r => r.LastReply is not null).Select(r => r.LastReply).LastOrDefault() ?? "";
                var next = i.State == "failed" || i.NextAttemptAt is null ? "-" : i.NextAttemptAt.Value.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
                Console.WriteLine($"{i.Id,-20} {i.Tenant,-14} {i.State,-8} {i.Attempts,5} {next,-20} {i.Size,9} {Shorten(i.From.Length == 0 ? "<>" : i.From, 30),-30} {pending}/{i.Recipients.Count} {Shorten(last, 60)}");
            }

            Console.Error.WriteLine($"{items.Count} message(s)");
            return 0;
        }));
        return command;
    }

    static Command Show(Option<string?> config)
    {
        var id = new Argument<string>("id") { Description = "Queue id." };
        var json = new Option<bool>("--json") { Description = "Print JSON." };
        var command = new Command("show", "Show one message: envelope, per-recipient state and replies, and its header section.") { config, id, json };
        command.SetAction(parse => Run(parse.GetValue(config), spool =>
        {
            if (spool.Peek(parse.GetValue(id)!) is not { } found)
            {
                Console.Error.WriteLine($"error: {parse.GetValue(id)}: no such message");
                return 1;
            }

            var item = ToItem(found.Entry);
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(item, QueueJsonContext.Default.QueueItem));
                return 0;
            }

            var e = found.Entry.Envelope;
            Console.WriteLine($"id:          {item.Id}");
            Console.WriteLine($"tenant:      {item.Tenant}");
            Console.WriteLine($"state:       {item.State}");
            Console.WriteLine($"from:        <{item.From}>");
            Console.WriteLine($"received:    {item.ReceivedAt:O} from {e.ClientAddress} on {e.Listener}");
            Console.WriteLine($"size:        {item.Size} bytes");
            Console.WriteLine($"attempts:    {item.Attempts}{(item.LastAttemptAt is { } l ? $", last {l:O}" : "")}{(item.State != "failed" && item.NextAttemptAt is { } n ? $", next {n:O}" : "")}");
            Console.WriteLine("recipients:");
            foreach (var r in item.Recipients)
            {
                Console.WriteLine($"  {r.Status,-9} <{r.Address}> {r.LastReply}");
            }

            Console.WriteLine("headers:");
            using var content = found.Message.OpenContent();
            foreach (var line in HeaderLines(content))
            {
                Console.WriteLine("  " + line);
            }

            return 0;
        }));
        return command;
    }

    static Command Retry(Option<string?> config)
    {
        var id = new Argument<string?>("id") { Description = "Queue id (or --all).", Arity = ArgumentArity.ZeroOrOne };
        var all = new Option<bool>("--all") { Description = "Every queued message, and forget every destination backoff." };
        var command = new Command("retry", "Make a queued message (or all) due now; a running gateway attempts it at once.") { config, id, all };
        command.SetAction(parse => RunAsync(parse.GetValue(config), parse.GetValue(all) ? new QueueRequest("retry-all", null)
            : parse.GetValue(id) is { } one ? new QueueRequest("retry", one) : null));
        return command;
    }

    static Command Delete(Option<string?> config)
    {
        var id = new Argument<string>("id") { Description = "Queue id." };
        var command = new Command("delete", "Remove a message (queued or failed) without delivering it or sending a DSN.") { config, id };
        command.SetAction(parse => RunAsync(parse.GetValue(config), new QueueRequest("delete", parse.GetValue(id))));
        return command;
    }

    static QueueItem ToItem(SpoolEntry entry)
    {
        var state = entry.Area == SpoolArea.Failed ? "failed" : entry.State.Attempts == 0 ? "queued" : "deferred";
        return new QueueItem(entry.Id, entry.Envelope.TenantId ?? "default", state, entry.Envelope.MailFrom, entry.Envelope.ReceivedAt, entry.State.Attempts,
            entry.State.NextAttemptAt, entry.State.LastAttemptAt, entry.Size,
            entry.State.Recipients.Select(r => new QueueRecipient(r.Address, r.Status.ToString().ToLowerInvariant(), r.LastReply, r.UpdatedAt)).ToList());
    }

    /// <summary>The header section as text lines (up to the empty line, at most 200 lines), control characters shown as '?'.</summary>
    static IEnumerable<string> HeaderLines(Stream content)
    {
        using var reader = new StreamReader(content, Encoding.UTF8, detectEncodingFromByteOrderMarks: false);
        for (var i = 0; i < 200 && reader.ReadLine() is { Length: > 0 } line; i++)
        {
            yield return new string(line.Select(c => char.IsControl(c) && c != '\t' ? '?' : c).ToArray());
        }
    }

    static string Shorten(string text, int max) => text.Length <= max ? text : text[..(max - 1)] + "…";

    static FileSpool OpenSpool(string? configPath)
    {
        var configuration = new ConfigurationBuilder().AddGatewaySources(configPath).Build();
        var gateway = configuration.GetSection(GatewayConfig.SectionName).Get<GatewayConfig>() ?? new GatewayConfig();
        return new FileSpool(GatewayPaths.SpoolDirectory(gateway), gateway.Spool.Fsync, TimeProvider.System, NullLogger.Instance);
    }

    static int Run(string? configPath, Func<FileSpool, int> action)
    {
        try
        {
            using var spool = OpenSpool(configPath);
            return action(spool);
        }
        catch (Exception ex) when (ex is FormatException or FileNotFoundException or InvalidDataException or IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            Console.Error.WriteLine($"error: {ex.Message}");
            return 1;
        }
    }

    static async Task<int> RunAsync(string? configPath, QueueRequest? request)
    {
        if (request is null)
        {
            Console.Error.WriteLine("error: give a queue id or --all");
            return 1;
        }

        try
        {
            using var spool = OpenSpool(configPath);
            var response = await QueueControl.SubmitAsync(spool, request, GatewayAnswerTimeout, TimeProvider.System, CancellationToken.None).ConfigureAwait(false);
            (response.Ok ? Console.Out : Console.Error).WriteLine(response.Ok ? response.Message : "error: " + response.Message);
            return response.Ok ? 0 : 1;
        }
        catch (Exception ex) when (ex is FormatException or FileNotFoundException or InvalidDataException or IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            Console.Error.WriteLine($"error: {ex.Message}");
            return 1;
        }
    }
}
