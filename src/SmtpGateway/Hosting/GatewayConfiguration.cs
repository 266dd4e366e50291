using Microsoft.Extensions.Configuration;

namespace SmtpGateway.Hosting;

/// <summary>Where configuration comes from: the JSON file (or the embedded dev default), then SMTPGW__ environment overrides.</summary>
public static class GatewayConfiguration
{
    public const string DefaultPath = "config/gateway.json";
    public const string EnvironmentPrefix = "SMTPGW__";
    const string EmbeddedName = "SmtpGateway.gateway.json";

    /// <summary>
    /// An explicit path must exist. Without one, config/gateway.json under the current directory is used, or the
    /// copy embedded in the binary when there is none (so `smtpgw serve` works from anywhere in development).
    /// </summary>
    public static IConfigurationBuilder AddGatewaySources(this IConfigurationBuilder builder, string? path, bool reloadOnChange = false)
    {
        if (path is not null)
        {
            var full = Path.GetFullPath(path);
            if (!File.Exists(full))
            {
                throw new FileNotFoundException($"Configuration file '{full}' does not exist.", full);
            }

            builder.AddConfigFile(full, reloadOnChange);
        }
        else if (File.Exists(DefaultPath))
        {
            builder.AddConfigFile(Path.GetFullPath(DefaultPath), reloadOnChange);
        }
        else
        {
            builder.AddJsonStream(EmbeddedDefault());
        }

        // SMTPGW__Gateway__Delivery__Mode=Smarthost → Gateway:Delivery:Mode (the .NET way, ARCHITECTURE section 6).
        builder.AddEnvironmentVariables(EnvironmentPrefix);
        return builder;
    }

    /// <summary>
    /// Reloading watches the file alone (<see cref="ConfigFileProvider"/>), never its directory tree: the data directory
    /// often lies below it.
    /// </summary>
    static void AddConfigFile(this IConfigurationBuilder builder, string full, bool reloadOnChange)
    {
        if (!reloadOnChange)
        {
            builder.AddJsonFile(full, optional: false, reloadOnChange: false);
            return;
        }

        // Not disposed: the host's configuration lives as long as the process, and so does its one watcher.
        var provider = new ConfigFileProvider(full);
        builder.AddJsonFile(source =>
        {
            source.FileProvider = provider;
            source.Path = provider.FileName;
            source.Optional = false;
            source.ReloadOnChange = true;
            // The provider debounces (quiet time after the last event); a second delay would only add latency.
            source.ReloadDelay = 0;
        });
    }

    public static Stream EmbeddedDefault() =>
        typeof(GatewayConfiguration).Assembly.GetManifestResourceStream(EmbeddedName)
        ?? throw new InvalidOperationException("The embedded default configuration is missing from the build.");
}
