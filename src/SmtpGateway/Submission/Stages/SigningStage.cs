using SmtpGateway.Envelope;
using Microsoft.Extensions.Logging;
using SmtpGateway.Signing;
using SmtpGateway.Smtp;

namespace SmtpGateway.Submission.Stages;

/// <summary>
/// DKIM for a tenant's outbound message, made before the message is queued. Fails closed: any failure is 451 4.3.0 and
/// nothing is queued, so a message that should be signed never leaves unsigned (issue #4, ARCHITECTURE "Fail closed").
/// </summary>
internal sealed class SigningStage(IMessageSigner? signer, ILogger logger)
{
    /// <param name="headerSection">The header section as it will be spooled (after hygiene).</param>
    /// <param name="bodyHash">The DKIM body hash made while the body streamed in.</param>
    public SmtpReply? Sign(SubmissionContext context, string? author, HeaderSection headerSection, byte[]? bodyHash, out byte[] signature)
    {
        signature = [];
        if (context.Tenant is not { } tenant || author is null || signer is null)
        {
            return null;
        }

        if (bodyHash is null)
        {
            // The message began before the session had a tenant: nothing hashed its body, so nothing can be signed.
            SubmissionLog.SigningFailed(logger, context.SessionId, tenant.TenantId, "no body hash");
            return SmtpReplies.SigningFailed;
        }

        try
        {
            // Required unless the session's tenant snapshot says "Dkim:Unsigned" (a tenant missing from it: required).
            var signingRequired = context.Tenants.Find(tenant.TenantId)?.Unsigned != true;
            signature = signer.Sign(tenant.TenantId, author, headerSection, bodyHash, context.SessionId, signingRequired);
            return null;
        }
        catch (SigningException ex)
        {
            SubmissionLog.SigningFailed(logger, context.SessionId, tenant.TenantId, ex.Message);
            return SmtpReplies.SigningFailed;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Whatever broke (a selector file, the HSM, a parser), the message waits: 451, never unsigned, never a dropped session.
            SubmissionLog.SigningFailed(logger, context.SessionId, tenant.TenantId, ex.GetType().Name);
            return SmtpReplies.SigningFailed;
        }
    }
}
