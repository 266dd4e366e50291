using System.CommandLine;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using SmtpGateway.Admin;
using SmtpGateway.Configuration;
using SmtpGateway.Hosting;
using SmtpGateway.Mcp;

namespace SmtpGateway.Cli;

/// <summary>The `smtpgw` command line. Every verb takes --config and has --help.</summary>
public static class GatewayCli
{
    public static RootCommand Build()
    {
        var root = new RootCommand("SmtpGateway: multi-tenant SMTP relay with durable spool and per-tenant isolation.");
        root.Subcommands.Add(Serve());
        root.Subcommands.Add(CheckConfig());
        root.Subcommands.Add(TokenCommands.Build(ConfigOption));
        root.Subcommands.Add(DkimCommands.Dkim(ConfigOption));
        root.Subcommands.Add(DkimCommands.Hsm(ConfigOption));
        var queue = QueueCommands.Build(ConfigOption);
        foreach (var verb in EnvelopeCommands.QueueVerbs(ConfigOption))
        {
            queue.Subcommands.Add(verb);
        }

        root.Subcommands.Add(queue);
        root.Subcommands.Add(EnvelopeCommands.Suppression(ConfigOption));
        root.Subcommands.Add(EnvelopeCommands.Verp(ConfigOption));
        root.Subcommands.Add(VaultCommands.Build(ConfigOption));
        root.Subcommands.Add(AdminCommands.Build(ConfigOption));
        root.Subcommands.Add(McpCommand.Build(ConfigOption));
        return root;
    }

    static Option<string?> ConfigOption() => new("--config", "-c")
    {
        Description = $"Path of the configuration file (default: {GatewayConfiguration.DefaultPath}, else the embedded default).",
    };

    static Command Serve()
    {
        var config = ConfigOption();
        var logFormat = new Option<string?>("--log-format")
        {
            Description = $"Console log format: {GatewayLogging.Simple} (one text line per event) or {GatewayLogging.Json} (one JSON object per line, with scopes); overrides {GatewayLogging.FormatKey}.",
        };
        logFormat.AcceptOnlyFromAmong([.. GatewayLogging.Formats]);
        var command = new Command("serve", "Run the gateway: listeners, spool and delivery, until SIGTERM or Ctrl+C.") { config, logFormat };
        command.SetAction(async (parse, ct) =>
        {
            IHost host;
            try
            {
                // Validate the whole file first, so that every error is listed once, plainly, not as a stack trace
                // from whichever service happens to read its options first.
                var configuration = new ConfigurationBuilder().AddGatewaySources(parse.GetValue(config)).Build();
                var errors = CollectAll(configuration, configuration.GetSection(GatewayConfig.SectionName).Get<GatewayConfig>() ?? new GatewayConfig());
                if (errors.Count > 0)
                {
                    await Console.Error.WriteLineAsync("smtpgw: configuration is invalid:").ConfigureAwait(false);
                    foreach (var error in errors)
                    {
                        await Console.Error.WriteLineAsync($"  {error}").ConfigureAwait(false);
                    }

                    return 2;
                }

                if (AdminServer.CheckCanListen(configuration.GetSection(GatewayConfig.SectionName).Get<GatewayConfig>() ?? new GatewayConfig()) is { } bindError)
                {
                    await Console.Error.WriteLineAsync($"smtpgw: {bindError}").ConfigureAwait(false);
                    return 1;
                }

                host = BuildHost(parse.GetValue(config), parse.GetValue(logFormat));
            }
            catch (Exception ex) when (ex is FileNotFoundException or InvalidDataException or FormatException or InvalidOperationException or OptionsValidationException)
            {
                await Console.Error.WriteLineAsync($"smtpgw: {ex.Message}").ConfigureAwait(false);
                return 2;
            }

            try
            {
                await host.RunAsync(ct).ConfigureAwait(false);
                return 0;
            }
            catch (OptionsValidationException ex)
            {
                await Console.Error.WriteLineAsync("smtpgw: configuration is invalid:").ConfigureAwait(false);
                foreach (var failure in ex.Failures)
                {
                    await Console.Error.WriteLineAsync($"  {failure}").ConfigureAwait(false);
                }

                return 2;
            }
            catch (System.Net.Sockets.SocketException ex)
            {
                await Console.Error.WriteLineAsync($"smtpgw: cannot listen: {ex.Message}").ConfigureAwait(false);
                return 1;
            }
            catch (IOException ex) when (ex.InnerException is System.Net.Sockets.SocketException or Microsoft.AspNetCore.Connections.AddressInUseException)
            {
                // Kestrel wraps a bind failure of the admin endpoint ("Failed to bind to address ...") in an IOException.
                await Console.Error.WriteLineAsync($"smtpgw: cannot listen (Gateway:Admin): {ex.Message}").ConfigureAwait(false);
                return 1;
            }
            finally
            {
                host.Dispose();
            }
        });
        return command;
    }

    static Command CheckConfig()
    {
        var config = ConfigOption();
        var command = new Command("check-config", "Validate the configuration; print every error and exit non-zero if there is any.") { config };
        command.SetAction(parse =>
        {
            GatewayConfig gateway;
            IConfiguration configuration;
            try
            {
                configuration = new ConfigurationBuilder().AddGatewaySources(parse.GetValue(config)).Build();
                gateway = configuration.GetSection(GatewayConfig.SectionName).Get<GatewayConfig>() ?? new GatewayConfig();
            }
            catch (Exception ex) when (ex is FileNotFoundException or InvalidDataException or FormatException or InvalidOperationException)
            {
                Console.Error.WriteLine($"error: {ex.Message}");
                return 1;
            }

            var errors = CollectAll(configuration, gateway);
            foreach (var error in errors)
            {
                Console.Error.WriteLine($"error: {error}");
            }

            if (errors.Count > 0)
            {
                Console.Error.WriteLine($"{errors.Count} error(s); the gateway would refuse to start.");
                return 1;
            }

            Console.WriteLine($"Configuration OK: {gateway.Listeners.Count} listener(s), delivery {gateway.Delivery.Mode}, data in {GatewayPaths.DataDirectory(gateway)}.");
            return 0;
        });
        return command;
    }

    /// <summary>Every configuration error, gateway and tenants alike (the same list the gateway refuses to start with).</summary>
    static List<string> CollectAll(IConfiguration configuration, GatewayConfig gateway)
    {
        var errors = GatewayConfigValidator.Collect(gateway);
        if (GatewayLogging.Validate(configuration) is { } logging)
        {
            errors.Add(logging);
        }

        // The tenant snapshot's own compile: domains, networks, egress, HSM tokens, inbound routes, limits, reputation.
        var tenants = Identity.TenantDirectoryService.Load(configuration, errors);
        if (errors.Count == 0)
        {
            // PIN files others may read, or inside the data directory (the start-up check repeats this after moving legacy
            // PIN files; here nothing is moved, so check-config changes nothing on disk).
            errors.AddRange(new Signing.TenantHsmTokens(GatewayPaths.DataDirectory(gateway), () => tenants, gateway.Hsm)
                .PrepareAtStart(tenants.Tenants.Keys, NullLogger.Instance, moveLegacyFiles: false));
        }

        return errors;
    }

    /// <summary>
    /// The gateway's host: a <see cref="Microsoft.AspNetCore.Builder.WebApplication"/> so that the admin endpoint's handlers
    /// share the one DI container with every stage (ARCHITECTURE §3: never a second private copy), built empty so that
    /// nothing is configured that the gateway did not ask for (no appsettings.json, no default URLs).
    /// </summary>
    public static IHost BuildHost(string? configPath, string? logFormat = null)
    {
        var builder = Microsoft.AspNetCore.Builder.WebApplication.CreateEmptyBuilder(new Microsoft.AspNetCore.Builder.WebApplicationOptions
        {
            ContentRootPath = Directory.GetCurrentDirectory(),
        });
        // Reload on change: tenant edits take effect without a restart (sessions keep their snapshot).
        builder.Configuration.AddGatewaySources(configPath, reloadOnChange: true);
        builder.Logging.AddGatewayConsole(builder.Configuration, logFormat);
        // An empty builder has no console lifetime; without it SIGTERM kills the process instead of draining it.
        builder.Services.AddSingleton<IHostLifetime, Microsoft.Extensions.Hosting.Internal.ConsoleLifetime>();
        builder.Services.AddSmtpGateway(builder.Configuration);
        builder.Services.AddAdmin();
        builder.Services.AddGatewayMcp();
        var gateway = builder.Configuration.GetSection(GatewayConfig.SectionName).Get<GatewayConfig>() ?? new GatewayConfig();
        AdminServer.Configure(builder.WebHost, builder.Services, gateway);
        var app = builder.Build();
        AdminEndpoints.MapAdmin(app);
        app.MapGatewayMcp();
        return app;
    }
}
