using Microsoft.Extensions.Logging;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;

namespace SmtpGateway.Submission.Stages;

/// <summary>The durable commit: on disk (file and directory fsynced) before the 250 (RFC 5321 section 6.1).</summary>
internal sealed class SpoolStage(IMessageSpool spool, ILogger logger)
{
    public string NewId() => spool.NewId();

    public FileStream CreateScratchFile() => spool.CreateScratchFile();

    public async ValueTask<SmtpReply> CommitAsync(SubmissionContext context, string id, MessageContent content, DateTimeOffset received)
    {
        var envelope = new SpoolEnvelope(
            id,
            context.TransactionTenant ?? context.Tenant?.TenantId,
            context.MailFrom!.Address,
            [.. context.Recipients],
            received,
            context.ClientAddress.ToString(),
            context.Listener,
            context.SmtpUtf8,
            context.EightBitMime,
            Inbound: context.Tenant is null);
        try
        {
            // Not cancellable: once the bytes are in, finish the commit so the answer matches the disk.
            await spool.CommitAsync(envelope, content, CancellationToken.None).ConfigureAwait(false);
            SubmissionLog.Queued(logger, context.SessionId, id, envelope.Recipients.Count, content.Length);
            return SmtpReplies.Queued(id);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException && StorageErrors.IsFull(ex))
        {
            // RFC 3463 4.3.1 "mail system full": still transient (452), and the next commit after space is freed succeeds.
            SubmissionLog.SpoolFull(logger, context.SessionId, id);
            SubmissionMetrics.MessageNotTaken(IncomingProblem.StorageFull);
            return SmtpReplies.SpoolFull;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Disk trouble is transient: 451, never 250 and never 554 (issue #2, ARCHITECTURE "Errors").
            SubmissionLog.SpoolFailed(logger, context.SessionId, ex);
            return SmtpReplies.SpoolFailed;
        }
    }
}
