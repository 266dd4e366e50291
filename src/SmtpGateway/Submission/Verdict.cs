using SmtpGateway.Smtp;

namespace SmtpGateway.Submission;

/// <summary>
/// A stage's answer to one step: the reply to give, and whether a refusal counts against the client's error budget
/// (a suppressed recipient or a transient refusal does not; a relay attempt does).
/// </summary>
public readonly record struct Verdict(SmtpReply Reply, bool Accepted, bool CountsAsError)
{
    public static Verdict Accept(SmtpReply reply) => new(reply, true, false);

    public static Verdict Refuse(SmtpReply reply) => new(reply, false, !reply.IsTransient);

    /// <summary>A refusal that is an answer, not a protocol error.</summary>
    public static Verdict Answer(SmtpReply reply) => new(reply, false, false);
}

/// <summary>The Identity stage's answer to AUTH.</summary>
/// <param name="Delay">How long to wait before answering a failure (slows guessing).</param>
/// <param name="Blocked">The client has failed too often: after the answer the session ends.</param>
/// <param name="Temporary">The credentials could not be checked now (HSM token unavailable): 454, not 535, and no strike.</param>
/// <param name="Refusal">With <paramref name="Temporary"/>: the reply when it is not the generic 454 (the tenant's MaxSessions).</param>
public readonly record struct AuthVerdict(bool Succeeded, TimeSpan Delay, bool Blocked, bool Temporary = false, SmtpReply? Refusal = null);
