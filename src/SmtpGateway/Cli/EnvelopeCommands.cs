using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.Logging;
using SmtpGateway.Bounces;
using SmtpGateway.Envelope;

namespace SmtpGateway.Cli;

/// <summary>
/// `smtpgw suppression list|add|remove`, `smtpgw verp rotate-key` and `smtpgw queue resume|paused`: the per-tenant state
/// that bounces and complaints build up. All of them write files under the data directory that a running gateway re-reads
/// within about a second, so they work the same next to a running gateway and on a stopped one.
/// </summary>
public static class EnvelopeCommands
{
    public static Command Suppression(Func<Option<string?>> configOption)
    {
        var command = new Command("suppression", "A tenant's suppressed recipients (hard bounces, complaints): RCPT to them is refused with 550 5.7.1.");
        command.Subcommands.Add(SuppressionList(configOption()));
        command.Subcommands.Add(SuppressionAdd(configOption()));
        command.Subcommands.Add(SuppressionRemove(configOption()));
        return command;
    }

    public static Command Verp(Func<Option<string?>> configOption)
    {
        var command = new Command("verp", "Per-tenant return paths (VERP) on the tenant's bounce domain.");
        var config = configOption();
        var tenant = TenantOption();
        var grace = new Option<string?>("--grace") { Description = "How long tags made with the old key stay valid (default Gateway:Envelope:ReturnPathKeyGrace, 30d)." };
        var rotate = new Command("rotate-key", "Start signing return paths with a new key; the old one keeps verifying bounces for the grace period.") { config, tenant, grace };
        rotate.SetAction(parse => Run(parse.GetValue(config), parse.GetValue(tenant)!, (cli, t) =>
        {
            var period = parse.GetValue(grace) is { } text ? TokenCommands.ParseDuration(text) : cli.Gateway.Envelope.ReturnPathKeyGrace;
            var time = TimeProvider.System;
            using var logs = CliLog.Open();
            using var keys = CliTenantKeys.Open(cli);
            var store = new VerpKeyStore(cli.DataDirectory, time, keys.Keys, logs.CreateLogger<VerpKeyStore>());
            store.MigrateLegacyKeys();
            var key = store.Rotate(t, period);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{t}: return paths now use key '{key.Id}'; tags made with older keys are accepted until {time.GetUtcNow() + period:yyyy-MM-ddTHH:mm:ssZ}."));
            return 0;
        }));
        command.Subcommands.Add(rotate);
        return command;
    }

    /// <summary>`queue resume` and `queue paused`, added to the queue command.</summary>
    public static IEnumerable<Command> QueueVerbs(Func<Option<string?>> configOption)
    {
        var config = configOption();
        var tenant = TenantOption();
        var resume = new Command("resume", "Release a tenant's outbound queue held for its bounce rate; the rate is judged afresh from now on.") { config, tenant };
        resume.SetAction(parse => Run(parse.GetValue(config), parse.GetValue(tenant)!, (cli, t) =>
        {
            if (!ReputationTracker.Resume(cli.DataDirectory, t))
            {
                Console.Error.WriteLine($"{t} is not paused.");
                return 1;
            }

            Console.WriteLine($"{t}: outbound queue released; held messages go out within a minute.");
            return 0;
        }));
        yield return resume;

        var config2 = configOption();
        var paused = new Command("paused", "List tenants whose outbound queue is held, and why.") { config2 };
        paused.SetAction(parse =>
        {
            var cli = CliConfiguration.Load(parse.GetValue(config2));
            if (cli is null)
            {
                return 2;
            }

            var any = false;
            foreach (var t in cli.Tenants.Tenants.Keys.Order(StringComparer.Ordinal))
            {
                if (ReputationTracker.ReadPause(cli.DataDirectory, t) is not { } pause)
                {
                    continue;
                }

                any = true;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{t}\tpaused {pause.At:yyyy-MM-ddTHH:mm:ssZ}\tbounce rate {pause.Rate * 100:0.0}% (threshold {pause.Threshold * 100:0.0}%; {pause.Bounced} bounced, {pause.Complained} complained, {pause.Delivered} delivered)"));
            }

            if (!any)
            {
                Console.Error.WriteLine("no tenant is paused");
            }

            return 0;
        });
        yield return paused;
    }

    static Command SuppressionList(Option<string?> config)
    {
        var tenant = TenantOption();
        var json = new Option<bool>("--json") { Description = "Print a JSON array for scripts." };
        var command = new Command("list", "List a tenant's suppressed recipients, oldest first.") { config, tenant, json };
        command.SetAction(parse => Run(parse.GetValue(config), parse.GetValue(tenant)!, (cli, t) =>
        {
            using var list = new SuppressionList(cli.DataDirectory, TimeProvider.System);
            var entries = list.List(t);
            if (parse.GetValue(json))
            {
                Console.WriteLine(Bounces.SuppressionList.ToJson(entries));
                return 0;
            }

            Console.WriteLine($"{"ADDRESS",-40} {"REASON",-12} {"SINCE",-20} DETAIL");
            foreach (var e in entries)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{e.Address,-40} {e.Reason,-12} {e.At:yyyy-MM-ddTHH:mm:ssZ} {e.Detail}"));
            }

            Console.Error.WriteLine($"{entries.Count} suppressed recipient(s) for {t}");
            return 0;
        }));
        return command;
    }

    static Command SuppressionAdd(Option<string?> config)
    {
        var tenant = TenantOption();
        var address = AddressOption();
        var command = new Command("add", "Suppress a recipient for a tenant by hand.") { config, tenant, address };
        command.SetAction(parse => Run(parse.GetValue(config), parse.GetValue(tenant)!, (cli, t) =>
        {
            var a = parse.GetValue(address)!;
            if (ManualSuppression.AddressError(a) is { } error)
            {
                throw new FormatException(error);
            }

            // A running gateway: through its API, so its own list changes at once (and the call is audited).
            if (AdminApiClient.TryConnect(cli.Gateway) is { } api)
            {
                using (api)
                {
                    var answer = AdminApiCalls.SendAsync(api, HttpMethod.Post, $"api/v1/tenants/{AdminApiCalls.Segment(t)}/suppression",
                        AdminApiCalls.Json(("address", a))).GetAwaiter().GetResult();
                    if (!answer.Ok)
                    {
                        Console.Error.WriteLine(answer.IsNoSuchTenant ? AdminApiAnswer.NoSuchTenantError(t) : $"error: {answer.Problem()}");
                        return 1;
                    }

                    Console.WriteLine(answer.Status == System.Net.HttpStatusCode.Created ? $"{t}: suppressed {a}" : $"{t}: {a} was already suppressed");
                    return 0;
                }
            }

            using var list = new SuppressionList(cli.DataDirectory, TimeProvider.System);
            Console.WriteLine(ManualSuppression.Add(list, t, a, null) ? $"{t}: suppressed {a}" : $"{t}: {a} was already suppressed");
            return 0;
        }));
        return command;
    }

    static Command SuppressionRemove(Option<string?> config)
    {
        var tenant = TenantOption();
        var address = AddressOption();
        var command = new Command("remove", "Allow a tenant to mail a suppressed recipient again (takes effect on a running gateway within a second).") { config, tenant, address };
        command.SetAction(parse => Run(parse.GetValue(config), parse.GetValue(tenant)!, (cli, t) =>
        {
            var a = parse.GetValue(address)!;
            if (AdminApiClient.TryConnect(cli.Gateway) is { } api)
            {
                using (api)
                {
                    var answer = AdminApiCalls.SendAsync(api, HttpMethod.Delete, $"api/v1/tenants/{AdminApiCalls.Segment(t)}/suppression/{AdminApiCalls.Segment(a)}")
                        .GetAwaiter().GetResult();
                    if (answer.IsNoSuchTenant)
                    {
                        Console.Error.WriteLine(AdminApiAnswer.NoSuchTenantError(t));
                        return 1;
                    }

                    if (answer.Status == System.Net.HttpStatusCode.NotFound)
                    {
                        Console.Error.WriteLine($"{t}: {a} is not suppressed");
                        return 1;
                    }

                    if (!answer.Ok)
                    {
                        Console.Error.WriteLine($"error: {answer.Problem()}");
                        return 1;
                    }

                    Console.WriteLine($"{t}: removed {a}");
                    return 0;
                }
            }

            using var list = new SuppressionList(cli.DataDirectory, TimeProvider.System);
            if (!list.Remove(t, a))
            {
                Console.Error.WriteLine($"{t}: {a} is not suppressed");
                return 1;
            }

            Console.WriteLine($"{t}: removed {a}");
            return 0;
        }));
        return command;
    }

    static Option<string> TenantOption() => new("--tenant") { Description = "Tenant id.", Required = true };

    static Option<string> AddressOption() => new("--address") { Description = "Recipient address.", Required = true };

    static int Run(string? configPath, string tenant, Func<CliConfiguration, string, int> action)
    {
        var cli = CliConfiguration.Load(configPath);
        if (cli is null)
        {
            return 2;
        }

        if (cli.Tenants.Find(tenant) is null)
        {
            Console.Error.WriteLine($"error: unknown tenant '{tenant}'");
            return 2;
        }

        try
        {
            return action(cli, tenant);
        }
        catch (Exception ex) when (ex is FormatException or IOException or UnauthorizedAccessException or Hsm.HsmException or HttpRequestException)
        {
            Console.Error.WriteLine($"error: {ex.Message}");
            return 1;
        }
    }
}
