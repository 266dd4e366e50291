using System.Text.Json;

namespace SmtpGateway.Audit;

/// <summary>
/// Synchronous append for short-lived processes (the CLI): one write per line with O_APPEND, so lines from the CLI and
/// the running gateway interleave whole in the same audit.jsonl.
/// </summary>
public static class AuditFile
{
    public static void Append(string dataDirectory, AuditEvent auditEvent)
    {
        var directory = Path.Combine(dataDirectory, "audit");
        Directory.CreateDirectory(directory);
        var json = JsonSerializer.SerializeToUtf8Bytes(auditEvent, AuditJsonContext.Default.AuditEvent);
        var line = new byte[json.Length + 1];
        json.CopyTo(line, 0);
        line[^1] = (byte)'\n';
        using var file = new FileStream(Path.Combine(directory, "audit.jsonl"), new FileStreamOptions
        {
            Mode = FileMode.Append,
            Access = FileAccess.Write,
            Share = FileShare.ReadWrite,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        });
        file.Write(line);
        file.Flush(flushToDisk: true);
    }
}
