using Microsoft.Extensions.Logging;
using SmtpGateway.Envelope;
using SmtpGateway.Identity;

namespace SmtpGateway.Submission.Stages;

/// <summary>The Received trace field, and header hygiene before signing so that the signature covers the cleaned header.</summary>
internal sealed class EnvelopeStage(string serverName, HeaderHygiene? hygiene, ILogger logger)
{
    public string Received(SubmissionContext context, string id, DateTimeOffset now) =>
        TraceHeader.Received(context.Helo ?? "unknown", context.ClientAddress, serverName, context.Protocol, context.TlsProtocol, id, now);

    /// <summary>
    /// Issue #7: client-supplied fields that claim a tenant or a delivery path are removed (X-Tenant and kin, Return-Path;
    /// Bcc too when a tenant sends), and a tenant's message without a Message-ID gets one (RFC 5322 section 3.6.4; DKIM
    /// over-signs it). Returns the header section to queue: the message's own when nothing changes (no copy).
    /// </summary>
    public HeaderSection Clean(SubmissionContext context, IncomingMessage message, string? author)
    {
        var section = message.Headers;
        if (hygiene is null)
        {
            return section;
        }

        var outbound = context.Tenant is not null;
        // The names are only for the log line: no list per message when Information is off.
        var removed = logger.IsEnabled(LogLevel.Information) ? new List<string>() : null;
        var result = hygiene.Clean(section, outbound, removed);
        if (removed is { Count: > 0 })
        {
            SubmissionLog.HeadersRemoved(logger, context.SessionId, string.Join(", ", removed.Distinct(StringComparer.OrdinalIgnoreCase)));
        }

        if (!outbound || result.HasMessageId)
        {
            return result.Section;
        }

        // The tenant's own (verified) From domain, not the gateway's name: a Message-ID domain shared by every tenant would
        // link their mail together for the reputation systems that look at it. It goes on top, as the first field.
        var domain = author is null ? null : DomainName.OfAddress(author);
        var messageId = HeaderSection.NewField("Message-ID", HeaderHygiene.NewMessageId(message.Id, domain ?? serverName));
        return result.Section.With([messageId, .. result.Section.Fields]);
    }
}
