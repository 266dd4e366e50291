using System.CommandLine;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Signing;

namespace SmtpGateway.Cli;

/// <summary>`smtpgw hsm init-token` and `smtpgw dkim keygen|dns|rotate`: DKIM key lifecycle in the tenants' HSM tokens.</summary>
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
        command.SetAction(parse => Run(parse.GetValue(config), ctx =>
        {
            var t = RequireTenant(ctx, parse.GetValue(tenant)!);
            var d = RequireDomain(ctx, t, parse.GetValue(domain)!);
            var s = RequireSelector(parse.GetValue(selector)!);
            var algorithm = parse.GetValue(alg)!.ToLowerInvariant() switch
            {
                "ed25519" => DkimAlgorithm.Ed25519,
                "rsa2048" or "rsa" => DkimAlgorithm.Rsa2048,
                var other => throw new FormatException($"--alg must be ed25519 or rsa2048, not '{other}'."),
            };
            var existing = ctx.Store.Selectors(t).ToList();
            if (existing.Any(x => x.Domain == d && x.Selector == s))
            {
                throw new InvalidOperationException($"selector '{s}' already exists for {d}.");
            }

            // The first key of an algorithm for a domain signs at once; later ones wait for `dkim rotate --activate`.
            var state = existing.Any(x => x.Domain == d && x.Algorithm == algorithm && x.State == SelectorState.Active) ? SelectorState.Pending : SelectorState.Active;
            var created = Generate(ctx, t, d, s, algorithm, state);
            ctx.Store.Save(t, [.. existing, created]);
            Audit(ctx, t, AuditActions.DkimKeygen, $"{s}._domainkey.{d} {algorithm} {state}");
            Console.WriteLine(DkimDnsRecord.Format(created));
            Console.Error.WriteLine($"{t}: {d} selector {s} ({algorithm}) is {state.ToString().ToLowerInvariant()}");
            return 0;
        }));
        return command;
    }

    static Command Dns(Option<string?> config)
    {
        var tenant = new Option<string>("--tenant") { Description = "Tenant id.", Required = true };
        var json = new Option<bool>("--json") { Description = "Print {\"name\": \"TXT value\"} for scripts and verifiers." };
        var command = new Command("dns", "Print every DKIM record the tenant must publish (pending, active and retiring selectors).") { config, tenant, json };
        command.SetAction(parse => Run(parse.GetValue(config), ctx =>
        {
            var t = RequireTenant(ctx, parse.GetValue(tenant)!);
            var published = ctx.Store.Selectors(t).Where(s => s.State != SelectorState.Retired).ToList();
            if (parse.GetValue(json))
            {
                Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(published.ToDictionary(DkimDnsRecord.Name, DkimDnsRecord.Value), new System.Text.Json.JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
                return 0;
            }

            foreach (var s in published)
            {
                Console.WriteLine($"; {s.State.ToString().ToLowerInvariant()} {s.Algorithm.ToString().ToLowerInvariant()}");
                Console.WriteLine(DkimDnsRecord.Format(s));
            }

            return 0;
        }));
        return command;
    }

    static Command Rotate(Option<string?> config)
    {
        var tenant = new Option<string>("--tenant") { Description = "Tenant id.", Required = true };
        var domain = new Option<string>("--domain") { Description = "Signing domain.", Required = true };
        var activate = new Option<bool>("--activate") { Description = "Step 2: pending selectors start signing; the ones they replace retire (still published)." };
        var retire = new Option<bool>("--retire") { Description = "Step 3: withdraw retiring selectors and delete their keys from the HSM." };
        var command = new Command("rotate", "Rotate a domain's DKIM keys in steps: (1) add pending selectors to publish, (2) --activate, (3) --retire.") { config, tenant, domain, activate, retire };
        command.SetAction(parse => Run(parse.GetValue(config), ctx =>
        {
            var t = RequireTenant(ctx, parse.GetValue(tenant)!);
            var d = RequireDomain(ctx, t, parse.GetValue(domain)!);
            var now = ctx.Time.GetUtcNow();
            var selectors = ctx.Store.Selectors(t).ToList();
            if (parse.GetValue(activate))
            {
                var pending = selectors.Where(s => s.Domain == d && s.State == SelectorState.Pending).ToList();
                if (pending.Count == 0)
                {
                    throw new InvalidOperationException($"no pending selector for {d}; run `dkim rotate --tenant {t} --domain {d}` first.");
                }

                selectors = selectors.Select(s =>
                    s.Domain == d && s.State == SelectorState.Active && pending.Any(p => p.Algorithm == s.Algorithm) ? s with { State = SelectorState.Retiring, StateChanged = now }
                    : s.Domain == d && s.State == SelectorState.Pending ? s with { State = SelectorState.Active, StateChanged = now }
                    : s).ToList();
                ctx.Store.Save(t, selectors);
                Audit(ctx, t, AuditActions.DkimRotate, $"{d}: activated {string.Join(",", pending.Select(p => p.Selector))}");
                Console.WriteLine($"{d}: now signing with {string.Join(", ", pending.Select(p => p.Selector))}; the replaced selectors stay published until `--retire`.");
                return 0;
            }

            if (parse.GetValue(retire))
            {
                var retiring = selectors.Where(s => s.Domain == d && s.State == SelectorState.Retiring).ToList();
                foreach (var s in retiring)
                {
                    ctx.Hsm.DeleteKeyPair(ctx.Tokens.Resolve(t), s.KeyLabel);
                }

                selectors = selectors.Select(s => retiring.Contains(s) ? s with { State = SelectorState.Retired, StateChanged = now } : s).ToList();
                ctx.Store.Save(t, selectors);
                Audit(ctx, t, AuditActions.DkimRotate, $"{d}: retired {string.Join(",", retiring.Select(p => p.Selector))}");
                Console.WriteLine($"{d}: retired {retiring.Count} selector(s); remove their TXT records.");
                return 0;
            }

            var active = selectors.Where(s => s.Domain == d && s.State == SelectorState.Active).ToList();
            if (active.Count == 0)
            {
                throw new InvalidOperationException($"{d} has no active selector; create one with `dkim keygen`.");
            }

            var added = new List<DkimSelector>();
            foreach (var algorithm in active.Select(a => a.Algorithm).Distinct())
            {
                if (selectors.Any(s => s.Domain == d && s.Algorithm == algorithm && s.State == SelectorState.Pending))
                {
                    continue;
                }

                var name = $"{(algorithm == DkimAlgorithm.Ed25519 ? "ed" : "rsa")}{now:yyyyMMddHHmm}";
                added.Add(Generate(ctx, t, d, name, algorithm, SelectorState.Pending));
            }

            ctx.Store.Save(t, [.. selectors, .. added]);
            Audit(ctx, t, AuditActions.DkimRotate, $"{d}: pending {string.Join(",", added.Select(p => p.Selector))}");
            foreach (var s in added)
            {
                Console.WriteLine(DkimDnsRecord.Format(s));
            }

            Console.Error.WriteLine($"Publish the record(s) above, wait for DNS (at least the old TTL), then: smtpgw dkim rotate --tenant {t} --domain {d} --activate");
            return 0;
        }));
        return command;
    }

    static DkimSelector Generate(Context ctx, string tenant, string domain, string selector, DkimAlgorithm algorithm, SelectorState state)
    {
        var label = $"dkim:{domain}:{selector}";
        var key = ctx.Hsm.GenerateKeyPair(ctx.Tokens.Resolve(tenant), label, algorithm == DkimAlgorithm.Ed25519 ? DkimKeyAlgorithm.Ed25519 : DkimKeyAlgorithm.Rsa2048);
        return new DkimSelector(domain, selector, algorithm, state, label, Convert.ToBase64String(key.Value), ctx.Time.GetUtcNow(), null);
    }

    static void Audit(Context ctx, string tenant, string action, string subject) =>
        AuditFile.Append(ctx.DataDirectory, new AuditEvent { Time = ctx.Time.GetUtcNow(), Action = action, Result = "ok", Tenant = tenant, Subject = subject, Listener = "cli" });

    static string RequireTenant(Context ctx, string tenant) =>
        ctx.Tenants.Find(tenant) is null ? throw new InvalidOperationException($"unknown tenant '{tenant}'.") : tenant;

    static string RequireDomain(Context ctx, string tenant, string domain)
    {
        var d = DomainName.Normalize(domain) ?? throw new FormatException($"'{domain}' is not a domain name.");
        return ctx.Tenants.Find(tenant)!.OwnsSendingDomain(d) ? d : throw new InvalidOperationException($"{domain} is not a domain of tenant '{tenant}'.");
    }

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

    static string RequireSelector(string selector) =>
        selector.Length is > 0 and <= 63 && selector.All(c => char.IsAsciiLetterOrDigit(c) || c == '-')
            ? selector.ToLowerInvariant()
            : throw new FormatException($"'{selector}' is not a selector (letters, digits and '-', at most 63).");

    /// <param name="Time">The clock for selector state changes (rotation) and audit times: the system clock in the CLI.</param>
    sealed record Context(string DataDirectory, GatewayConfig Gateway, TenantSnapshot Tenants, TenantHsmTokens Tokens, DkimKeyStore Store, IHsm Hsm, SoftHsmSetup? SoftHsm, TimeProvider Time);

    static int Run(string? configPath, Func<Context, int> action)
    {
        try
        {
            if (CliConfiguration.Load(configPath) is not { } cli)
            {
                return 1;
            }

            var (data, gateway) = (cli.DataDirectory, cli.Gateway);
            var softHsm = gateway.Hsm.SoftHsm ? SoftHsmSetup.Configure(data) : null;
            using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions { ModulePath = gateway.Hsm.ModulePath, MaxSessionsPerToken = gateway.Hsm.MaxSessionsPerToken });
            var tokens = new TenantHsmTokens(data, () => cli.Tenants, gateway.Hsm);
            // As the gateway does at start: legacy PIN files move out of the data directory, and a PIN file that group or
            // others may read is refused before any token is opened with it.
            using (var loggers = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Warning).AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace)))
            {
                var problems = tokens.PrepareAtStart(cli.Tenants.Tenants.Keys, loggers.CreateLogger("SmtpGateway.Hsm"));
                if (problems.Count > 0)
                {
                    foreach (var problem in problems)
                    {
                        Console.Error.WriteLine($"error: {problem}");
                    }

                    return 1;
                }
            }

            return action(new Context(data, gateway, cli.Tenants, tokens, new DkimKeyStore(data), hsm, softHsm, TimeProvider.System));
        }
        catch (Exception ex) when (ex is HsmException or SigningException or InvalidOperationException or FormatException or FileNotFoundException or IOException or ArgumentException)
        {
            Console.Error.WriteLine($"error: {ex.Message}");
            return 1;
        }
    }
}
