using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Net.Security;
using System.Text;
using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Smtp;
using SmtpGateway.Submission;

namespace SmtpGateway.Listener;

/// <summary>Where a session is in RFC 5321's command sequence (section 4.1.4).</summary>
public enum SessionState
{
    /// <summary>Banner sent; EHLO/HELO not yet seen (or reset by STARTTLS, RFC 3207 section 4.2).</summary>
    Connected,

    /// <summary>Greeted, no transaction.</summary>
    Ready,

    /// <summary>MAIL accepted.</summary>
    Mail,

    /// <summary>At least one RCPT accepted.</summary>
    Rcpt,
}

/// <summary>
/// One SMTP server session over a byte stream (TCP, TLS, or an in-memory pipe in tests): grammar, the state table, limits,
/// TLS, strict CRLF framing and replies. Protocol only: at AUTH, MAIL, RCPT and end of DATA it hands its
/// <see cref="SubmissionContext"/> to the <see cref="SubmissionPipeline"/> and speaks the reply it gets back.
/// </summary>
public sealed partial class SmtpSession
{
    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>RFC 4954 section 4: AUTH lines (command and continuations) may be up to 12288 octets.</summary>
    const int MaxAuthLineLength = 12288;

    /// <summary>
    /// Which verbs each state accepts. Anything absent gets the state's refusal. Data, not if-ladders, so the
    /// sequence rules can be read (and tested) in one place.
    /// </summary>
    static readonly Dictionary<SessionState, HashSet<SmtpVerb>> Allowed = new()
    {
        [SessionState.Connected] = [SmtpVerb.Helo, SmtpVerb.Ehlo, SmtpVerb.Noop, SmtpVerb.Quit, SmtpVerb.Rset, SmtpVerb.Vrfy, SmtpVerb.Help, SmtpVerb.StartTls],
        [SessionState.Ready] = [SmtpVerb.Helo, SmtpVerb.Ehlo, SmtpVerb.Mail, SmtpVerb.Noop, SmtpVerb.Quit, SmtpVerb.Rset, SmtpVerb.Vrfy, SmtpVerb.Help, SmtpVerb.StartTls, SmtpVerb.Auth],
        [SessionState.Mail] = [SmtpVerb.Helo, SmtpVerb.Ehlo, SmtpVerb.Rcpt, SmtpVerb.Data, SmtpVerb.Noop, SmtpVerb.Quit, SmtpVerb.Rset, SmtpVerb.Vrfy, SmtpVerb.Help],
        [SessionState.Rcpt] = [SmtpVerb.Helo, SmtpVerb.Ehlo, SmtpVerb.Rcpt, SmtpVerb.Data, SmtpVerb.Noop, SmtpVerb.Quit, SmtpVerb.Rset, SmtpVerb.Vrfy, SmtpVerb.Help],
    };

    readonly SessionServices _services;
    readonly SubmissionPipeline _pipeline;
    readonly SubmissionContext _context;
    readonly ListenerModel _listener;
    readonly IPEndPoint _remote;
    readonly ILogger _logger;
    readonly CancellationToken _draining;
    readonly CancellationToken _hardStop;
    readonly StringBuilder _out = new();

    Stream _stream;
    PipeReader _reader;
    bool _mustWait;
    SessionState _state = SessionState.Connected;
    bool _esmtp;
    bool _tls;
    int _errors;

    public SmtpSession(Stream stream, ListenerModel listener, IPEndPoint remote, SessionServices services, ILogger logger, CancellationToken draining, CancellationToken hardStop)
    {
        _stream = stream;
        _reader = PipeReader.Create(stream, new StreamPipeReaderOptions(leaveOpen: true));
        _listener = listener;
        _remote = remote;
        _services = services;
        _pipeline = services.Pipeline;
        _logger = logger;
        _draining = draining;
        _hardStop = hardStop;
        _tls = stream is SslStream;
        // 48 random bits in 12 hex digits, as the Guid's first 12 were: an identifier for logs and audit, not a secret,
        // so Random.Shared serves it without the read(2) of /dev/urandom a Guid costs per connection.
        SessionId = Random.Shared.NextInt64(1L << 48).ToString("x12", CultureInfo.InvariantCulture);

        // The context keeps the tenant map it started with, even if the config reloads meanwhile.
        _context = _pipeline.Open(SessionId, SubmissionChannel.Smtp, remote.Address, listener.Name, identifyByNetwork: listener.Kind == ListenerKind.Relay);
        _context.TlsProtocol = (stream as SslStream) is { } tls ? TlsName(tls.SslProtocol) : null;
    }

    /// <summary>The tenant this session acts for (null for unauthenticated inbound).</summary>
    public TenantSession? Tenant => _context.Tenant;

    bool PlaintextAuthAllowed => _pipeline.IdentityConfig.AllowPlaintextAuthOnLoopback && IPAddress.IsLoopback(_remote.Address);

    public string SessionId { get; }

    public SessionState State => _state;

    bool InTransaction => _state is SessionState.Mail or SessionState.Rcpt;

    public async Task RunAsync()
    {
        using var sessionCap = new CancellationTokenSource(_services.Limits.SessionTimeout, _services.Time);
        try
        {
            // The relay listener's tenant at its MaxSessions: 421 in place of the banner (RFC 5321 section 3.1), and close.
            var refusal = _context.ConnectRefusal;
            Reply(refusal ?? SmtpReplies.Greeting(_services.ServerName));
            while (refusal is null)
            {
                var line = await ReadCommandLineAsync(sessionCap.Token).ConfigureAwait(false);
                if (line.Status == LineStatus.Closed)
                {
                    break;
                }

                if (line.Status != LineStatus.Ok)
                {
                    if (!CountError(line.Status == LineStatus.TooLong ? SmtpReplies.LineTooLong : line.Status == LineStatus.BadEncoding ? SmtpReplies.SyntaxError : SmtpReplies.BareLineEnding))
                    {
                        break;
                    }

                    continue;
                }

                var command = SmtpGrammar.ParseCommand(line.Text);
                if (command.Verb != SmtpVerb.Auth && Encoding.UTF8.GetByteCount(line.Text) + 2 > _services.Limits.MaxCommandLineLength)
                {
                    if (!CountError(SmtpReplies.LineTooLong))
                    {
                        break;
                    }

                    continue;
                }

                if (!await DispatchAsync(command, sessionCap.Token).ConfigureAwait(false))
                {
                    break;
                }
            }

            // Bounded: a peer that stops reading must not pin the session (and shutdown) forever.
            using var flushTimeout = new CancellationTokenSource(TimeSpan.FromSeconds(10), _services.Time);
            await FlushAsync(flushTimeout.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException or AuthenticationFailure)
        {
            // The peer went away or TLS failed: nothing was acknowledged that is not already in the spool.
            ListenerLog.SessionAborted(_logger, SessionId, ex.GetType().Name);
        }
        finally
        {
            // However the session ended (QUIT, abort, a bug): the tenant's session slot goes back.
            SubmissionPipeline.Close(_context);
            DisposeLineTimeout();
            await _reader.CompleteAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Returns false when the session must end.</summary>
    async ValueTask<bool> DispatchAsync(SmtpCommandLine command, CancellationToken sessionToken)
    {
        switch (command.Verb)
        {
            case SmtpVerb.Quit:
                Reply(SmtpReplies.Closing(_services.ServerName));
                return false;
            case SmtpVerb.Http:
                Reply(SmtpReplies.HttpNotSmtp);
                ListenerLog.HttpProbe(_logger, SessionId, _remote.Address);
                return false;
            case SmtpVerb.Unknown:
                return CountError(SmtpReplies.Unrecognized);
            case SmtpVerb.Expn:
            case SmtpVerb.Bdat:
                return CountError(SmtpReplies.NotImplemented);
        }

        if (!Allowed[_state].Contains(command.Verb))
        {
            return CountError(_state switch
            {
                SessionState.Connected => SmtpReplies.NeedHelo,
                _ when command.Verb == SmtpVerb.Mail => SmtpReplies.NestedMail,
                _ when command.Verb == SmtpVerb.Rcpt => SmtpReplies.NeedMail,
                _ when command.Verb == SmtpVerb.Data => SmtpReplies.NeedMail,
                _ when command.Verb is SmtpVerb.StartTls or SmtpVerb.Auth => SmtpReplies.NotInTransaction,
                _ => SmtpReplies.BadSequence,
            });
        }

        if (IsJunk(command.Verb) && !CountJunk())
        {
            return false;
        }

        switch (command.Verb)
        {
            case SmtpVerb.Ehlo:
            case SmtpVerb.Helo:
                return Hello(command);
            case SmtpVerb.Noop:
                Reply(SmtpReplies.Ok);
                return true;
            case SmtpVerb.Rset:
                ResetTransaction();
                Reply(SmtpReplies.ResetOk);
                return true;
            case SmtpVerb.Vrfy:
                // RFC 5321 section 3.5.3: 252 when we will not verify; never disclose mailbox existence.
                Reply(SmtpReplies.CannotVrfy);
                return true;
            case SmtpVerb.Help:
                Reply(SmtpReplies.Help);
                return true;
            case SmtpVerb.StartTls:
                return await StartTlsAsync(command, sessionToken).ConfigureAwait(false);
            case SmtpVerb.Auth:
                return await AuthAsync(command, sessionToken).ConfigureAwait(false);
            case SmtpVerb.Mail:
                return Mail(command);
            case SmtpVerb.Rcpt:
                return Rcpt(command);
            case SmtpVerb.Data:
                return await DataAsync(command, sessionToken).ConfigureAwait(false);
            default:
                return CountError(SmtpReplies.Unrecognized);
        }
    }

    bool Hello(SmtpCommandLine command)
    {
        var argument = command.Argument.Trim();
        if (!SmtpGrammar.IsHeloArgument(argument))
        {
            return CountError(SmtpReplies.BadHeloSyntax);
        }

        // RFC 5321 section 4.1.4: EHLO/HELO in mid-transaction resets it, like RSET.
        ResetTransaction();
        _context.Helo = argument;
        _esmtp = command.Verb == SmtpVerb.Ehlo;
        _state = SessionState.Ready;

        if (!_esmtp)
        {
            Reply(new SmtpReply(250, null, _services.ServerName));
            return true;
        }

        var lines = new List<string>
        {
            _services.ServerName,
            "PIPELINING",
            $"SIZE {_services.Limits.MaxMessageSize}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
        };
        if (_listener.OffersStartTls && !_tls && _services.Tls is not null)
        {
            lines.Add("STARTTLS");
        }

        if (_listener.OffersAuth && (_tls || PlaintextAuthAllowed))
        {
            lines.Add("AUTH PLAIN LOGIN");
        }

        for (var i = 0; i < lines.Count; i++)
        {
            _out.Append("250").Append(i == lines.Count - 1 ? ' ' : '-').Append(lines[i]).Append("\r\n");
        }

        return true;
    }

    async ValueTask<bool> StartTlsAsync(SmtpCommandLine command, CancellationToken sessionToken)
    {
        if (command.Argument.Length > 0)
        {
            return CountError(SmtpReplies.SyntaxError);
        }

        if (_tls)
        {
            return CountError(SmtpReplies.AlreadyTls);
        }

        if (!_listener.OffersStartTls || _services.Tls is null)
        {
            return CountError(SmtpReplies.NotImplemented);
        }

        Reply(SmtpReplies.ReadyForTls);
        await FlushAsync(sessionToken).ConfigureAwait(false);

        // Anything the client pipelined after STARTTLS arrived in plaintext and must not be executed under TLS
        // (RFC 3207 section 4.2; CVE-2011-0411 command injection). Drop the old reader and its buffer.
        await _reader.CompleteAsync().ConfigureAwait(false);

        var ssl = new SslStream(_stream, leaveInnerStreamOpen: false);
        using var handshakeTimer = new CancellationTokenSource(_services.Limits.CommandTimeout, _services.Time);
        using (var handshake = CancellationTokenSource.CreateLinkedTokenSource(sessionToken, _hardStop, handshakeTimer.Token))
        {
            try
            {
                await ssl.AuthenticateAsServerAsync(_services.Tls.ServerOptions(), handshake.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is System.Security.Authentication.AuthenticationException or IOException or OperationCanceledException)
            {
                throw new AuthenticationFailure(ex);
            }
        }

        _stream = ssl;
        _reader = PipeReader.Create(ssl, new StreamPipeReaderOptions(leaveOpen: true));
        _mustWait = false;
        _tls = true;
        _context.TlsProtocol = TlsName(ssl.SslProtocol);

        // RFC 3207 section 4.2: discard all knowledge from before the handshake; the client must EHLO again.
        ResetTransaction();
        _context.Helo = null;
        _state = SessionState.Connected;
        return true;
    }

    bool Mail(SmtpCommandLine command)
    {
        var error = SmtpGrammar.TryParsePath(command.Argument, "FROM:", allowNull: true, out var path);
        if (error != PathError.None)
        {
            return CountError(error switch
            {
                PathError.Parameter => SmtpReplies.UnknownParameter,
                _ => SmtpReplies.BadSenderSyntax,
            });
        }

        var smtpUtf8 = false;
        var eightBit = false;
        long? size = null;
        foreach (var (key, value) in path!.Parameters)
        {
            switch (key.ToUpperInvariant())
            {
                case "SIZE":
                    // RFC 1870 section 6: refuse up front when the declared size is over our limit.
                    if (!long.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var declared))
                    {
                        return CountError(SmtpReplies.SyntaxError);
                    }

                    if (declared > _services.Limits.MaxMessageSize)
                    {
                        return CountError(SmtpReplies.MessageTooBig);
                    }

                    size = declared;
                    break;
                case "BODY":
                    if (value is null || !(value.Equals("7BIT", StringComparison.OrdinalIgnoreCase) || value.Equals("8BITMIME", StringComparison.OrdinalIgnoreCase)))
                    {
                        return CountError(SmtpReplies.SyntaxError);
                    }

                    eightBit = value.Equals("8BITMIME", StringComparison.OrdinalIgnoreCase);
                    break;
                case "SMTPUTF8":
                    if (value is not null)
                    {
                        return CountError(SmtpReplies.SyntaxError);
                    }

                    smtpUtf8 = true;
                    break;
                case "AUTH":
                    // RFC 4954 section 5: accepted and not trusted; identity comes only from our own AUTH.
                    break;
                default:
                    return CountError(SmtpReplies.UnknownParameter);
            }
        }

        if (!smtpUtf8 && !path.IsAscii)
        {
            return CountError(SmtpReplies.NonAsciiAddress);
        }

        if (path.Domain.Length == 0 && !path.IsNull)
        {
            return CountError(SmtpReplies.BadSenderSyntax);
        }

        var verdict = _pipeline.Mail(_context, path, smtpUtf8, eightBit, size);
        if (!verdict.Accepted)
        {
            // A tenant's rate limit (450) is an answer, not a protocol error: it must not use up the error budget.
            if (IsRateLimited(verdict.Reply))
            {
                return RefuseRateLimited(verdict.Reply);
            }

            return verdict.CountsAsError ? CountError(verdict.Reply) : Reply(verdict.Reply);
        }

        _state = SessionState.Mail;
        return Reply(verdict.Reply);
    }

    bool Rcpt(SmtpCommandLine command)
    {
        var error = SmtpGrammar.TryParsePath(command.Argument, "TO:", allowNull: false, out var path);
        if (error != PathError.None)
        {
            return CountError(error switch
            {
                PathError.Parameter => SmtpReplies.UnknownParameter,
                PathError.SourceRoute => SmtpReplies.SourceRouteRefused,
                _ => SmtpReplies.BadRecipientSyntax,
            });
        }

        if (path!.Parameters.Count > 0)
        {
            return CountError(SmtpReplies.UnknownParameter);
        }

        if (!_context.SmtpUtf8 && !path.IsAscii)
        {
            return CountError(SmtpReplies.NonAsciiAddress);
        }

        if (_context.Recipients.Count >= _services.Limits.MaxRecipients)
        {
            // RFC 5321 section 4.5.3.1.10: 452 for "too many recipients"; the client sends the rest later.
            return Reply(SmtpReplies.TooManyRecipients);
        }

        var verdict = _pipeline.Recipient(_context, path);
        if (verdict.Accepted)
        {
            _state = SessionState.Rcpt;
            return Reply(verdict.Reply);
        }

        if (IsRateLimited(verdict.Reply))
        {
            return RefuseRateLimited(verdict.Reply);
        }

        return verdict.CountsAsError ? CountError(verdict.Reply) : Reply(verdict.Reply);
    }

    async ValueTask<bool> DataAsync(SmtpCommandLine command, CancellationToken sessionToken)
    {
        if (command.Argument.Length > 0)
        {
            return CountError(SmtpReplies.SyntaxError);
        }

        if (_state != SessionState.Rcpt)
        {
            // RFC 2920 section 3.1: DATA with no valid recipients after pipelined RCPTs gets 554.
            return CountError(SmtpReplies.NoValidRecipients);
        }

        // RFC 3848 transmission type for the Received field, as this session stands at DATA.
        _context.Protocol = Protocol();
        using var message = _pipeline.BeginMessage(_context, out var refusal);
        if (message is null)
        {
            // Transient and not the client's fault: it does not count against the error budget (the pipeline counted it).
            return Reply(refusal!);
        }

        Reply(SmtpReplies.StartData);
        await FlushAsync(sessionToken).ConfigureAwait(false);

        var outcome = await ReadDataAsync(message, sessionToken).ConfigureAwait(false);
        if (outcome == DataOutcome.Closed)
        {
            return false;
        }

        SmtpReply reply;
        switch (outcome)
        {
            case DataOutcome.TooBig:
                reply = _pipeline.MessageTooBig(_context, message);
                break;
            case DataOutcome.BareLineEnding:
                reply = SubmissionPipeline.Refused(_context, SmtpReplies.BareCrLfInData);
                ListenerLog.BareLineEnding(_logger, SessionId, _remote.Address);
                break;
            case DataOutcome.NulCharacter:
                reply = SubmissionPipeline.Refused(_context, SmtpReplies.NulInData);
                break;
            case DataOutcome.LineTooLong:
                reply = SubmissionPipeline.Refused(_context, SmtpReplies.DataLineTooLong);
                break;
            default:
                reply = await _pipeline.EndMessageAsync(_context, message).ConfigureAwait(false);
                break;
        }

        ResetTransaction();
        if (reply.IsPositive)
        {
            ForgiveJunk();
            Reply(reply);
            return true;
        }

        return reply.IsTransient ? Reply(reply) : CountError(reply);
    }

    /// <summary>The conventional spelling (as OpenSSL and Postfix write it in Received headers).</summary>
    static string TlsName(System.Security.Authentication.SslProtocols protocol) => protocol switch
    {
        System.Security.Authentication.SslProtocols.Tls13 => "TLSv1.3",
        System.Security.Authentication.SslProtocols.Tls12 => "TLSv1.2",
        _ => protocol.ToString(),
    };

    string Protocol()
    {
        // RFC 3848 transmission types for the Received "with" clause.
        var p = _context.SmtpUtf8 ? "UTF8SMTP" : _esmtp ? "ESMTP" : "SMTP";
        if (_tls)
        {
            p += "S";
        }

        if (_context.Tenant?.Kind == TenantSessionKind.Token)
        {
            p += "A";
        }

        return p;
    }

    void ResetTransaction()
    {
        _context.ResetTransaction();
        if (_state is SessionState.Mail or SessionState.Rcpt)
        {
            _state = SessionState.Ready;
        }
    }

    bool Reply(SmtpReply reply)
    {
        reply.WriteTo(_out);
        return true;
    }

    /// <summary>Sends a failure reply and counts it; false (session ends with 421) once the error budget is spent.</summary>
    bool CountError(SmtpReply reply)
    {
        Reply(reply);
        if (++_errors < _services.Limits.MaxErrors)
        {
            return true;
        }

        Reply(SmtpReplies.TooManyErrors);
        ListenerLog.TooManyErrors(_logger, SessionId, _remote.Address);
        return false;
    }
}
