using System.CommandLine;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using SmtpGateway.Admin;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Signing;

namespace SmtpGateway.Cli;

/// <summary>
/// `smtpgw hsm init-token` and `smtpgw dkim keygen|dns|rotate`: DKIM key lifecycle in the tenants' HSM tokens. The dkim
/// verbs go through the running gateway's admin API when it answers on its socket, else act on the data directory.
/// </summary>
public static class DkimCommands
{
    public static Command Hsm(Func<Option<string?>> configOption)
    {
        var hsm = new Command("hsm", "HSM token administration (SoftHSM2 in development).");
        var config = configOption();
        var tenant = new Option<string>("--tenant") { Description = "Tenant id.", Required = true };
        var init = new Command("init-token",
            "Create the tenant's SoftHSM2 token if absent. The user PIN is the tenant's configured one (environment variable, systemd credential or PIN file); "
            + "when there is none, a new PIN is written to the tenant's PIN file (mode 0600, directory 0700; default <DataDirectory>.pins/<tenant>.pin).") { config, tenant };
        init.SetAction(parse => Run(parse.GetValue(config), ctx =>
        {
            var t = RequireTenant(ctx, parse.GetValue(tenant)!);
            if (!ctx.Gateway.Hsm.SoftHsm)
            {
                throw new InvalidOperationException("init-token only manages SoftHSM2 tokens (Gateway:Hsm:SoftHsm); provision real HSM tokens with the vendor's tools.");
            }

            string? written = null;
            if (ctx.Tokens.PinSource(t) is null)
            {
                if (!ctx.Gateway.Hsm.AllowPinFiles)
                {
                    throw new InvalidOperationException(
                        $"tenant '{t}' has no PIN and Gateway:Hsm:AllowPinFiles is false: supply it through Tenants:{t}:Hsm:PinEnvironmentVariable or the systemd credential smtpgw-{t}.pin.");
                }

                written = ctx.Tokens.PinFile(t);
                WritePinFile(written);
            }

            var token = ctx.Tokens.Resolve(t);
            var fresh = ctx.SoftHsm!.EnsureToken(token.TokenLabel, Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16)), token.Pin, ctx.Gateway.Hsm.ModulePath);
            Console.WriteLine(fresh
                ? $"created token '{token.TokenLabel}' for {t}; user PIN {(written is null ? $"from {token.Pin.Source}" : $"written to {written}")}"
                : $"token '{token.TokenLabel}' for {t} exists");
            return 0;
        }));
        hsm.Subcommands.Add(init);
        return hsm;
    }

    public static Command Dkim(Func<Option<string?>> configOption)
    {
        var dkim = new Command("dkim", "DKIM keys: generated and used inside each tenant's HSM token.");
        dkim.Subcommands.Add(Keygen(configOption()));
        dkim.Subcommands.Add(Dns(configOption()));
        dkim.Subcommands.Add(Rotate(configOption()));
        return dkim;
    }

    static Command Keygen(Option<string?> config)
    {
        var tenant = new Option<string>("--tenant") { Description = "Tenant id.", Required = true };
        var domain = new Option<string>("--domain") { Description = "Signing domain (d=); must be one of the tenant's domains.", Required = true };
        var selector = new Option<string>("--selector") { Description = "Selector (s=).", Required = true };
        var alg = new Option<string>("--alg") { Description = "ed25519 or rsa2048.", Required = true };
        var command = new Command("keygen", "Generate a key pair in the tenant's token and print the DNS record to publish.") { config, tenant, domain, selector, alg };
        command.SetAction(parse => Run(parse.GetValue(config),
            api =>
            {
                var t = parse.GetValue(tenant)!;
                var created = AdminApiRequests.Send<DkimSelectorView>(api, HttpMethod.Post, $"{DkimPath(t)}/keygen",
                    new DkimKeygenRequest(parse.GetValue(domain), parse.GetValue(selector), parse.GetValue(alg)));
                return created is null ? 1 : Generated(t, created);
            },
            ctx =>
            {
                var t = RequireTenant(ctx, parse.GetValue(tenant)!);
                var errors = new List<string>();
                var d = ctx.Admin.CheckDomain(t, parse.GetValue(domain), errors);
                var s = DkimAdministration.CheckSelector(parse.GetValue(selector), errors);
                var algorithm = DkimAdministration.CheckAlgorithm(parse.GetValue(alg), errors);
                if (errors.Count > 0)
                {
                    return AdminApiRequests.PrintErrors(errors);
                }

                return Generated(t, DkimSelectorView.Of(ctx.Admin.Keygen(t, d!, s!, algorithm!.Value, AuditOrigin.Cli)));
            }));
        return command;
    }

    static int Generated(string tenant, DkimSelectorView created)
    {
        Console.WriteLine(created.Record);
        Console.Error.WriteLine($"{tenant}: {created.Domain} selector {created.Selector} ({Enum.Parse<DkimAlgorithm>(created.Algorithm, ignoreCase: true)}) is {created.State}");
        return 0;
    }

    static Command Dns(Option<string?> config)
    {
        var tenant = new Option<string>("--tenant") { Description = "Tenant id.", Required = true };
        var json = new Option<bool>("--json") { Description = "Print {\"name\": \"TXT value\"} for scripts and verifiers." };
        var command = new Command("dns", "Print every DKIM record the tenant must publish (pending, active and retiring selectors).") { config, tenant, json };
        command.SetAction(parse => Run(parse.GetValue(config),
            api => AdminApiRequests.Send<List<DkimSelectorView>>(api, HttpMethod.Get, DkimPath(parse.GetValue(tenant)!)) is { } all
                ? PrintRecords([.. all.Where(s => s.Published)], parse.GetValue(json))
                : 1,
            ctx => PrintRecords([.. ctx.Admin.Published(RequireTenant(ctx, parse.GetValue(tenant)!)).Select(DkimSelectorView.Of)], parse.GetValue(json))));
        return command;
    }

    static int PrintRecords(IReadOnlyList<DkimSelectorView> published, bool json)
    {
        if (json)
        {
            Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(published.ToDictionary(s => s.Name, s => s.Value), new System.Text.Json.JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
            return 0;
        }

        foreach (var s in published)
        {
            Console.WriteLine($"; {s.State} {s.Algorithm}");
            Console.WriteLine(s.Record);
        }

        return 0;
    }

    static Command Rotate(Option<string?> config)
    {
        var tenant = new Option<string>("--tenant") { Description = "Tenant id.", Required = true };
        var domain = new Option<string>("--domain") { Description = "Signing domain.", Required = true };
        var activate = new Option<bool>("--activate") { Description = "Step 2: pending selectors start signing; the ones they replace retire (still published)." };
        var retire = new Option<bool>("--retire") { Description = "Step 3: withdraw retiring selectors and delete their keys from the HSM." };
        var command = new Command("rotate", "Rotate a domain's DKIM keys in steps: (1) add pending selectors to publish, (2) --activate, (3) --retire.") { config, tenant, domain, activate, retire };
        command.SetAction(parse => Run(parse.GetValue(config),
            api =>
            {
                var rotated = AdminApiRequests.Send<DkimRotateResponse>(api, HttpMethod.Post, $"{DkimPath(parse.GetValue(tenant)!)}/rotate",
                    new DkimRotateRequest(parse.GetValue(domain), parse.GetValue(activate), parse.GetValue(retire)));
                return rotated is null ? 1 : Rotated(rotated.Step == "publish", rotated.Selectors.Select(s => s.Record), rotated.Message);
            },
            ctx =>
            {
                var t = RequireTenant(ctx, parse.GetValue(tenant)!);
                var errors = new List<string>();
                var d = ctx.Admin.CheckDomain(t, parse.GetValue(domain), errors);
                if (parse.GetValue(activate) && parse.GetValue(retire))
                {
                    errors.Add("give at most one of --activate and --retire.");
                }

                if (errors.Count > 0)
                {
                    return AdminApiRequests.PrintErrors(errors);
                }

                var step = parse.GetValue(activate) ? DkimRotateStep.Activate : parse.GetValue(retire) ? DkimRotateStep.Retire : DkimRotateStep.Publish;
                var result = ctx.Admin.Rotate(t, d!, step, AuditOrigin.Cli);
                return Rotated(step == DkimRotateStep.Publish, result.Changed.Select(DkimDnsRecord.Format), result.Message);
            }));
        return command;
    }

    /// <summary>Step 1 prints the records to publish on stdout and what to do next on stderr; the other steps say what they did.</summary>
    static int Rotated(bool publish, IEnumerable<string> records, string message)
    {
        if (!publish)
        {
            Console.WriteLine(message);
            return 0;
        }

        foreach (var record in records)
        {
            Console.WriteLine(record);
        }

        Console.Error.WriteLine(message);
        return 0;
    }

    static string DkimPath(string tenant) => $"api/v1/tenants/{Uri.EscapeDataString(tenant)}/dkim";

    static string RequireTenant(Context ctx, string tenant) =>
        ctx.Tenants.Find(tenant) is null ? throw new InvalidOperationException($"unknown tenant '{tenant}'.") : tenant;

    /// <summary>A new random user PIN in a new file only the gateway's user can read, in a directory only it can enter.</summary>
    static void WritePinFile(string pinFile)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(pinFile))!;
        Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.SetUnixFileMode(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var pin = System.Text.Encoding.ASCII.GetBytes(Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16)));
        try
        {
            using var file = new FileStream(pinFile, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite });
            file.Write(pin);
            file.Flush(flushToDisk: true);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(pin);
        }
    }

    /// <param name="Admin">The DKIM control plane on the data directory and a token session of this process's own.</param>
    sealed record Context(string DataDirectory, GatewayConfig Gateway, TenantSnapshot Tenants, TenantHsmTokens Tokens, DkimAdministration Admin, SoftHsmSetup? SoftHsm);

    static int Run(string? configPath, Func<Context, int> local) => Run(configPath, null, local);

    /// <summary>
    /// Runs <paramref name="api"/> when a gateway answers on the admin socket (it owns the tenants' token sessions and
    /// signs with the selectors, so it makes the change itself), else <paramref name="local"/> on the data directory.
    /// </summary>
    static int Run(string? configPath, Func<AdminApiClient, int>? api, Func<Context, int> local)
    {
        try
        {
            if (CliConfiguration.Load(configPath) is not { } cli)
            {
                return 1;
            }

            if (api is not null)
            {
                using var client = AdminApiClient.TryConnect(cli.Gateway);
                if (client is not null)
                {
                    return api(client);
                }
            }

            var (data, gateway) = (cli.DataDirectory, cli.Gateway);
            var softHsm = gateway.Hsm.SoftHsm ? SoftHsmSetup.Configure(data) : null;
            using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions { ModulePath = gateway.Hsm.ModulePath, MaxSessionsPerToken = gateway.Hsm.MaxSessionsPerToken, KeyCopyRecheckInterval = gateway.Hsm.KeyCopyRecheckInterval });
            var tokens = new TenantHsmTokens(data, () => cli.Tenants, gateway.Hsm);
            // As the gateway does at start: legacy PIN files move out of the data directory, and a PIN file that group or
            // others may read is refused before any token is opened with it.
            using (var loggers = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Warning).AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace)))
            {
                var problems = tokens.PrepareAtStart(cli.Tenants.Tenants.Keys, loggers.CreateLogger("SmtpGateway.Hsm"));
                if (problems.Count > 0)
                {
                    return AdminApiRequests.PrintErrors(problems);
                }
            }

            var time = TimeProvider.System;
            var admin = new DkimAdministration(new DkimKeyStore(data), hsm, tokens, () => cli.Tenants, new AppendingAuditLog(data, time), time);
            return local(new Context(data, gateway, cli.Tenants, tokens, admin, softHsm));
        }
        catch (Exception ex) when (ex is HsmException or SigningException or InvalidOperationException or FormatException or FileNotFoundException or IOException
                                       or ArgumentException or HttpRequestException or System.Text.Json.JsonException)
        {
            Console.Error.WriteLine($"error: {ex.Message}");
            return 1;
        }
    }
}
