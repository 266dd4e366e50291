using SmtpGateway.Smtp;

namespace SmtpGateway.Listener;

/// <summary>
/// The junk-command budget (Gateway:Limits:MaxJunkCommands, after Postfix's smtpd_junk_command_limit): commands that cost
/// us a reply but move no mail can otherwise keep a session, and its connection slot, busy for the whole session timeout.
/// Refusals a client may loop on without a strike (tenant rate limits, temporary AUTH failures) are counted here too.
/// </summary>
public sealed partial class SmtpSession
{
    int _junkCommands;
    TimeSpan _holdNextFlush;

    /// <summary>
    /// NOOP, RSET, VRFY and HELP, and EHLO/HELO once the client has already greeted in this TLS state (the first greeting
    /// after connect and the one RFC 3207 section 4.2 requires after STARTTLS are not junk).
    /// </summary>
    bool IsJunk(SmtpVerb verb) =>
        verb is SmtpVerb.Noop or SmtpVerb.Rset or SmtpVerb.Vrfy or SmtpVerb.Help
        || ((verb is SmtpVerb.Ehlo or SmtpVerb.Helo) && _context.Helo is not null);

    /// <summary>Counts one junk command; false (after 421 4.7.0) once the budget is spent and the session must end.</summary>
    bool CountJunk()
    {
        if (++_junkCommands <= _services.Limits.MaxJunkCommands)
        {
            return true;
        }

        Reply(SmtpReplies.TooManyJunkCommands);
        ListenerLog.TooManyJunkCommands(_logger, SessionId, _services.Limits.MaxJunkCommands, _remote.Address);
        _services.Metrics.JunkClosed(_listener.Name);
        return false;
    }

    /// <summary>
    /// A message accepted with 250 starts the budget afresh: a client that sends RSET (or NOOP) between the messages of a
    /// long session is doing real work, and a client that idles cannot buy time without getting mail through its limits.
    /// </summary>
    void ForgiveJunk() => _junkCommands = 0;

    static bool IsRateLimited(SmtpReply reply) =>
        ReferenceEquals(reply, SmtpReplies.TenantMessageRate) || ReferenceEquals(reply, SmtpReplies.TenantRecipientRate);

    /// <summary>Most refusals one flush is held for: 300 pipelined refused MAILs wait 5 delays, not one (nor 300).</summary>
    const int MaxHeldRefusalsPerFlush = 5;

    /// <summary>
    /// A rate-limit refusal goes out Limits:RateLimitReplyDelay late (see there), once per refusal in the flush up to
    /// <see cref="MaxHeldRefusalsPerFlush"/> delays, so pipelining cannot buy many refusals for one delay; and it counts
    /// against the junk budget (it moves no mail), so a client that loops on it is closed with 421 4.7.0 at
    /// Limits:MaxJunkCommands. A client that waits and retries loses little: an accepted message restores the budget, a
    /// new session starts with a full one, and a refused RCPT leaves the transaction's accepted recipients in place.
    /// </summary>
    bool RefuseRateLimited(SmtpReply reply)
    {
        if (!CountJunk())
        {
            return false;
        }

        var delay = _services.Limits.RateLimitReplyDelay;
        _holdNextFlush = TimeSpan.FromTicks(Math.Min(_holdNextFlush.Ticks + delay.Ticks, delay.Ticks * MaxHeldRefusalsPerFlush));
        return Reply(reply);
    }

    /// <summary>The hold <see cref="RefuseRateLimited"/> put on the replies about to be flushed; costs no thread while it waits.</summary>
    async ValueTask HoldRateLimitedAsync(CancellationToken cancellationToken)
    {
        if (_holdNextFlush > TimeSpan.Zero)
        {
            var hold = _holdNextFlush;
            _holdNextFlush = TimeSpan.Zero;
            await Task.Delay(hold, _services.Time, cancellationToken).ConfigureAwait(false);
        }
    }
}
