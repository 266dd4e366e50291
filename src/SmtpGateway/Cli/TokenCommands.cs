using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using SmtpGateway.Audit;
using SmtpGateway.Hsm;
using SmtpGateway.Identity.Tokens;

namespace SmtpGateway.Cli;

/// <summary>`smtpgw token mint|list|revoke|rotate-key`: the control plane for session tokens, on the gateway's data directory.</summary>
public static class TokenCommands
{
    public static Command Build(Func<Option<string?>> configOption)
    {
        var token = new Command("token", "Mint, list and revoke tenant session tokens; rotate a tenant's token key.");
        token.Subcommands.Add(Mint(configOption()));
        token.Subcommands.Add(List(configOption()));
        token.Subcommands.Add(Revoke(configOption()));
        token.Subcommands.Add(RotateKey(configOption()));
        return token;
    }

    static Command Mint(Option<string?> config)
    {
        var tenant = new Option<string>("--tenant") { Description = "Tenant id (the AUTH user name).", Required = true };
        var ttl = new Option<string?>("--ttl") { Description = "Lifetime, e.g. 15m, 2h, 1d (default Gateway:Identity:DefaultTokenTtl, 15m)." };
        var sender = new Option<string[]>("--sender") { Description = "Restrict to this address or domain (repeatable).", AllowMultipleArgumentsPerToken = false };
        var description = new Option<string?>("--description") { Description = "Free text shown by `token list`." };
        var command = new Command("mint", "Mint a token; prints only the token on stdout.") { config, tenant, ttl, sender, description };
        command.SetAction(parse => Run(parse.GetValue(config), ctx =>
        {
            var lifetime = parse.GetValue(ttl) is { } t ? ParseDuration(t) : (TimeSpan?)null;
            var minted = ctx.Tokens.Mint(parse.GetValue(tenant)!, lifetime, parse.GetValue(sender) ?? [], parse.GetValue(description));
            AuditFile.Append(ctx.DataDirectory, new AuditEvent
            {
                Time = ctx.Time.GetUtcNow(), Action = AuditActions.TokenMint, Result = "ok", Tenant = minted.Record.Tenant, TokenId = minted.Record.Id,
                Subject = $"expires {minted.Record.Expires:O}", Listener = "cli",
            });
            Console.WriteLine(minted.Token);
            Console.Error.WriteLine($"minted {minted.Record.Id} for {minted.Record.Tenant}, expires {minted.Record.Expires:O}");
            return 0;
        }));
        return command;
    }

    static Command List(Option<string?> config)
    {
        var tenant = new Option<string?>("--tenant") { Description = "Only this tenant's tokens." };
        var json = new Option<bool>("--json") { Description = "Print a JSON array for scripts." };
        var command = new Command("list", "List tokens (never the token itself): id, tenant, description, senders, issued, expiry, state.") { config, tenant, json };
        command.SetAction(parse => Run(parse.GetValue(config), ctx =>
        {
            var items = ctx.Tokens.List(parse.GetValue(tenant));
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(items.ToList(), TokenJsonContext.Default.ListTokenListItem));
                return 0;
            }

            Console.WriteLine($"{"ID",-22} {"TENANT",-16} {"STATE",-8} {"ISSUED",-20} {"EXPIRES",-20} SENDERS / DESCRIPTION");
            foreach (var i in items)
            {
                var senders = i.Senders.Count == 0 ? "*" : string.Join(",", i.Senders);
                Console.WriteLine($"{i.Id,-22} {i.Tenant,-16} {i.State,-8} {i.Issued:yyyy-MM-ddTHH:mm:ssZ} {i.Expires:yyyy-MM-ddTHH:mm:ssZ} {senders} {i.Description}");
            }

            return 0;
        }));
        return command;
    }

    static Command Revoke(Option<string?> config)
    {
        var id = new Option<string>("--id") { Description = "Token id (from `token list` or the mint message).", Required = true };
        var command = new Command("revoke", "Revoke a token; a running gateway refuses it within a second.") { config, id };
        command.SetAction(parse => Run(parse.GetValue(config), ctx =>
        {
            var record = ctx.Tokens.Revoke(parse.GetValue(id)!);
            AuditFile.Append(ctx.DataDirectory, new AuditEvent
            {
                Time = ctx.Time.GetUtcNow(), Action = AuditActions.TokenRevoke, Result = "ok", Tenant = record.Tenant, TokenId = record.Id, Listener = "cli",
            });
            Console.WriteLine($"revoked {record.Id} ({record.Tenant})");
            return 0;
        }));
        return command;
    }

    static Command RotateKey(Option<string?> config)
    {
        var tenant = new Option<string>("--tenant") { Description = "Tenant id.", Required = true };
        var grace = new Option<string?>("--grace") { Description = "How long tokens under the old key keep working (default Gateway:Identity:KeyRotationGrace)." };
        var command = new Command("rotate-key", "Start signing this tenant's new tokens with a new key; old tokens work until the grace period ends.") { config, tenant, grace };
        command.SetAction(parse => Run(parse.GetValue(config), ctx =>
        {
            var (key, retireAt) = ctx.Tokens.RotateKey(parse.GetValue(tenant)!, parse.GetValue(grace) is { } g ? ParseDuration(g) : null);
            AuditFile.Append(ctx.DataDirectory, new AuditEvent
            {
                Time = ctx.Time.GetUtcNow(), Action = AuditActions.KeyRotate, Result = "ok", Tenant = parse.GetValue(tenant), Subject = $"new key {key.Id}; old keys retire {retireAt:O}", Listener = "cli",
            });
            Console.WriteLine($"tenant {parse.GetValue(tenant)}: new key {key.Id}; tokens under older keys are refused from {retireAt:O}");
            return 0;
        }));
        return command;
    }

    /// <param name="Time">The clock the token service mints and rotates with, so audit times agree with token times.</param>
    sealed record Context(string DataDirectory, TokenService Tokens, TimeProvider Time);

    static int Run(string? configPath, Func<Context, int> action)
    {
        try
        {
            if (CliConfiguration.Load(configPath) is not { } cli)
            {
                return 1;
            }

            var time = TimeProvider.System;
            using var logs = CliLog.Open();
            using var keys = CliTenantKeys.Open(cli);
            var store = new TokenStore(cli.DataDirectory, time, keys.Keys, logs.CreateLogger<TokenStore>());
            // Every verb first finishes any migration of legacy plaintext key files, so running the CLI is enough to get
            // rid of them even before the gateway restarts.
            store.MigrateLegacyKeys();
            var service = new TokenService(store, () => cli.Tenants, cli.Gateway.Identity, time);
            return action(new Context(cli.DataDirectory, service, time));
        }
        catch (Exception ex) when (ex is TokenException or HsmException or FormatException or FileNotFoundException or InvalidDataException or IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"error: {ex.Message}");
            return 1;
        }
    }

    /// <summary>"90s", "15m", "2h", "1d", or a TimeSpan ("00:15:00").</summary>
    public static TimeSpan ParseDuration(string text)
    {
        if (text == "0")
        {
            // `rotate-key --grace 0`: the old key stops at once (starting a lost registry over); a TTL of 0 is refused by Mint.
            return TimeSpan.Zero;
        }

        if (text.Length > 1 && double.TryParse(text[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out var n) && n > 0)
        {
            switch (text[^1])
            {
                case 's': return TimeSpan.FromSeconds(n);
                case 'm': return TimeSpan.FromMinutes(n);
                case 'h': return TimeSpan.FromHours(n);
                case 'd': return TimeSpan.FromDays(n);
            }
        }

        return TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out var span) && span > TimeSpan.Zero
            ? span
            : throw new FormatException($"'{text}' is not a duration (use e.g. 15m, 2h, 1d).");
    }
}
