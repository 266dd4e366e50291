using System.Text;

namespace SmtpGateway.Smtp;

/// <summary>One SMTP reply: basic code (RFC 5321 section 4.2), enhanced status (RFC 3463) and text.</summary>
public sealed record SmtpReply(int Code, string? Enhanced, string Text)
{
    public bool IsPositive => Code < 400;

    public bool IsTransient => Code is >= 400 and < 500;

    public override string ToString() => Enhanced is null ? $"{Code} {Text}" : $"{Code} {Enhanced} {Text}";

    /// <summary>Appends the reply as one line; text containing CR or LF is flattened so a reply can never split into two.</summary>
    public void WriteTo(StringBuilder sb)
    {
        sb.Append(Code).Append(' ');
        if (Enhanced is not null)
        {
            sb.Append(Enhanced).Append(' ');
        }

        foreach (var c in Text)
        {
            sb.Append(c is '\r' or '\n' ? ' ' : c);
        }

        sb.Append("\r\n");
    }

    public SmtpReply WithText(string text) => this with { Text = text };
}

/// <summary>
/// The single reply catalogue. Every reply the Listener sends comes from here, so codes and enhanced codes
/// stay consistent (RFC 5321 section 4.2.3 for codes, RFC 3463 / RFC 5248 registry for enhanced codes).
/// The replies Delivery records for itself are the catalogue's delivery section, <see cref="DeliveryReplies"/>.
/// </summary>
public static class SmtpReplies
{
    public static SmtpReply Greeting(string serverName) => new(220, null, $"{serverName} ESMTP");
    public static SmtpReply Closing(string serverName) => new(221, "2.0.0", $"{serverName} closing connection");
    public static SmtpReply Queued(string id) => new(250, "2.0.0", $"Ok: queued as {id}");

    public static readonly SmtpReply Ok = new(250, "2.0.0", "Ok");
    public static readonly SmtpReply SenderOk = new(250, "2.1.0", "Sender ok");
    public static readonly SmtpReply RecipientOk = new(250, "2.1.5", "Recipient ok");
    public static readonly SmtpReply ResetOk = new(250, "2.0.0", "Reset state");
    public static readonly SmtpReply CannotVrfy = new(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
    public static readonly SmtpReply Help = new(214, "2.0.0", "See RFC 5321");
    public static readonly SmtpReply StartData = new(354, null, "End data with <CR><LF>.<CR><LF>");
    public static readonly SmtpReply ReadyForTls = new(220, "2.0.0", "Ready to start TLS");
    public static readonly SmtpReply AuthSucceeded = new(235, "2.7.0", "Authentication successful");

    public static readonly SmtpReply TooManyConnections = new(421, "4.7.0", "Too many connections, try again later");
    public static readonly SmtpReply TooManyConnectionsFromIp = new(421, "4.7.0", "Too many connections from your address, try again later");
    public static readonly SmtpReply CommandTimeout = new(421, "4.4.2", "Timeout waiting for input, closing connection");
    public static readonly SmtpReply SessionTooLong = new(421, "4.4.2", "Session time limit reached, closing connection");
    public static readonly SmtpReply ShuttingDown = new(421, "4.3.2", "Service shutting down, try again later");
    public static readonly SmtpReply TooManyAuthFailures = new(421, "4.7.0", "Too many failed authentication attempts, closing connection");
    public static readonly SmtpReply TooManyErrors = new(421, "4.7.0", "Too many errors, closing connection");
    public static readonly SmtpReply SpoolFailed = new(451, "4.3.0", "Temporary failure storing the message, try again later");
    public static readonly SmtpReply SigningFailed = new(451, "4.3.0", "Temporary failure signing the message, try again later");
    public static readonly SmtpReply LocalError = new(451, "4.3.0", "Temporary local problem, try again later");
    /// <summary>RFC 4954 section 6: the credentials could not be checked now (the tenant's HSM token does not answer).</summary>
    public static readonly SmtpReply AuthTemporaryFailure = new(454, "4.7.0", "Temporary authentication failure, try again later");
    public static readonly SmtpReply TooManyRecipients = new(452, "4.5.3", "Too many recipients");

    /// <summary>RFC 3463 4.3.1 "mail system full": the gateway's memory budget for messages in flight is spent.</summary>
    public static readonly SmtpReply InsufficientStorage = new(452, "4.3.1", "Insufficient system storage, try again later");

    /// <summary>A new connection while the memory budget is spent (RFC 5321 section 3.1: 421 at greeting).</summary>
    public static readonly SmtpReply BusyNoStorage = new(421, "4.3.2", "Too busy: insufficient system storage, try again later");

    public static readonly SmtpReply Unrecognized = new(500, "5.5.2", "Command unrecognized");
    public static readonly SmtpReply LineTooLong = new(500, "5.5.2", "Line too long (RFC 5321 section 4.5.3.1.4 limit is 512 octets)");
    public static readonly SmtpReply BareLineEnding = new(500, "5.5.2", "Command lines must end with <CR><LF>");
    public static readonly SmtpReply HttpNotSmtp = new(554, "5.5.2", "This is an SMTP service, not HTTP; closing connection");
    public static readonly SmtpReply SyntaxError = new(501, "5.5.4", "Syntax error in parameters or arguments");
    public static readonly SmtpReply BadSenderSyntax = new(501, "5.1.7", "Bad sender address syntax");
    public static readonly SmtpReply BadRecipientSyntax = new(501, "5.1.3", "Bad recipient address syntax");
    public static readonly SmtpReply SourceRouteRefused = new(501, "5.1.3", "Source routes are not accepted");
    public static readonly SmtpReply InvalidBase64 = new(501, "5.5.2", "Invalid base64 data");
    public static readonly SmtpReply MalformedPlain = new(501, "5.5.2", "Malformed PLAIN response");
    public static readonly SmtpReply BadHeloSyntax = new(501, "5.5.4", "Syntax: EHLO domain or address literal");
    public static readonly SmtpReply AuthCancelled = new(501, "5.0.0", "Authentication cancelled");
    public static readonly SmtpReply NotImplemented = new(502, "5.5.1", "Command not implemented");
    public static readonly SmtpReply BadSequence = new(503, "5.5.1", "Bad sequence of commands");
    public static readonly SmtpReply NeedHelo = new(503, "5.5.1", "Send EHLO or HELO first");
    public static readonly SmtpReply NeedMail = new(503, "5.5.1", "Need MAIL command first");
    public static readonly SmtpReply NestedMail = new(503, "5.5.1", "Sender already specified");
    public static readonly SmtpReply AlreadyTls = new(503, "5.5.1", "TLS already active");
    public static readonly SmtpReply AlreadyAuthenticated = new(503, "5.5.1", "Already authenticated");
    public static readonly SmtpReply NotInTransaction = new(503, "5.5.1", "Not allowed during a mail transaction");
    public static readonly SmtpReply UnknownMechanism = new(504, "5.5.4", "Unrecognized authentication mechanism");
    public static readonly SmtpReply AuthFailed = new(535, "5.7.8", "Authentication credentials invalid");
    public static readonly SmtpReply EncryptionRequired = new(538, "5.7.11", "Encryption required for requested authentication mechanism");
    public static readonly SmtpReply RelayDenied = new(554, "5.7.1", "Relay access denied");
    public static readonly SmtpReply NoValidRecipients = new(554, "5.5.1", "No valid recipients");
    public static readonly SmtpReply MessageTooBig = new(552, "5.3.4", "Message size exceeds fixed maximum message size");
    public static readonly SmtpReply LeadingContinuation = new(550, "5.6.0", "Message must begin with a header field or an empty line, not a continuation line");
    public static readonly SmtpReply HeaderSectionTooBig = new(552, "5.3.4", "Message header section exceeds the size limit");
    public static readonly SmtpReply UnknownParameter = new(555, "5.5.4", "MAIL FROM/RCPT TO parameters not recognized or not implemented");
    public static readonly SmtpReply NonAsciiAddress = new(553, "5.6.7", "Non-ASCII address requires the SMTPUTF8 parameter");
    public static readonly SmtpReply BareCrLfInData = new(550, "5.6.0", "Message contains a bare CR or LF; only <CR><LF> line endings are accepted");

    /// <summary>RFC 5322 section 2.1 and RFC 5321 section 4.5.2 (text is US-ASCII/UTF-8 without NUL): a NUL is refused, never relayed.</summary>
    public static readonly SmtpReply NulInData = new(550, "5.6.0", "Message contains a NUL character, which Internet mail may not carry");

    /// <summary>RFC 5321 section 6.3 / RFC 3463 5.4.6 (routing loop detected): counted once, during the header split.</summary>
    public static readonly SmtpReply TooManyHops = new(554, "5.4.6", "Too many Received header fields: the message appears to be looping");
    public static readonly SmtpReply DataLineTooLong = new(550, "5.6.0", "Message has a line over 1000 octets (RFC 5321 section 4.5.3.1.6)");

    // Sender binding and relay control (Policy, issue #3 and #7).
    public static readonly SmtpReply SenderNotOwned = new(550, "5.7.1", "Sender address is not authorized for this account");
    public static readonly SmtpReply HeaderFromNotOwned = new(550, "5.7.1", "From header address is not authorized for this account");
    public static readonly SmtpReply OtherSenderNotOwned = new(550, "5.7.1", "Sender or Resent header address is not authorized for this account");
    public static readonly SmtpReply HeaderFromMissing = new(550, "5.7.1", "Message needs exactly one From header with an address");
    public static readonly SmtpReply NullSenderRefused = new(550, "5.7.1", "Null sender is not allowed for submission");
    public static readonly SmtpReply TokenNoLongerValid = new(530, "5.7.0", "Authentication required: session credentials expired or revoked");
    public static readonly SmtpReply OtherTenantRecipients = new(452, "4.5.3", "Recipients for another domain group must be sent in a separate transaction");

    /// <summary>RFC 3463 5.1.1 "bad destination mailbox address": a return path we did not make (or no longer accept).</summary>
    public static readonly SmtpReply UnknownReturnPath = new(550, "5.1.1", "No such recipient");

    /// <summary>Issue #7: a tenant may not mail an address that hard-bounced or complained, until the operator removes it.</summary>
    public static readonly SmtpReply Suppressed = new(550, "5.7.1", "Recipient is on this account's suppression list (earlier hard bounce or complaint); not sent");

    // Per-tenant limits (issue 12, Tenants:<id>:Limits). Fixed texts: never the client's input.

    /// <summary>MessagesPerMinute reached, at MAIL: temporary, the client tries again later.</summary>
    public static readonly SmtpReply TenantMessageRate = new(450, "4.7.1", "Message rate limit for this account reached, try again later");

    /// <summary>RecipientsPerMinute reached, at RCPT: RFC 5321 section 4.5.3.1.10, the client sends the rest in a later transaction.</summary>
    public static readonly SmtpReply TenantRecipientRate = new(452, "4.5.3", "Recipient rate limit for this account reached, send the remaining recipients later");

    /// <summary>MaxSessions reached at AUTH: RFC 4954 section 6 temporary failure; the credentials were fine, so no strike.</summary>
    public static readonly SmtpReply TenantSessionsAtAuth = new(454, "4.7.0", "Too many concurrent sessions for this account, try again later");

    /// <summary>MaxSessions reached when the relay listener matched the client network: 421 in place of the banner (RFC 5321 section 3.1).</summary>
    public static readonly SmtpReply TenantSessionsAtConnect = new(421, "4.7.0", "Too many concurrent sessions for this account, try again later");

    /// <summary>Over the tenant's MaxMessageSize (MAIL SIZE=, DATA, or a message built in code): RFC 1870 / RFC 3463 5.3.4, permanent.</summary>
    public static readonly SmtpReply TenantMessageTooBig = new(552, "5.3.4", "Message size exceeds this account's maximum message size");

    /// <summary>
    /// RFC 3463 4.3.1 "mail system full" with RFC 5321 section 4.2.2's 452: the spool's file system is full (ENOSPC or
    /// EDQUOT). Transient: the gateway takes mail again by itself once space is freed.
    /// </summary>
    public static readonly SmtpReply SpoolFull = new(452, "4.3.1", "Mail system full: insufficient storage for the message, try again later");

    /// <summary>
    /// A client sending DATA slower than Limits:MinDataRate (after Limits:DataTimeout of grace) is closed, as Kestrel's
    /// MinRequestBodyDataRate closes a slow request body: a trickler cannot hold a session for the whole SessionTimeout.
    /// </summary>
    public static readonly SmtpReply DataTooSlow = new(421, "4.4.2", "Data arriving too slowly, closing connection");

    /// <summary>Issue 12: no signing slot for this tenant in time (its own share busy); never sent unsigned, so the client retries.</summary>
    public static readonly SmtpReply SigningBusy = new(451, "4.3.0", "Signing is busy for this account, try again later");

    /// <summary>
    /// Gateway:Limits:MaxJunkCommands (Postfix smtpd_junk_command_limit): a session that only idles (NOOP, RSET, VRFY, HELP,
    /// repeated EHLO) or loops on refusals that move no mail (tenant rate limits, temporary AUTH failures) is closed.
    /// </summary>
    public static readonly SmtpReply TooManyJunkCommands = new(421, "4.7.0", "Too many commands without a message, closing connection");

    /// <summary>MAIL of a token session while the token registry cannot be read: its revocation state is unknown (fail closed).</summary>
    public static readonly SmtpReply TokenCheckUnavailable = new(451, "4.7.0", "Temporary failure checking the session's credentials, try again later");

    /// <summary>RFC 3463 4.7.1 (delivery not authorized, try later): too many failed return-path checks from this client address.</summary>
    public static readonly SmtpReply ReturnPathChecksThrottled = new(450, "4.7.1", "Too many unknown return-path addresses from your address, try again later");
}
