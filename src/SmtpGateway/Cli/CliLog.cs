using Microsoft.Extensions.Logging;

namespace SmtpGateway.Cli;

/// <summary>
/// Log lines of the stores a CLI verb uses (key migration, destroyed keys), on stderr: stdout carries the verb's own
/// output, which scripts read (`token mint` prints only the token). Disposed at the end of the verb, which flushes the
/// console logger's queue before the process exits.
/// </summary>
internal static class CliLog
{
    public static ILoggerFactory Open() => LoggerFactory.Create(builder => builder
        .SetMinimumLevel(LogLevel.Information)
        .AddSimpleConsole(o => o.SingleLine = true)
        .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace));
}
