using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;

namespace SmtpGateway.Signing;

/// <summary>Signing stage log messages; issue 12 uses <see cref="EventIds.Signing"/> + 20..39.</summary>
internal static partial class SigningLog
{
    [LoggerMessage(EventId = EventIds.Signing + 20, Level = LogLevel.Warning,
        Message = "Tenant {Tenant}: message refused with 451 4.3.0, no signing slot ({Reason}); {Held} of its {Share} slot(s) in use; {Skipped} more such refusal(s) not logged in the last minute")]
    public static partial void SigningRefused(ILogger logger, string tenant, string reason, int held, int share, int skipped);
}
