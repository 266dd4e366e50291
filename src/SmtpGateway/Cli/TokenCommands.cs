using System.CommandLine;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using SmtpGateway.Admin;
using SmtpGateway.Audit;
using SmtpGateway.Hsm;
using SmtpGateway.Identity.Tokens;

namespace SmtpGateway.Cli;

/// <summary>
/// `smtpgw token mint|list|revoke|rotate-key`: the control plane for session tokens. Through the running gateway's admin
/// API when it answers on its socket (so the gateway's own token service makes the change), else on the data directory.
/// </summary>
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
        command.SetAction(parse => Run(parse.GetValue(config),
            (api, _) =>
            {
                var minted = AdminApiRequests.Send<TokenMintResponse>(api, HttpMethod.Post, TokensPath(parse.GetValue(tenant)!),
                    new TokenMintRequest(parse.GetValue(ttl), parse.GetValue(sender) ?? [], parse.GetValue(description)));
                return minted is null ? 1 : Minted(minted.Token, minted.Id, minted.Tenant, minted.Expires);
            },
            ctx =>
            {
                var t = parse.GetValue(tenant)!;
                var check = ctx.Admin.CheckMint(t, parse.GetValue(ttl), parse.GetValue(sender) ?? [], parse.GetValue(description));
                if (!check.Valid)
                {
                    return AdminApiRequests.PrintErrors(check.Errors.Values.SelectMany(e => e));
                }

                var minted = ctx.Admin.Mint(t, check, AuditOrigin.Cli);
                return Minted(minted.Token, minted.Record.Id, minted.Record.Tenant, minted.Record.Expires);
            }));
        return command;
    }

    static int Minted(string token, string id, string tenant, DateTimeOffset expires)
    {
        Console.WriteLine(token);
        Console.Error.WriteLine($"minted {id} for {tenant}, expires {expires:O}");
        return 0;
    }

    static Command List(Option<string?> config)
    {
        var tenant = new Option<string?>("--tenant") { Description = "Only this tenant's tokens." };
        var json = new Option<bool>("--json") { Description = "Print a JSON array for scripts." };
        var command = new Command("list", "List tokens (never the token itself): id, tenant, description, senders, issued, expiry, state.") { config, tenant, json };
        command.SetAction(parse => Run(parse.GetValue(config),
            (api, _) => ApiList(api, parse.GetValue(tenant)) is { } items ? Print(items, parse.GetValue(json)) : 1,
            ctx => Print(ctx.Admin.Tokens.List(parse.GetValue(tenant)), parse.GetValue(json))));
        return command;
    }

    static int Print(IReadOnlyList<TokenListItem> items, bool json)
    {
        if (json)
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
    }

    /// <summary>Every token of the tenant (or of every tenant) from the running gateway, oldest first; null when it refused.</summary>
    static List<TokenListItem>? ApiList(AdminApiClient api, string? tenant)
    {
        IEnumerable<string>? tenants = tenant is null
            ? AdminApiRequests.Send<List<TenantId>>(api, HttpMethod.Get, "api/v1/tenants")?.Select(t => t.Id)
            : [tenant];
        var items = new List<TokenListItem>();
        foreach (var t in tenants ?? [])
        {
            if (AdminApiRequests.Send<List<TokenListItem>>(api, HttpMethod.Get, TokensPath(t)) is not { } list)
            {
                return null;
            }

            items.AddRange(list);
        }

        return tenants is null ? null : [.. items.OrderBy(i => i.Issued)];
    }

    static Command Revoke(Option<string?> config)
    {
        var id = new Option<string>("--id") { Description = "Token id (from `token list` or the mint message).", Required = true };
        var tenant = new Option<string?>("--tenant") { Description = "The token's tenant (optional: found from the id)." };
        var command = new Command("revoke", "Revoke a token; a running gateway refuses it within a second.") { config, id, tenant };
        command.SetAction(parse => Run(parse.GetValue(config),
            (api, _) =>
            {
                var tokenId = parse.GetValue(id)!;
                var owner = parse.GetValue(tenant);
                if (owner is null)
                {
                    if (ApiList(api, null) is not { } all)
                    {
                        return 1;
                    }

                    owner = all.FirstOrDefault(i => i.Id == tokenId)?.Tenant;
                    if (owner is null)
                    {
                        return AdminApiRequests.PrintErrors([$"No token with id '{tokenId}'."]);
                    }
                }

                var revoked = AdminApiRequests.Send<TokenRevokeResponse>(api, HttpMethod.Delete, $"{TokensPath(owner)}/{Uri.EscapeDataString(tokenId)}");
                return revoked is null ? 1 : Revoked(revoked.Id, revoked.Tenant);
            },
            ctx =>
            {
                var tokenId = parse.GetValue(id)!;
                if (parse.GetValue(tenant) is { } owner && ctx.Admin.Find(owner, tokenId) is null)
                {
                    return AdminApiRequests.PrintErrors([$"No token with id '{tokenId}' for tenant '{owner}'."]);
                }

                var record = ctx.Admin.Revoke(tokenId, AuditOrigin.Cli);
                return Revoked(record.Id, record.Tenant);
            }));
        return command;
    }

    static int Revoked(string id, string tenant)
    {
        Console.WriteLine($"revoked {id} ({tenant})");
        return 0;
    }

    static Command RotateKey(Option<string?> config)
    {
        var tenant = new Option<string>("--tenant") { Description = "Tenant id.", Required = true };
        var grace = new Option<string?>("--grace") { Description = "How long tokens under the old key keep working (default Gateway:Identity:KeyRotationGrace)." };
        var command = new Command("rotate-key", "Start signing this tenant's new tokens with a new key; old tokens work until the grace period ends.") { config, tenant, grace };
        command.SetAction(parse => Run(parse.GetValue(config),
            (api, _) =>
            {
                var rotated = AdminApiRequests.Send<TokenRotateKeyResponse>(api, HttpMethod.Post, $"{TokensPath(parse.GetValue(tenant)!)}/rotate-key",
                    new TokenRotateKeyRequest(parse.GetValue(grace)));
                return rotated is null ? 1 : Rotated(rotated.Tenant, rotated.KeyId, rotated.OldKeysRetireAt);
            },
            ctx =>
            {
                var t = parse.GetValue(tenant)!;
                var (key, retireAt) = ctx.Admin.RotateKey(t, parse.GetValue(grace) is { } g ? ParseDuration(g) : null, AuditOrigin.Cli);
                return Rotated(t, key.Id, retireAt);
            }));
        return command;
    }

    static int Rotated(string tenant, string keyId, DateTimeOffset retireAt)
    {
        Console.WriteLine($"tenant {tenant}: new key {keyId}; tokens under older keys are refused from {retireAt:O}");
        return 0;
    }

    static string TokensPath(string tenant) => $"api/v1/tenants/{Uri.EscapeDataString(tenant)}/tokens";

    /// <summary>Just the id of a tenant as GET /api/v1/tenants lists it.</summary>
    sealed record TenantId(string Id);

    /// <param name="Admin">The token control plane on the data directory (no gateway answered on the admin socket).</param>
    sealed record Context(TokenAdministration Admin);

    /// <summary>
    /// Runs <paramref name="api"/> when a gateway answers on the admin socket (the change happens in that process, which
    /// owns the HSM sessions and the registry), else <paramref name="local"/> on the data directory.
    /// </summary>
    static int Run(string? configPath, Func<AdminApiClient, CliConfiguration, int> api, Func<Context, int> local)
    {
        try
        {
            if (CliConfiguration.Load(configPath) is not { } cli)
            {
                return 1;
            }

            using (var client = AdminApiClient.TryConnect(cli.Gateway))
            {
                if (client is not null)
                {
                    return api(client, cli);
                }
            }

            var time = TimeProvider.System;
            using var logs = CliLog.Open();
            using var keys = CliTenantKeys.Open(cli);
            var store = new TokenStore(cli.DataDirectory, time, keys.Keys, logs.CreateLogger<TokenStore>());
            // Every verb first finishes any migration of legacy plaintext key files, so running the CLI is enough to get
            // rid of them even before the gateway restarts.
            store.MigrateLegacyKeys();
            var service = new TokenService(store, () => cli.Tenants, cli.Gateway.Identity, time);
            return local(new Context(new TokenAdministration(service, () => cli.Tenants, cli.Gateway.Identity, new AppendingAuditLog(cli.DataDirectory, time))));
        }
        catch (Exception ex) when (ex is TokenException or HsmException or FormatException or FileNotFoundException or InvalidDataException or IOException
                                       or UnauthorizedAccessException or HttpRequestException or JsonException)
        {
            Console.Error.WriteLine($"error: {ex.Message}");
            return 1;
        }
    }

    /// <summary>"90s", "15m", "2h", "1d", or a TimeSpan ("00:15:00").</summary>
    public static TimeSpan ParseDuration(string text) => TokenAdministration.ParseDuration(text);
}
