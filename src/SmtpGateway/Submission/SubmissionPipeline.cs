using System.Buffers;
using System.Net;
using Microsoft.Extensions.Logging;
using SmtpGateway.Diagnostics;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;
using SmtpGateway.Storage;
using SmtpGateway.Submission.Stages;

namespace SmtpGateway.Submission;

/// <summary>
/// The only way mail enters the gateway: Identity → Policy → Envelope → Signing → Spool. An SMTP session speaks the
/// protocol and calls in at AUTH, MAIL, RCPT and end of DATA; the MCP tool server and the admin API call
/// <see cref="SubmitAsync"/> with a message built in code. Every channel therefore passes the same policy, hygiene,
/// signing and durable commit; none can skip a stage.
/// </summary>
public sealed class SubmissionPipeline
{
    readonly SubmissionServices _services;
    readonly IdentityStage _identity;
    readonly PolicyStage _policy;
    readonly EnvelopeStage _envelope;
    readonly SigningStage _signing;
    readonly SpoolStage _spool;
    readonly ILogger _logger;

    public SubmissionPipeline(SubmissionServices services, ILoggerFactory loggers)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(loggers);
        _services = services;
        _logger = loggers.CreateLogger("SmtpGateway.Submission");
        var audit = new Auditor(services.Identity.Audit);
        var rates = services.RateLimits ?? new Policy.TenantRateLimits(services.Time, _logger);
        _identity = new IdentityStage(services.Identity, rates, audit, _logger);
        _policy = new PolicyStage(_identity, rates, services.Limits.MaxMessageSize, services.Envelope, audit, _logger);
        _envelope = new EnvelopeStage(services.ServerName, services.Envelope?.Hygiene, _logger);
        // One gate per process in the host (registered once); a pipeline built without one (tests) gets its own.
        _signing = new SigningStage(services.Signer, services.SigningGate ?? new Signing.SigningGate(Signing.SigningGateOptions.Default, services.Time, _logger), _identity, _logger);
        _spool = new SpoolStage(services.Spool, _logger);
    }

    public Configuration.IdentityConfig IdentityConfig => _identity.Config;

    public MessageMemoryBudget Budget => _services.Budget;

    /// <summary>
    /// Whether the memory budget still holds a header section: a DATA (452 4.3.1 otherwise) or a new connection (421 4.3.2)
    /// could not take a message without one.
    /// </summary>
    public bool HasRoomForMessage => _services.Budget.Available >= _services.Limits.MaxHeaderSectionSize;

    /// <summary>
    /// Starts a conversation. On the legacy relay listener (<paramref name="identifyByNetwork"/>) the client network may name
    /// the tenant at once; otherwise the tenant comes from AUTH, or there is none (inbound mail).
    /// </summary>
    public SubmissionContext Open(string sessionId, SubmissionChannel channel, IPAddress client, string listener, bool identifyByNetwork)
    {
        var context = new SubmissionContext(sessionId, channel, client, listener, _identity.CurrentTenants());
        if (identifyByNetwork)
        {
            _identity.MatchNetwork(context);
        }

        return context;
    }

    /// <summary>The conversation is over (however it ended): its tenant session slot goes back. Safe to call twice.</summary>
    public static void Close(SubmissionContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        context.HoldSessionSlot(null);
    }

    public bool AuthBlocked(SubmissionContext context) => _identity.IsBlocked(context.ClientAddress);

    /// <summary>SASL credentials already decoded by the channel; the session token is the password.</summary>
    public ValueTask<AuthVerdict> AuthenticateAsync(SubmissionContext context, string mechanism, string authorizationIdentity, string user, string password, CancellationToken cancellationToken) =>
        _identity.AuthenticateAsync(context, mechanism, authorizationIdentity, user, password, cancellationToken);

    /// <param name="declaredSize">MAIL SIZE= (RFC 1870), checked against the tenant's MaxMessageSize.</param>
    public Verdict Mail(SubmissionContext context, SmtpPath mailFrom, bool smtpUtf8, bool eightBitMime, long? declaredSize = null)
    {
        ArgumentNullException.ThrowIfNull(context);
        using var scope = TenantScope(context);
        return _policy.Mail(context, mailFrom, smtpUtf8, eightBitMime, declaredSize);
    }

    public Verdict Recipient(SubmissionContext context, SmtpPath recipient)
    {
        ArgumentNullException.ThrowIfNull(context);
        using var scope = TenantScope(context);
        return _policy.Recipient(context, recipient);
    }

    /// <summary>The tenant on the policy's refusal lines; nothing when the session has none yet (inbound mail, before AUTH).</summary>
    IDisposable? TenantScope(SubmissionContext context) =>
        context.Tenant is { } tenant ? _logger.BeginScope(new LogScope(LogScope.Of("TenantId", tenant.TenantId))) : null;

    /// <summary>
    /// A new message for the open transaction, with its queue id and Received field; null (and the reply) when the
    /// gateway-wide memory budget cannot hold even a header section (RFC 3463 4.3.1, "mail system full").
    /// </summary>
    public IncomingMessage? BeginMessage(SubmissionContext context, out SmtpReply? refusal)
    {
        ArgumentNullException.ThrowIfNull(context);
        refusal = null;
        if (!HasRoomForMessage)
        {
            refusal = Refused(context, SmtpReplies.InsufficientStorage);
            return null;
        }

        var id = _spool.NewId();
        var received = _envelope.Received(context, id, _services.Time.GetUtcNow());
        var limits = _services.Limits;
        // The DKIM body hash is made while the body streams in, for the mail that will be signed: a tenant's own, when the
        // tenant has an active selector (none: the signer signs nothing, see IMessageSigner.MaySign).
        var bodyHash = context.Tenant is { } tenant && _services.Signer is { } signer && signer.MaySign(tenant.TenantId) ? new Signing.DkimBodyHash() : null;
        return new IncomingMessage(id, received, _services.Budget, _spool.CreateScratchFile, limits.MessageMemoryThreshold, limits.MaxHeaderSectionSize, bodyHash)
        {
            ReceivedAt = _services.Time.GetUtcNow(),
            MaxSize = _policy.MaxMessageSize(context),
        };
    }

    /// <summary>The reply for a DATA that ran over the message's <see cref="IncomingMessage.MaxSize"/> (the tenant's limit is counted).</summary>
    public SmtpReply MessageTooBig(SubmissionContext context, IncomingMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        return Refused(context, _policy.TooBig(context, message.MaxSize));
    }

    /// <summary>
    /// A refusal the channel decided while the message streamed in (bare CR or LF, NUL, an over-long line): counted with
    /// the pipeline's own, by reason, and returned.
    /// </summary>
    public static SmtpReply Refused(SubmissionContext context, SmtpReply reply)
    {
        ArgumentNullException.ThrowIfNull(context);
        SubmissionMetrics.MessageRefused(context.Listener, SubmissionMetrics.TenantLabel(context), reply);
        return reply;
    }

    /// <summary>
    /// End of DATA: header From binding, hygiene, DKIM, durable commit. The transaction is over whatever the answer; the
    /// message is the caller's to dispose.
    /// </summary>
    /// <remarks>A pooled builder: this wrapper (outcome metrics, transaction reset) adds no allocation per message.</remarks>
    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<SmtpReply> EndMessageAsync(SubmissionContext context, IncomingMessage message)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(message);
        var started = _services.Time.GetTimestamp();
        // Taken now: the transaction (and with it the recipients' tenant) is gone when the answer is known.
        var tenant = SubmissionMetrics.TenantLabel(context);
        try
        {
            var reply = await EndCoreAsync(context, message).ConfigureAwait(false);
            if (reply.IsPositive)
            {
                SubmissionMetrics.MessageAccepted(context.Listener, tenant, _services.Time.GetElapsedTime(started));
            }
            else
            {
                SubmissionMetrics.MessageRefused(context.Listener, tenant, reply);
            }

            return reply;
        }
        finally
        {
            context.ResetTransaction();
        }
    }

    async ValueTask<SmtpReply> EndCoreAsync(SubmissionContext context, IncomingMessage message)
    {
        // Every log line of the commit (signing, spool, refusals) carries the queue id and the tenant: one scope per message
        // (a logging cost, kept out of the allocation-free wrapper above), inside the session's scope (SessionId), so a log
        // shipper can follow one message from DATA to delivery.
        using var scope = _logger.BeginScope(new LogScope(
            LogScope.Of("QueueId", message.Id), LogScope.Of("TenantId", context.Tenant?.TenantId ?? context.TransactionTenant)));
        if (!message.Complete())
        {
            SubmissionLog.MessageNotTaken(_logger, context.SessionId, message.Id, message.Problem, _services.Budget.Used, _services.Budget.Capacity);
            SubmissionMetrics.MessageNotTaken(message.Problem);
            return message.Problem switch
            {
                IncomingProblem.HeaderTooLarge => SmtpReplies.HeaderSectionTooBig,
                IncomingProblem.NoMemory => SmtpReplies.InsufficientStorage,
                IncomingProblem.LeadingContinuation => SmtpReplies.LeadingContinuation,
                IncomingProblem.StorageFull => SmtpReplies.SpoolFull,
                _ => SmtpReplies.SpoolFailed,
            };
        }

        if (message.Headers.ReceivedCount > _services.Limits.MaxReceivedHeaders)
        {
            // A forward route or an MX pointing back at us: refuse rather than circle until the spool fills.
            SubmissionLog.LoopRefused(_logger, context.SessionId, message.Id, message.Headers.ReceivedCount, _services.Limits.MaxReceivedHeaders);
            return SmtpReplies.TooManyHops;
        }

        // Header From first (hygiene never removes it): its verified domain names the Message-ID we may add.
        if (_policy.HeaderFrom(context, message.Headers, out var author) is { } refused)
        {
            return refused;
        }

        // One split of the header section (made while it streamed in) serves sender binding above, hygiene and DKIM.
        var headers = _envelope.Clean(context, message, author);
        var (unsigned, signature) = await _signing.SignAsync(context, author, headers, message.BodyHash).ConfigureAwait(false);
        if (unsigned is not null)
        {
            return unsigned;
        }

        var inMemory = ReferenceEquals(headers, message.Headers) ? message.InMemory : ByteSequence.Concat([headers.ToSequence(), message.MemoryBody]);

        // DKIM-Signature on top, above our Received (as a signing milter would put it).
        var content = new MessageContent(
            [new ReadOnlySequence<byte>(signature), new ReadOnlySequence<byte>(System.Text.Encoding.UTF8.GetBytes(message.ReceivedHeader)), inMemory],
            message.OpenScratch(),
            message.ScratchLength,
            message.ScratchEightBit);
        if (message.Spilled)
        {
            SubmissionMetrics.MessageSpilled();
        }

        return await _spool.CommitAsync(context, message.Id, content, message.ReceivedAt).ConfigureAwait(false);
    }

    /// <summary>
    /// A message built in code (MCP tool, admin API) enters here: the same Policy, Envelope, Signing and Spool stages as an
    /// SMTP transaction, in the same order. <paramref name="message"/> is RFC 5322 with CRLF line endings; a bare CR or LF,
    /// a NUL or an over-long line is refused as it is on the wire. The first refusal is the answer; the queue id is set when
    /// the message was committed.
    /// </summary>
    public async ValueTask<SubmitResult> SubmitAsync(SubmissionContext context, SmtpPath mailFrom, IReadOnlyList<SmtpPath> recipients, ReadOnlySequence<byte> message, bool smtpUtf8 = false)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(recipients);
        if (context.ConnectRefusal is { } closed)
        {
            // A conversation the Identity stage refused at its start (tenant at MaxSessions) takes no message either.
            return new(closed, null);
        }

        if (recipients.Count == 0)
        {
            return new(SmtpReplies.NoValidRecipients, null);
        }

        if (recipients.Count > _services.Limits.MaxRecipients)
        {
            return new(SmtpReplies.TooManyRecipients, null);
        }

        if (message.Length > _services.Limits.MaxMessageSize)
        {
            return new(SmtpReplies.MessageTooBig, null);
        }

        // The whole message is at hand: its length is the declared size, so the tenant's MaxMessageSize applies at MAIL.
        var mail = Mail(context, mailFrom, smtpUtf8, eightBitMime: true, declaredSize: message.Length);
        if (!mail.Accepted)
        {
            return new(mail.Reply, null);
        }

        foreach (var recipient in recipients)
        {
            var verdict = Recipient(context, recipient);
            if (!verdict.Accepted)
            {
                context.ResetTransaction();
                return new(verdict.Reply, null);
            }
        }

        using var incoming = BeginMessage(context, out var refusal);
        if (incoming is null)
        {
            context.ResetTransaction();
            return new(refusal!, null);
        }

        var reader = new SequenceReader<byte>(message);
        while (!reader.End)
        {
            if (!reader.TryReadTo(out ReadOnlySequence<byte> line, (byte)'\n'))
            {
                // The last line has no line ending: it still ends the message, as DATA's final CRLF would.
                line = reader.UnreadSequence;
                reader.AdvanceToEnd();
                if (line.PositionOf((byte)'\r') is not null)
                {
                    return new(RefuseData(context, SmtpReplies.BareCrLfInData), null);
                }

                if (line.PositionOf((byte)0) is not null)
                {
                    return new(RefuseData(context, SmtpReplies.NulInData), null);
                }

                if (TooLong(line))
                {
                    return new(RefuseData(context, SmtpReplies.DataLineTooLong), null);
                }

                incoming.AppendLine(line);
                break;
            }

            if (line.Length == 0 || line.Slice(line.Length - 1).FirstSpan[0] != (byte)'\r' || line.Slice(0, line.Length - 1).PositionOf((byte)'\r') is not null)
            {
                return new(RefuseData(context, SmtpReplies.BareCrLfInData), null);
            }

            if (line.PositionOf((byte)0) is not null)
            {
                return new(RefuseData(context, SmtpReplies.NulInData), null);
            }

            var content = line.Slice(0, line.Length - 1);
            if (TooLong(content))
            {
                return new(RefuseData(context, SmtpReplies.DataLineTooLong), null);
            }

            incoming.AppendLine(content);
        }

        var reply = await EndMessageAsync(context, incoming).ConfigureAwait(false);
        return new(reply, reply.IsPositive ? incoming.Id : null);
    }

    /// <summary>
    /// The listener's bound (RFC 5321 section 4.5.3.1.6, MaxTextLineLength with the CRLF): a line it would refuse on the
    /// wire must not come in through code, or relaying it would send what a strict server refuses. The listener counts
    /// the line dot-stuffed, as it arrives and as our own relay will send it, so a leading dot counts here too.
    /// </summary>
    bool TooLong(ReadOnlySequence<byte> content)
    {
        var stuffed = content.Length > 0 && content.FirstSpan[0] == (byte)'.' ? 1 : 0;
        return content.Length + stuffed + 2 > _services.Limits.MaxTextLineLength;
    }

    static SmtpReply RefuseData(SubmissionContext context, SmtpReply reply)
    {
        Refused(context, reply);
        context.ResetTransaction();
        return reply;
    }
}

/// <summary>The answer to <see cref="SubmissionPipeline.SubmitAsync"/>: the reply an SMTP client would have had, and the queue id once committed.</summary>
public readonly record struct SubmitResult(SmtpReply Reply, string? QueueId);
