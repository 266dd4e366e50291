using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;

namespace SmtpGateway.Hosting;

/// <summary>
/// The console log of <c>smtpgw serve</c>: one line per event, "simple" text for people (the default) or "json" for log
/// shippers (one JSON object per line on stdout, with the scopes: SessionId, TenantId, QueueId). Chosen by
/// <c>--log-format</c>, else <c>Logging:Format</c>; timestamps are UTC either way.
/// </summary>
public static class GatewayLogging
{
    public const string FormatKey = "Logging:Format";
    public const string Simple = "simple";
    public const string Json = "json";

    /// <summary>The formats <c>--log-format</c> and <c>Logging:Format</c> accept.</summary>
    public static IReadOnlyList<string> Formats { get; } = [Simple, Json];

    /// <summary>The error for a <c>Logging:Format</c> the gateway does not know, or null (absent counts as "simple").</summary>
    public static string? Validate(IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var value = configuration[FormatKey];
        return value is null || Formats.Contains(value, StringComparer.OrdinalIgnoreCase)
            ? null
            : $"{FormatKey}: '{value}' is not a log format; use {string.Join(" or ", Formats)}";
    }

    /// <summary>Replaces the logging providers with the console in the chosen format; <paramref name="commandLineFormat"/> wins over the file.</summary>
    public static ILoggingBuilder AddGatewayConsole(this ILoggingBuilder logging, IConfiguration configuration, string? commandLineFormat)
    {
        ArgumentNullException.ThrowIfNull(logging);
        ArgumentNullException.ThrowIfNull(configuration);
        var format = commandLineFormat ?? configuration[FormatKey] ?? Simple;
        logging.ClearProviders();
        // The MCP SDK logs two Information lines per request (each tool call is already an audit event and a metric) and,
        // at Warning, an unknown method or tool name exactly as the client sent it (unbounded client text in the log).
        // Added before the file's rules, so Logging:LogLevel:ModelContextProtocol there still wins (same category, later).
        logging.AddFilter("ModelContextProtocol", LogLevel.Error);
        logging.AddConfiguration(configuration.GetSection("Logging"));
        // ASP.NET Core's hosting scope puts each admin request's raw path (suppressed addresses, vault names) into every
        // line logged during it; the admin audit has the route template instead.
        logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);
        if (string.Equals(format, Json, StringComparison.OrdinalIgnoreCase))
        {
            logging.AddJsonConsole(o =>
            {
                o.IncludeScopes = true;
                o.UseUtcTimestamp = true;
                o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                o.JsonWriterOptions = new System.Text.Json.JsonWriterOptions { Indented = false };
            });
        }
        else
        {
            logging.AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.UseUtcTimestamp = true;
                o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
            });
        }

        return logging;
    }
}
