using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace SmtpGateway.Tests.Fakes;

/// <summary>Keeps every formatted log line, with its exception, so tests can prove what never appears.</summary>
internal sealed class CapturingLogger : ILogger
{
    public ConcurrentQueue<(LogLevel Level, string Message)> Entries { get; } = new();

    public IEnumerable<string> Lines => Entries.Select(e => e.Message);

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        var line = formatter(state, exception) + (exception is null ? "" : " " + exception);
        if (state is IEnumerable<KeyValuePair<string, object?>> values)
        {
            line += " " + string.Join(' ', values.Select(v => $"{v.Key}={v.Value}"));
        }

        Entries.Enqueue((logLevel, line));
    }
}
