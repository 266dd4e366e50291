using Microsoft.Extensions.Logging;
using SmtpGateway.Envelope;
using SmtpGateway.Signing;
using SmtpGateway.Smtp;

namespace SmtpGateway.Submission.Stages;

/// <summary>
/// DKIM for a tenant's outbound message, made before the message is queued. Fails closed: any failure is 451 4.3.0 and
/// nothing is queued, so a message that should be signed never leaves unsigned (issue #4, ARCHITECTURE "Fail closed").
/// </summary>
internal sealed class SigningStage(IMessageSigner? signer, SigningGate gate, IdentityStage identity, ILogger logger)
{
    /// <summary>The DKIM-Signature fields to put on top, or the refusal (then nothing is queued).</summary>
    public readonly record struct Outcome(SmtpReply? Refusal, byte[] Signature);

    static readonly Outcome NotSigned = new(null, []);

    /// <param name="headerSection">The header section as it will be spooled (after hygiene).</param>
    /// <param name="bodyHash">The DKIM body hash made while the body streamed in; null when none was made.</param>
    public async ValueTask<Outcome> SignAsync(SubmissionContext context, string? author, HeaderSection headerSection, byte[]? bodyHash, CancellationToken cancellationToken = default)
    {
        if (context.Tenant is not { } tenant || author is null || signer is null)
        {
            return NotSigned;
        }

        // Issue 12: wait (asynchronously, no thread held) for one of this tenant's signing slots; another tenant's flood
        // holds only its own share. The C_Sign that follows is CPU work in the token, done on this thread. The share is
        // the tenant's as configured now, not at the session's start: every acquire sets the gate's share, so an old
        // session must not undo a reload that lowered MaxConcurrentSigning.
        var model = context.Tenants.Find(tenant.TenantId);
        using var slot = await gate.AcquireAsync(tenant.TenantId, identity.LimitsOf(context, tenant.TenantId).MaxConcurrentSigning, cancellationToken)
            .ConfigureAwait(false);
        if (!slot.Granted)
        {
            return new Outcome(SmtpReplies.SigningBusy, []);
        }

        try
        {
            // Required unless the session's tenant snapshot says "Dkim:Unsigned" (a tenant missing from it: required).
            var signingRequired = model?.Unsigned != true;
            // No body hash (the tenant had no active selector when the message began): the signer signs nothing, fails closed
            // as always for a tenant that must sign, or refuses when a selector has become active since.
            return new Outcome(null, signer.Sign(tenant.TenantId, author, headerSection, bodyHash ?? [], context.SessionId, signingRequired));
        }
        catch (SigningException ex)
        {
            SubmissionLog.SigningFailed(logger, context.SessionId, tenant.TenantId, ex.Message);
            return new Outcome(SmtpReplies.SigningFailed, []);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Whatever broke (a selector file, the HSM, a parser), the message waits: 451, never unsigned, never a dropped session.
            SubmissionLog.SigningFailed(logger, context.SessionId, tenant.TenantId, ex.GetType().Name);
            return new Outcome(SmtpReplies.SigningFailed, []);
        }
    }
}
