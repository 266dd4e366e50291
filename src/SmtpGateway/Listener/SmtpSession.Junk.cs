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
}
