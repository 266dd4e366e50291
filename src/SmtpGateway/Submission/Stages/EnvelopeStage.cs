using System.Text;
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
    /// over-signs it). Returns the new header section, or null when nothing changes (the common case costs no copy).
    /// </summary>
    public MessageBuffer? Clean(SubmissionContext context, IncomingMessage message, string? author)
    {
        if (hygiene is null)
        {
            return null;
        }

        var outbound = context.Tenant is not null;
        var header = message.HeaderSection;
        MessageBuffer? cleaned = null;
        // The names are only for the log line: no list per message when Information is off.
        var removed = logger.IsEnabled(LogLevel.Information) ? new List<string>() : null;
        try
        {
            var result = hygiene.Clean(header, outbound, chunk => (cleaned ??= new MessageBuffer()).Append(chunk), removed);
            var addMessageId = outbound && !result.HasMessageId;
            if (!result.Changed && !addMessageId)
            {
                return null;
            }

            if (removed is { Count: > 0 })
            {
                SubmissionLog.HeadersRemoved(logger, context.SessionId, string.Join(", ", removed.Distinct(StringComparer.OrdinalIgnoreCase)));
            }

            var final = new MessageBuffer();
            if (addMessageId)
            {
                // The tenant's own (verified) From domain, not the gateway's name: a Message-ID domain shared by every
                // tenant would link their mail together for the reputation systems that look at it.
                var domain = author is null ? null : DomainName.OfAddress(author);
                final.Append(Encoding.ASCII.GetBytes($"Message-ID: {HeaderHygiene.NewMessageId(message.Id, domain ?? serverName)}\r\n"));
            }

            if (result.Changed)
            {
                if (cleaned is not null)
                {
                    final.Append(cleaned.ToSequence());
                }
            }
            else
            {
                final.Append(header);
            }

            return final;
        }
        finally
        {
            cleaned?.Dispose();
        }
    }
}
