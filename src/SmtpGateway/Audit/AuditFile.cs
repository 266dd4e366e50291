using System.Text.Json;
using SmtpGateway.Storage;

namespace SmtpGateway.Audit;

/// <summary>Synchronous audit append for short-lived processes (the CLI), into the same audit.jsonl as the gateway.</summary>
public static class AuditFile
{
    public static void Append(string dataDirectory, AuditEvent auditEvent) =>
        AppendOnlyFile.AppendLine(
            Path.Combine(dataDirectory, "audit", "audit.jsonl"),
            JsonSerializer.SerializeToUtf8Bytes(auditEvent, AuditJsonContext.Relaxed.AuditEvent));
}

/// <summary>
/// <see cref="IAuditLog"/> for the CLI: each event appended at once, stamped with <paramref name="time"/> when it has no
/// time and with listener "cli" when it names none, like the CLI's other audit events.
/// </summary>
public sealed class AppendingAuditLog(string dataDirectory, TimeProvider time) : IAuditLog
{
    public void Write(AuditEvent auditEvent) =>
        AuditFile.Append(dataDirectory, auditEvent with
        {
            Time = auditEvent.Time == default ? time.GetUtcNow() : auditEvent.Time,
            Listener = auditEvent.Listener ?? "cli",
        });
}
