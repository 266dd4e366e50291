using System.CommandLine;
using System.Text.Json;
using SmtpGateway.Admin;
using SmtpGateway.Audit;

namespace SmtpGateway.Cli;

[System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[System.Text.Json.Serialization.JsonSerializable(typeof(List<AdminKeyListItem>))]
internal sealed partial class AdminKeyListJsonContext : System.Text.Json.Serialization.JsonSerializerContext;

/// <summary>A key as listed: never the key or its hash.</summary>
internal sealed record AdminKeyListItem(string Id, string Scope, string? Tenant, string? Description, DateTimeOffset Created, DateTimeOffset? Revoked);

/// <summary>
/// `smtpgw admin key create|list|revoke`: the admin API's bearer keys, written to the data directory's key file (a
/// running gateway re-reads it on the next request, so these need no running gateway and no API).
/// </summary>
public static class AdminCommands
{
    public static Command Build(Func<Option<string?>> configOption)
    {
        var key = new Command("key", "Create, list and revoke admin API keys (stored only as hashes).");
        key.Subcommands.Add(Create(configOption()));
        key.Subcommands.Add(List(configOption()));
        key.Subcommands.Add(Revoke(configOption()));
        var admin = new Command("admin", "The admin HTTP endpoint's keys.");
        admin.Subcommands.Add(key);
        return admin;
    }

    static Command Create(Option<string?> config)
    {
        var op = new Option<bool>("--operator") { Description = "A key for every tenant and the gateway itself." };
        var tenant = new Option<string?>("--tenant") { Description = "A key for this tenant's resources only." };
        var description = new Option<string?>("--description") { Description = "Free text shown by `admin key list`." };
        var command = new Command("create", "Create a key; prints it once on stdout (it is stored only as a SHA-256).") { config, op, tenant, description };
        command.SetAction(parse => Run(parse.GetValue(config), (cli, store) =>
        {
            var t = parse.GetValue(tenant);
            if (parse.GetValue(op) == (t is not null))
            {
                throw new FormatException("give exactly one of --operator and --tenant T.");
            }

            if (t is not null && cli.Tenants.Find(t) is null)
            {
                throw new InvalidOperationException($"unknown tenant '{t}'.");
            }

            var created = store.Create(t, parse.GetValue(description));
            AuditFile.Append(cli.DataDirectory, new AuditEvent
            {
                Time = TimeProvider.System.GetUtcNow(), Action = AuditActions.Admin, Result = "ok", Tenant = t, TokenId = created.Record.Id,
                Subject = "admin key create", Listener = "cli",
            });
            Console.WriteLine(created.Key);
            Console.Error.WriteLine($"created {created.Record.Scope} key {created.Record.Id}{(t is null ? "" : $" for {t}")}");
            return 0;
        }));
        return command;
    }

    static Command List(Option<string?> config)
    {
        var json = new Option<bool>("--json") { Description = "Print a JSON array for scripts." };
        var command = new Command("list", "List keys: id, scope, tenant, description, created, revoked (never the key).") { config, json };
        command.SetAction(parse => Run(parse.GetValue(config), (_, store) =>
        {
            var items = store.List().Select(k => new AdminKeyListItem(k.Id, k.Scope, k.Tenant, k.Description, k.Created, k.Revoked)).ToList();
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(items, AdminKeyListJsonContext.Default.ListAdminKeyListItem));
                return 0;
            }

            Console.WriteLine($"{"ID",-14} {"SCOPE",-9} {"TENANT",-16} {"CREATED",-20} {"STATE",-8} DESCRIPTION");
            foreach (var k in items)
            {
                Console.WriteLine($"{k.Id,-14} {k.Scope,-9} {k.Tenant ?? "-",-16} {k.Created:yyyy-MM-ddTHH:mm:ssZ} {(k.Revoked is null ? "active" : "revoked"),-8} {k.Description}");
            }

            return 0;
        }));
        return command;
    }

    static Command Revoke(Option<string?> config)
    {
        var id = new Argument<string>("id") { Description = "Key id (from `admin key list`)." };
        var command = new Command("revoke", "Revoke a key; a running gateway refuses it from its next request.") { config, id };
        command.SetAction(parse => Run(parse.GetValue(config), (cli, store) =>
        {
            var record = store.Revoke(parse.GetValue(id)!) ?? throw new InvalidOperationException($"no admin key '{parse.GetValue(id)}'.");
            AuditFile.Append(cli.DataDirectory, new AuditEvent
            {
                Time = TimeProvider.System.GetUtcNow(), Action = AuditActions.Admin, Result = "ok", Tenant = record.Tenant, TokenId = record.Id,
                Subject = "admin key revoke", Listener = "cli",
            });
            Console.Error.WriteLine($"revoked {record.Id}");
            return 0;
        }));
        return command;
    }

    static int Run(string? configPath, Func<CliConfiguration, AdminKeyStore, int> action)
    {
        try
        {
            var cli = CliConfiguration.Load(configPath);
            return cli is null ? 1 : action(cli, new AdminKeyStore(cli.DataDirectory, TimeProvider.System));
        }
        catch (Exception ex) when (ex is FormatException or FileNotFoundException or InvalidDataException or IOException or UnauthorizedAccessException
                                   or InvalidOperationException or JsonException)
        {
            Console.Error.WriteLine($"error: {ex.Message}");
            return 1;
        }
    }
}
