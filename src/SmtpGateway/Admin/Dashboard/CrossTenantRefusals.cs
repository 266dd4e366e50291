using SmtpGateway.Audit;

namespace SmtpGateway.Admin.Dashboard;

/// <summary>One refused cross-tenant attempt as the dashboard shows it: no subject, session or client address.</summary>
public sealed record CrossTenantRefusal(DateTimeOffset Time, string? Tenant, string Action, string? Reason);

/// <summary>
/// The most recent refused cross-tenant attempts, newest last, in a fixed-size ring: a flood of refusals replaces older
/// entries instead of growing memory. The audit log file stays the full record.
/// </summary>
public sealed class CrossTenantRefusals
{
    public const int Capacity = 50;

    readonly CrossTenantRefusal?[] _ring = new CrossTenantRefusal?[Capacity];
    readonly Lock _lock = new();
    long _count;

    public void Add(CrossTenantRefusal refusal)
    {
        lock (_lock)
        {
            _ring[_count % Capacity] = refusal;
            _count++;
        }
    }

    /// <summary>Newest first.</summary>
    public IReadOnlyList<CrossTenantRefusal> Recent()
    {
        lock (_lock)
        {
            var n = (int)Math.Min(_count, Capacity);
            var result = new List<CrossTenantRefusal>(n);
            for (var i = 1; i <= n; i++)
            {
                result.Add(_ring[(_count - i) % Capacity]!);
            }

            return result;
        }
    }
}

/// <summary>
/// Wraps the gateway's <see cref="IAuditLog"/>: every event goes on to it unchanged; refused cross-tenant attempts are
/// also kept in <see cref="CrossTenantRefusals"/>, stamped here when they have no time yet so that the ring and the file agree.
/// </summary>
internal sealed class CrossTenantAuditTap(IAuditLog inner, CrossTenantRefusals refusals, TimeProvider time) : IAuditLog
{
    public void Write(AuditEvent auditEvent)
    {
        if (auditEvent.CrossTenant)
        {
            if (auditEvent.Time == default)
            {
                auditEvent = auditEvent with { Time = time.GetUtcNow() };
            }

            refusals.Add(new CrossTenantRefusal(auditEvent.Time, auditEvent.Tenant, auditEvent.Action, auditEvent.Reason));
        }

        inner.Write(auditEvent);
    }
}
