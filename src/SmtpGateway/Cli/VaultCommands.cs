using System.CommandLine;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging.Abstractions;
using SmtpGateway.Audit;
using SmtpGateway.Hsm;
using SmtpGateway.Vault;

namespace SmtpGateway.Cli;

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, WriteIndented = true)]
[JsonSerializable(typeof(List<VaultListItem>))]
internal sealed partial class VaultCliJsonContext : JsonSerializerContext;

/// <summary>What the vault verbs take from their process: stdin, output, and the tenants' HSM keys. Tests substitute it.</summary>
/// <param name="Keys">The tenants' key-encryption keys for a loaded configuration, and what to dispose after.</param>
internal sealed record VaultCliEnvironment(Func<Stream> Stdin, bool StdinIsTerminal, TextWriter Out, TextWriter Error, Func<CliConfiguration, (ITenantKeys Keys, IDisposable Owner)> Keys)
{
    public static VaultCliEnvironment Console => new(System.Console.OpenStandardInput, !System.Console.IsInputRedirected, System.Console.Out, System.Console.Error, HsmKeys);

    /// <summary>The real keys: each tenant's own HSM token (SoftHSM2 in development), as DKIM signing uses.</summary>
    static (ITenantKeys, IDisposable) HsmKeys(CliConfiguration cli)
    {
        var keys = CliTenantKeys.Open(cli);
        return (keys.Keys, keys);
    }
}

/// <summary>
/// `smtpgw vault set|list|rotate|delete` (spec-11 §2): a tenant's upstream credentials. Secrets are read from stdin as
/// bytes only (never argv, never the environment, never a string) and zeroed after they are sealed. The files are
/// re-read by a running gateway within about a second.
/// </summary>
public static class VaultCommands
{
    /// <summary>Stdin is one or two lines of secret; anything longer is a mistake (a file piped by accident), not a secret.</summary>
    internal const int MaxStdinBytes = 64 * 1024;

    public static Command Build(Func<Option<string?>> configOption) => Build(configOption, VaultCliEnvironment.Console);

    internal static Command Build(Func<Option<string?>> configOption, VaultCliEnvironment env)
    {
        var vault = new Command("vault", "A tenant's upstream credentials (smarthost passwords, OAuth 2.0 tokens), encrypted under a key in the tenant's HSM token.");
        vault.Subcommands.Add(Store(configOption(), env, rotate: false));
        vault.Subcommands.Add(Store(configOption(), env, rotate: true));
        vault.Subcommands.Add(List(configOption(), env));
        vault.Subcommands.Add(Delete(configOption(), env));
        return vault;
    }

    /// <summary>`set` and `rotate` take the same secret options.</summary>
    static Command Store(Option<string?> config, VaultCliEnvironment env, bool rotate)
    {
        var tenant = TenantOption();
        var name = NameOption();
        var user = new Option<string>("--user") { Description = "User name for AUTH (the authcid; for XOAUTH2 the mailbox).", Required = true };
        var password = new Option<bool>("--password-stdin") { Description = "The secret is a password: the first line of stdin." };
        var accessToken = new Option<bool>("--oauth2-access-token-stdin") { Description = "The secret is an OAuth 2.0 access token: the first line of stdin." };
        var refreshToken = new Option<bool>("--oauth2-refresh-token-stdin") { Description = "The secret is an OAuth 2.0 refresh token: line 1 of stdin; line 2, if any, is the client secret." };
        var endpoint = new Option<string?>("--token-endpoint") { Description = "https URL of the token endpoint (with --oauth2-refresh-token-stdin)." };
        var clientId = new Option<string?>("--client-id") { Description = "OAuth 2.0 client id (with --oauth2-refresh-token-stdin)." };
        var grace = new Option<string?>("--grace") { Description = "How long the previous version stays usable (default Gateway:Vault:RotationGrace, 10m); then it is destroyed." };
        var command = rotate
            ? new Command("rotate", "Store a new version; new connections use it at once, the previous one stays usable for --grace and is then destroyed.")
            : new Command("set", "Store a new credential (version 1); refused when the name exists (use rotate).");
        foreach (var option in new Option[] { config, tenant, name, user, password, accessToken, refreshToken, endpoint, clientId })
        {
            command.Options.Add(option);
        }

        if (rotate)
        {
            command.Options.Add(grace);
        }

        command.SetAction(parse => Run(env, parse.GetValue(config), parse.GetValue(tenant)!, viaApi: true, (cli, door, t) =>
        {
            var givenGrace = rotate && parse.GetValue(grace) is { } text ? TokenCommands.ParseDuration(text) : (TimeSpan?)null;
            var period = givenGrace ?? cli.Gateway.Vault.RotationGrace;
            var kinds = new[] { parse.GetValue(password), parse.GetValue(accessToken), parse.GetValue(refreshToken) }.Count(x => x);
            if (kinds != 1)
            {
                throw new FormatException("give exactly one of --password-stdin, --oauth2-access-token-stdin, --oauth2-refresh-token-stdin (no secret is ever taken from the command line)");
            }

            var refresh = parse.GetValue(refreshToken);
            if (refresh != (parse.GetValue(endpoint) is not null) || refresh != (parse.GetValue(clientId) is not null))
            {
                throw new FormatException("--token-endpoint and --client-id go with --oauth2-refresh-token-stdin, and it needs both");
            }

            // Refused before stdin is read, so a wrong URL costs no secret typed in.
            if (refresh && OAuth2TokenClient.EndpointError(parse.GetValue(endpoint)) is { } endpointError)
            {
                throw new FormatException($"--token-endpoint: {endpointError}");
            }

            var kind = parse.GetValue(password) ? VaultSecretKind.Password : parse.GetValue(accessToken) ? VaultSecretKind.AccessToken : VaultSecretKind.RefreshToken;
            if (env.StdinIsTerminal)
            {
                env.Error.WriteLine(refresh ? "Refresh token, then Enter; optionally the client secret, then Enter; then Ctrl+D:" : "Secret, then Enter, then Ctrl+D:");
            }

            var (first, second) = ReadSecretLines(env.Stdin());
            if (door.Api is { } api)
            {
                return StoreViaApi(env, api, t, parse.GetValue(name)!, kind, parse.GetValue(user)!, first, second, parse.GetValue(endpoint), parse.GetValue(clientId),
                    rotate, givenGrace);
            }

            using var secret = VaultOperations.Secret(kind, parse.GetValue(user)!, first, second, parse.GetValue(endpoint), parse.GetValue(clientId));
            var stored = VaultOperations.Store(door.Vault!, t, parse.GetValue(name)!, secret, rotate ? period : null);
            env.Out.WriteLine(stored.Describe(t));
            return 0;
        }));
        return command;
    }

    /// <summary>
    /// set or rotate through a running gateway's API: the secret goes in the request body over the 0700 local socket, from
    /// stdin's bytes into a pinned buffer, all zeroed after; the gateway stores, verifies and audits it (channel api).
    /// </summary>
    static int StoreViaApi(VaultCliEnvironment env, AdminApiClient api, string tenant, string name, VaultSecretKind kind, string user, byte[] first, byte[]? second,
        string? tokenEndpoint, string? clientId, bool rotate, TimeSpan? grace)
    {
        AdminApiAnswer answer;
        try
        {
            var (body, length) = VaultSecretBody.Write(kind, user, first, kind == VaultSecretKind.RefreshToken ? second : null, tokenEndpoint, clientId, grace);
            try
            {
                var path = $"api/v1/tenants/{AdminApiCalls.Segment(tenant)}/vault/{AdminApiCalls.Segment(name)}";
                answer = AdminApiCalls.SendAsync(api, rotate ? HttpMethod.Post : HttpMethod.Put, rotate ? path + "/rotate" : path, body, length).GetAwaiter().GetResult();
            }
            finally
            {
                CryptographicOperations.ZeroMemory(body);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(first);
            if (second is not null)
            {
                CryptographicOperations.ZeroMemory(second);
            }
        }

        if (!answer.Ok)
        {
            env.Error.WriteLine(answer.IsNoSuchTenant ? AdminApiAnswer.NoSuchTenantError(tenant) : $"error: {answer.Problem()}");
            return 1;
        }

        env.Out.WriteLine(answer.Body.Deserialize<VaultStored>(JsonSerializerOptions.Web)!.Describe(tenant));
        return 0;
    }

    static Command List(Option<string?> config, VaultCliEnvironment env)
    {
        var tenant = TenantOption();
        var json = new Option<bool>("--json") { Description = "Print a JSON array for scripts." };
        var command = new Command("list", "List a tenant's credentials: names, versions, kind, user, created, retirement. Never a secret.") { config, tenant, json };
        command.SetAction(parse => Run(env, parse.GetValue(config), parse.GetValue(tenant)!, viaApi: false, (_, door, t) =>
        {
            var items = door.Vault!.List(t).Select(VaultListItem.From).ToList();
            if (parse.GetValue(json))
            {
                env.Out.WriteLine(JsonSerializer.Serialize(items, VaultCliJsonContext.Default.ListVaultListItem));
                return 0;
            }

            env.Out.WriteLine($"{"NAME",-24} {"VERSION",-7} {"KIND",-8} {"USER",-32} {"CREATED",-20} {"RETIRES",-20} DETAIL");
            foreach (var i in items)
            {
                var detail = i.Grant is null ? "" : $"{i.Grant}{(i.TokenEndpoint is null ? "" : $" {i.TokenEndpoint} client {i.ClientId}")}";
                env.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{i.Name,-24} {i.Version,-7} {i.Kind,-8} {i.User,-32} {i.Created:yyyy-MM-ddTHH:mm:ssZ} {(i.RetiresAt is { } r ? r.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture) : "-"),-20} {detail}"));
            }

            env.Error.WriteLine($"{items.Count} version(s) for {t}");
            return 0;
        }));
        return command;
    }

    static Command Delete(Option<string?> config, VaultCliEnvironment env)
    {
        var tenant = TenantOption();
        var name = NameOption();
        var version = new Option<int?>("--version") { Description = "Only this version (default: every version of the name)." };
        var command = new Command("delete", "Destroy a credential, or one version of it; a running gateway stops using it within a second.") { config, tenant, name, version };
        command.SetAction(parse => Run(env, parse.GetValue(config), parse.GetValue(tenant)!, viaApi: true, (_, door, t) =>
        {
            var n = parse.GetValue(name)!;
            if (door.Api is { } api)
            {
                var path = $"api/v1/tenants/{AdminApiCalls.Segment(t)}/vault/{AdminApiCalls.Segment(n)}"
                    + (parse.GetValue(version) is { } only ? string.Create(CultureInfo.InvariantCulture, $"?version={only}") : "");
                var answer = AdminApiCalls.SendAsync(api, HttpMethod.Delete, path).GetAwaiter().GetResult();
                if (!answer.Ok)
                {
                    // 404 is the CLI's own "no credential" line; anything else an error.
                    env.Error.WriteLine(answer.IsNoSuchTenant ? AdminApiAnswer.NoSuchTenantError(t)
                        : answer.Status == System.Net.HttpStatusCode.NotFound ? $"{t}: {answer.Problem()}" : $"error: {answer.Problem()}");
                    return 1;
                }

                env.Out.WriteLine($"{t}: destroyed {answer.Body.GetProperty("removed").GetInt32()} version(s) of {n}");
                return 0;
            }

            var removed = door.Vault!.Delete(t, n, parse.GetValue(version));
            if (removed == 0)
            {
                env.Error.WriteLine(parse.GetValue(version) is { } v ? $"{t}: {n} has no version {v}" : $"{t}: no credential '{n}'");
                return 1;
            }

            env.Out.WriteLine($"{t}: destroyed {removed} version(s) of {n}");
            return 0;
        }));
        return command;
    }

    /// <summary>
    /// Line 1 and (when present and not empty) line 2 of stdin, each without its CR/LF, in arrays the caller owns and
    /// zeroes. Read as bytes: the secret never becomes a string. Empty input, or an empty first line, is refused.
    /// </summary>
    internal static (byte[] First, byte[]? Second) ReadSecretLines(Stream input)
    {
        var buffer = SecretBuffer.Allocate(MaxStdinBytes + 1);
        try
        {
            var length = 0;
            int read;
            while (length < buffer.Length && (read = input.Read(buffer, length, buffer.Length - length)) > 0)
            {
                length += read;
            }

            if (length > MaxStdinBytes)
            {
                throw new FormatException($"stdin holds more than {MaxStdinBytes} bytes; it should hold the secret on one line");
            }

            var data = buffer.AsSpan(0, length);
            var firstEnd = data.IndexOf((byte)'\n');
            var first = Line(firstEnd < 0 ? data : data[..firstEnd]);
            if (first.Length == 0)
            {
                throw new FormatException("stdin is empty: the secret is read from its first line");
            }

            var rest = firstEnd < 0 ? [] : data[(firstEnd + 1)..];
            var secondEnd = rest.IndexOf((byte)'\n');
            var second = Line(secondEnd < 0 ? rest : rest[..secondEnd]);
            return (first.ToArray(), second.IsEmpty ? null : second.ToArray());
        }
        finally
        {
            CryptographicOperations.ZeroMemory(buffer);
        }

        static Span<byte> Line(Span<byte> line) => line.TrimEnd((byte)'\r');
    }

    static Option<string> TenantOption() => new("--tenant") { Description = "Tenant id.", Required = true };

    static Option<string> NameOption() => new("--name") { Description = "Credential name (the one Tenants:<id>:Egress:Smarthost:Credential names).", Required = true };

    /// <summary>Where a verb acts: a running gateway's API (set, rotate, delete when it answers), or the vault files themselves.</summary>
    sealed record VaultDoor(AdminApiClient? Api, CredentialVault? Vault);

    static int Run(VaultCliEnvironment env, string? configPath, string tenant, bool viaApi, Func<CliConfiguration, VaultDoor, string, int> action)
    {
        try
        {
            if (CliConfiguration.Load(configPath) is not { } cli)
            {
                return 2;
            }

            if (cli.Tenants.Find(tenant) is null)
            {
                env.Error.WriteLine($"error: unknown tenant '{tenant}'");
                return 2;
            }

            // A running gateway changes its vault itself (audited with channel api); the HSM keys are then its business.
            if (viaApi && AdminApiClient.TryConnect(cli.Gateway) is { } api)
            {
                using (api)
                {
                    return action(cli, new VaultDoor(api, null), tenant);
                }
            }

            var (keys, owner) = env.Keys(cli);
            using (owner)
            {
                var time = TimeProvider.System;
                // The CLI never refreshes tokens; the handler is there because the vault is one type for both processes.
                using var vault = new CredentialVault(cli.DataDirectory, keys, new AppendingAuditLog(cli.DataDirectory, time), time, cli.Gateway.Vault,
                    OAuth2TokenClient.CreateHandler(null), NullLogger<CredentialVault>.Instance);
                return action(cli, new VaultDoor(null, vault), tenant);
            }
        }
        catch (Exception ex) when (ex is FormatException or ArgumentException or InvalidOperationException or InvalidDataException or IOException
            or UnauthorizedAccessException or HsmException or UpstreamCredentialException or HttpRequestException or JsonException)
        {
            env.Error.WriteLine($"error: {ex.Message}");
            return 1;
        }
    }
}
