using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Hosting;
using SmtpGateway.Spool;

namespace SmtpGateway.Cli;

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
            if (QueueView.StateError(wanted) is { } error)
            {
                throw new FormatException("--" + error);
            }

            var items = QueueView.List(spool, parse.GetValue(tenant), wanted);
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
            if (QueueView.Show(spool, parse.GetValue(id)!) is not { } found)
            {
                Console.Error.WriteLine($"error: {parse.GetValue(id)}: no such message");
                return 1;
            }

            var item = found.Message;
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(item, QueueJsonContext.Default.QueueItem));
                return 0;
            }

            Console.WriteLine($"id:          {item.Id}");
            Console.WriteLine($"tenant:      {item.Tenant}");
            Console.WriteLine($"state:       {item.State}");
            Console.WriteLine($"from:        <{item.From}>");
            Console.WriteLine($"received:    {item.ReceivedAt:O} from {found.ClientAddress} on {found.Listener}");
            Console.WriteLine($"size:        {item.Size} bytes");
            Console.WriteLine($"attempts:    {item.Attempts}{(item.LastAttemptAt is { } l ? $", last {l:O}" : "")}{(item.State != "failed" && item.NextAttemptAt is { } n ? $", next {n:O}" : "")}");
            Console.WriteLine("recipients:");
            foreach (var r in item.Recipients)
            {
                Console.WriteLine($"  {r.Status,-9} <{r.Address}> {r.LastReply}");
            }

            Console.WriteLine("headers:");
            foreach (var line in found.Headers)
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

    static string Shorten(string text, int max) => text.Length <= max ? text : text[..(max - 1)] + "…";

    static GatewayConfig LoadGateway(string? configPath)
    {
        var configuration = new ConfigurationBuilder().AddGatewaySources(configPath).Build();
        return configuration.GetSection(GatewayConfig.SectionName).Get<GatewayConfig>() ?? new GatewayConfig();
    }

    static FileSpool OpenSpool(string? configPath) => OpenSpool(LoadGateway(configPath));

    static FileSpool OpenSpool(GatewayConfig gateway) =>
        new(GatewayPaths.SpoolDirectory(gateway), gateway.Spool.Fsync, TimeProvider.System, NullLogger.Instance);

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
            var gateway = LoadGateway(configPath);
            using var spool = OpenSpool(gateway);
            // One tenant's message on a running gateway: through its admin API (audited, tenant-scoped). The API's routes
            // are per tenant and a queue id names none, so the tenant is read from the message's own file (reading is safe
            // next to a running gateway). An unknown id, a message of no tenant (a DSN) and `retry --all` (no API route)
            // keep the control directory, which answers them as before.
            if (request.Id is { } id && FileSpool.IsValidId(id) && spool.Peek(id) is { Entry.Envelope.TenantId: { } tenant }
                && AdminApiClient.TryConnect(gateway) is { } api)
            {
                using (api)
                {
                    return await ViaApiAsync(api, tenant, request.Verb, id).ConfigureAwait(false);
                }
            }

            var response = await QueueControl.SubmitAsync(spool, request, GatewayAnswerTimeout, TimeProvider.System, CancellationToken.None).ConfigureAwait(false);
            (response.Ok ? Console.Out : Console.Error).WriteLine(response.Ok ? response.Message : "error: " + response.Message);
            return response.Ok ? 0 : 1;
        }
        catch (Exception ex) when (ex is FormatException or FileNotFoundException or InvalidDataException or IOException or UnauthorizedAccessException
            or InvalidOperationException or HttpRequestException)
        {
            Console.Error.WriteLine($"error: {ex.Message}");
            return 1;
        }
    }

    /// <summary>retry or delete through the API, with the sentence the gateway answers (the one the CLI always printed).</summary>
    static async Task<int> ViaApiAsync(AdminApiClient api, string tenant, string verb, string id)
    {
        var path = $"api/v1/tenants/{AdminApiCalls.Segment(tenant)}/queue/{id}";
        var answer = verb == "retry"
            ? await AdminApiCalls.SendAsync(api, HttpMethod.Post, path + "/retry").ConfigureAwait(false)
            : await AdminApiCalls.SendAsync(api, HttpMethod.Delete, path).ConfigureAwait(false);
        if (!answer.Ok)
        {
            Console.Error.WriteLine(answer.IsNoSuchTenant ? AdminApiAnswer.NoSuchTenantError(tenant)
                : answer.Status == System.Net.HttpStatusCode.NotFound ? $"error: {id}: no such message" : $"error: {answer.Problem()}");
            return 1;
        }

        Console.WriteLine(answer.String("message"));
        return 0;
    }
}
