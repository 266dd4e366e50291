using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Security;
using System.Text;
using Microsoft.Extensions.Logging;
using SmtpGateway.Audit;
using SmtpGateway.Envelope;
using SmtpGateway.Identity;
using SmtpGateway.Policy;
using SmtpGateway.Spool;

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
/// One SMTP server session over a byte stream (TCP or TLS). Reads commands with hard limits, keeps the state table,
/// reads DATA with strict CRLF framing, and hands accepted messages to the spool before answering 250.
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
    readonly ListenerModel _listener;
    readonly IPEndPoint _remote;
    readonly ILogger _logger;
    readonly CancellationToken _draining;
    readonly CancellationToken _hardStop;
    readonly StringBuilder _out = new();
    readonly List<string> _recipients = [];

    Stream _stream;
    PipeReader _reader;
    bool _mustWait;
    SessionState _state = SessionState.Connected;
    string? _helo;
    bool _esmtp;
    bool _tls;
    string? _tlsProtocol;
    readonly TenantSnapshot _tenants;
    TenantSession? _tenant;
    string? _transactionTenant;
    int _errors;
    SmtpPath? _mailFrom;
    bool _smtpUtf8;
    bool _eightBit;
    readonly Func<string, string, bool>? _isReturnPath;

    public SmtpSession(Stream stream, ListenerModel listener, IPEndPoint remote, SessionServices services, ILogger logger, CancellationToken draining, CancellationToken hardStop)
    {
        _stream = stream;
        _reader = PipeReader.Create(stream, new StreamPipeReaderOptions(leaveOpen: true));
        _listener = listener;
        _remote = remote;
        _services = services;
        _logger = logger;
        _draining = draining;
        _hardStop = hardStop;
        _tls = stream is SslStream;
        _tlsProtocol = (stream as SslStream) is { } tls ? TlsName(tls.SslProtocol) : null;
        SessionId = Guid.NewGuid().ToString("N")[..12];

        // The session keeps the tenant map it started with, even if the config reloads meanwhile.
        _tenants = services.Identity.Tenants();
        if (services.Envelope is { } envelopeServices)
        {
            _isReturnPath = (tenant, local) => envelopeServices.ReturnPaths.Verify(tenant, local) is not null;
        }

        if (listener.Kind == Configuration.ListenerKind.Relay && _tenants.FindByAddress(remote.Address) is { } legacy)
        {
            _tenant = new TenantSession(legacy.Id, TenantSessionKind.Network, null, []);
            Audit(AuditActions.LegacyRelay, "ok", "client network", legacy.Id, remote.Address.ToString(), crossTenant: false);
        }
    }

    /// <summary>The tenant this session acts for (null for unauthenticated inbound).</summary>
    public TenantSession? Tenant => _tenant;

    bool PlaintextAuthAllowed => _services.Identity.Config.AllowPlaintextAuthOnLoopback && IPAddress.IsLoopback(_remote.Address);

    public string SessionId { get; }

    public SessionState State => _state;

    bool InTransaction => _state is SessionState.Mail or SessionState.Rcpt;

    public async Task RunAsync()
    {
        using var sessionCap = new CancellationTokenSource(_services.Limits.SessionTimeout, _services.Time);
        try
        {
            Reply(SmtpReplies.Greeting(_services.ServerName));
            while (true)
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
            using var flushTimeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await FlushAsync(flushTimeout.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException or AuthenticationFailure)
        {
            // The peer went away or TLS failed: nothing was acknowledged that is not already in the spool.
            ListenerLog.SessionAborted(_logger, SessionId, ex.GetType().Name);
        }
        finally
        {
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
            return CountError(new SmtpReply(501, "5.5.4", "Syntax: EHLO domain or address literal"));
        }

        // RFC 5321 section 4.1.4: EHLO/HELO in mid-transaction resets it, like RSET.
        ResetTransaction();
        _helo = argument;
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
        using (var handshake = CancellationTokenSource.CreateLinkedTokenSource(sessionToken, _hardStop))
        {
            handshake.CancelAfter(_services.Limits.CommandTimeout);
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
        _tlsProtocol = TlsName(ssl.SslProtocol);

        // RFC 3207 section 4.2: discard all knowledge from before the handshake; the client must EHLO again.
        ResetTransaction();
        _helo = null;
        _state = SessionState.Connected;
        return true;
    }

    async ValueTask<bool> AuthAsync(SmtpCommandLine command, CancellationToken sessionToken)
    {
        if (!_listener.OffersAuth)
        {
            return CountError(SmtpReplies.NotImplemented);
        }

        if (!_tls && !PlaintextAuthAllowed)
        {
            // RFC 4954 section 4 / RFC 8314: never accept a password in clear text.
            return CountError(SmtpReplies.EncryptionRequired);
        }

        if (_tenant is not null)
        {
            return CountError(SmtpReplies.AlreadyAuthenticated);
        }

        var throttle = _services.Identity.Throttle;
        if (throttle.IsBlocked(_remote.Address))
        {
            Reply(SmtpReplies.TooManyAuthFailures);
            return false;
        }

        var parts = command.Argument.Split(' ', 2);
        var mechanism = parts[0].ToUpperInvariant();
        var initial = parts.Length > 1 ? parts[1] : null;

        string authzid, user, password;
        switch (mechanism)
        {
            case "PLAIN":
            {
                var response = initial ?? await ChallengeAsync("", sessionToken).ConfigureAwait(false);
                if (response is null)
                {
                    return false;
                }

                var decoded = DecodeSasl(response, out var failure);
                if (decoded is null)
                {
                    return CountError(failure!);
                }

                // RFC 4616 section 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
                var fields = decoded.Split('\0');
                if (fields.Length != 3)
                {
                    return CountError(new SmtpReply(501, "5.5.2", "Malformed PLAIN response"));
                }

                (authzid, user, password) = (fields[0], fields[1], fields[2]);
                break;
            }

            case "LOGIN":
            {
                var userResponse = initial ?? await ChallengeAsync("VXNlcm5hbWU6", sessionToken).ConfigureAwait(false);
                if (userResponse is null)
                {
                    return false;
                }

                var decodedUser = DecodeSasl(userResponse, out var failure);
                if (decodedUser is null)
                {
                    return CountError(failure!);
                }

                var passwordResponse = await ChallengeAsync("UGFzc3dvcmQ6", sessionToken).ConfigureAwait(false);
                if (passwordResponse is null)
                {
                    return false;
                }

                var decodedPassword = DecodeSasl(passwordResponse, out failure);
                if (decodedPassword is null)
                {
                    return CountError(failure!);
                }

                (authzid, user, password) = ("", decodedUser, decodedPassword);
                break;
            }

            default:
                return CountError(SmtpReplies.UnknownMechanism);
        }

        var result = await _services.Identity.Authenticator.AuthenticateAsync(
            new AuthRequest(SessionId, _remote.Address, _listener.Name, mechanism, authzid, user, password), sessionToken).ConfigureAwait(false);
        if (result.Succeeded)
        {
            _tenant = result.Session;
            ListenerLog.Authenticated(_logger, SessionId, mechanism, _tenant!.TenantId);
            Reply(SmtpReplies.AuthSucceeded);
            return true;
        }

        ListenerLog.AuthFailed(_logger, SessionId, mechanism, _remote.Address);

        // Slow down guessing: each failure past the threshold waits longer before the (uniform) answer.
        var delay = throttle.RecordFailure(_remote.Address);
        if (delay > TimeSpan.Zero)
        {
            await FlushAsync(sessionToken).ConfigureAwait(false);
            await Task.Delay(delay, _services.Time, sessionToken).ConfigureAwait(false);
        }

        if (!CountError(SmtpReplies.AuthFailed))
        {
            return false;
        }

        if (throttle.IsBlocked(_remote.Address))
        {
            Reply(SmtpReplies.TooManyAuthFailures);
            return false;
        }

        return true;
    }

    /// <summary>Sends a 334 challenge and reads the client's line; null when the session must end.</summary>
    async ValueTask<string?> ChallengeAsync(string challenge, CancellationToken sessionToken)
    {
        Reply(new SmtpReply(334, null, challenge));
        var line = await ReadLineAsync(MaxAuthLineLength, _services.Limits.CommandTimeout, sessionToken, allowDrain: false).ConfigureAwait(false);
        return line.Status switch
        {
            LineStatus.Ok => line.Text,
            LineStatus.Closed => null,
            _ => "\u0001", // not base64: reported as such by DecodeSasl
        };
    }

    static string? DecodeSasl(string response, out SmtpReply? failure)
    {
        failure = null;
        if (response == "*")
        {
            // RFC 4954 section 4: the client cancels the exchange.
            failure = SmtpReplies.AuthCancelled;
            return null;
        }

        if (response == "=")
        {
            return ""; // RFC 4954 section 4: "=" is an empty initial response
        }

        var bytes = new byte[(response.Length / 4 * 3) + 3];
        if (response.Length == 0 || !Convert.TryFromBase64String(response, bytes, out var written))
        {
            failure = SmtpReplies.InvalidBase64;
            return null;
        }

        try
        {
            return StrictUtf8.GetString(bytes, 0, written);
        }
        catch (DecoderFallbackException)
        {
            failure = SmtpReplies.InvalidBase64;
            return null;
        }
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

        // Issue #3: a revoked or expired token is refused again at the next MAIL FROM of a session that used it.
        if (_tenant?.Token is { } token)
        {
            var check = _services.Identity.StillValid(token);
            if (!check.Valid)
            {
                Audit(AuditActions.TokenCheck, "refused", check.Reason, _tenant.TenantId, path.Address, crossTenant: false);
                _tenant = null;
                return CountError(Policy.SenderPolicy.TokenNoLongerValid);
            }
        }

        var decision = Policy.SenderPolicy.MailFrom(_tenant, path.Address, _tenants);
        if (!decision.Accepted)
        {
            Audit(AuditActions.SendAs, "refused", decision.Reason, _tenant?.TenantId, path.Address, decision.CrossTenant);
            return CountError(decision.Reply!);
        }

        _mailFrom = path;
        _smtpUtf8 = smtpUtf8;
        _eightBit = eightBit;
        _recipients.Clear();
        _state = SessionState.Mail;
        Reply(SmtpReplies.SenderOk);
        return true;
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

        if (!_smtpUtf8 && !path.IsAscii)
        {
            return CountError(SmtpReplies.NonAsciiAddress);
        }

        if (_recipients.Count >= _services.Limits.MaxRecipients)
        {
            // RFC 5321 section 4.5.3.1.10: 452 for "too many recipients"; the client sends the rest later.
            Reply(SmtpReplies.TooManyRecipients);
            return true;
        }

        var envelope = _services.Envelope;
        bool suppressed;
        PolicyDecision decision;
        string? recipientTenant;
        try
        {
            suppressed = _tenant is not null && envelope is not null && envelope.Suppression.Contains(_tenant.TenantId, path.Address);
            decision = Policy.SenderPolicy.Recipient(_tenant, path, _tenants, _transactionTenant, suppressed, _isReturnPath, out recipientTenant);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // The suppression list or a return-path key file cannot be read: local trouble, so try again later (RFC 3463 4.3.0).
            ListenerLog.EnvelopeStateUnreadable(_logger, SessionId, ex);
            return Reply(SmtpReplies.LocalError);
        }

        if (suppressed && !decision.Accepted)
        {
            // Issue #7: the refusal is an event in the tenant's own event log, so its app learns why the address is skipped.
            // Not a protocol error: a list with many suppressed addresses must not exhaust the session's error budget.
            envelope!.SuppressedRecipient?.Invoke(_tenant!.TenantId, path.Address, SessionId);
            return Reply(decision.Reply!);
        }

        if (!decision.Accepted)
        {
            if (decision.Reply!.IsTransient)
            {
                Reply(decision.Reply);
                return true;
            }

            ListenerLog.RelayDenied(_logger, SessionId, _remote.Address);
            Audit(AuditActions.Relay, "refused", decision.Reason, null, path.Address, crossTenant: false);
            return CountError(decision.Reply);
        }

        _transactionTenant = recipientTenant;
        _recipients.Add(path.Address);
        _state = SessionState.Rcpt;
        Reply(SmtpReplies.RecipientOk);
        return true;
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

        Reply(SmtpReplies.StartData);
        await FlushAsync(sessionToken).ConfigureAwait(false);

        var id = _services.Spool.NewId();
        using var message = new MessageBuffer();
        var received = _services.Time.GetUtcNow();
        message.Append(Encoding.UTF8.GetBytes(TraceHeader.Received(_helo ?? "unknown", _remote.Address, _services.ServerName, Protocol(), _tlsProtocol, id, received)));
        var headerLength = message.Length;

        var outcome = await ReadDataAsync(message, headerLength, sessionToken).ConfigureAwait(false);
        if (outcome == DataOutcome.Closed)
        {
            return false;
        }

        SmtpReply reply;
        switch (outcome)
        {
            case DataOutcome.TooBig:
                reply = SmtpReplies.MessageTooBig;
                break;
            case DataOutcome.BareLineEnding:
                reply = SmtpReplies.BareCrLfInData;
                ListenerLog.BareLineEnding(_logger, SessionId, _remote.Address);
                break;
            case DataOutcome.LineTooLong:
                reply = SmtpReplies.DataLineTooLong;
                break;
            default:
            {
                // Header From first (hygiene never removes it): its verified domain names the Message-ID we may add.
                var refused = HeaderFromRefusal(message, headerLength, out var author);
                using var cleaned = refused is null ? CleanHeaders(message, headerLength, id, author) : null;
                var final = cleaned ?? message;
                reply = refused
                    ?? Sign(final, headerLength, author, out var signature)
                    ?? await CommitAsync(id, final, signature, received).ConfigureAwait(false);
                break;
            }
        }

        ResetTransaction();
        if (reply.IsPositive)
        {
            _services.Metrics.Accepted(_listener.Name);
            Reply(reply);
            return true;
        }

        _services.Metrics.Rejected(_listener.Name, reply.Code);
        return reply.IsTransient ? Reply(reply) : CountError(reply);
    }

    /// <summary>
    /// Header hygiene (issue #7), before signing so the signature covers the cleaned header: client-supplied fields that
    /// claim a tenant or a delivery path are removed (X-Tenant and kin, Return-Path; Bcc too when a tenant sends), and a
    /// tenant's message without a Message-ID gets one (RFC 5322 section 3.6.4; DKIM over-signs it). Null when nothing
    /// changes, so the common case costs no copy.
    /// </summary>
    MessageBuffer? CleanHeaders(MessageBuffer message, long headerLength, string id, string? author)
    {
        if (_services.Envelope?.Hygiene is not { } hygiene)
        {
            return null;
        }

        var outbound = _tenant is not null;
        var content = message.ToSequence().Slice(headerLength);
        MessageBuffer? cleanedContent = null;
        // The names are only for the log line: no list per message when Information is off.
        var removed = _logger.IsEnabled(LogLevel.Information) ? new List<string>() : null;
        try
        {
            var result = hygiene.Clean(content, outbound, chunk => (cleanedContent ??= new MessageBuffer()).Append(chunk), removed);
            var addMessageId = outbound && !result.HasMessageId;
            if (!result.Changed && !addMessageId)
            {
                return null;
            }

            if (removed is { Count: > 0 })
            {
                ListenerLog.HeadersRemoved(_logger, SessionId, string.Join(", ", removed.Distinct(StringComparer.OrdinalIgnoreCase)));
            }

            var final = new MessageBuffer();
            final.Append(message.ToSequence().Slice(0, headerLength));
            if (addMessageId)
            {
                // The tenant's own (verified) From domain, not the gateway's name: a Message-ID domain shared by every
                // tenant would link their mail together for the reputation systems that look at it.
                var domain = author is null ? null : DomainName.OfAddress(author);
                final.Append(Encoding.ASCII.GetBytes($"Message-ID: {HeaderHygiene.NewMessageId(id, domain ?? _services.ServerName)}\r\n"));
            }

            final.Append(result.Changed ? cleanedContent?.ToSequence() ?? ReadOnlySequence<byte>.Empty : content);
            return final;
        }
        finally
        {
            cleanedContent?.Dispose();
        }
    }

    /// <summary>
    /// DKIM for a tenant's outbound message, made before the message is queued: a signing failure is 451 4.3.0 and
    /// nothing is queued, so a message that should be signed never leaves unsigned (issue #4).
    /// </summary>
    SmtpReply? Sign(MessageBuffer message, long headerLength, string? author, out byte[] signature)
    {
        signature = [];
        if (_tenant is null || author is null || _services.Signer is null)
        {
            return null;
        }

        try
        {
            // Required unless the session's tenant snapshot says "Dkim:Unsigned" (a tenant missing from it: required).
            var signingRequired = _tenants.Find(_tenant.TenantId)?.Unsigned != true;
            signature = _services.Signer.Sign(_tenant.TenantId, author, message.ToSequence().Slice(headerLength), SessionId, signingRequired);
            return null;
        }
        catch (Signing.SigningException ex)
        {
            ListenerLog.SigningFailed(_logger, SessionId, _tenant.TenantId, ex.Message);
            return SmtpReplies.SigningFailed;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Backstop for a signer that lets something else escape: still 451 and nothing queued, never a dropped
            // connection and never unsigned mail. Only the type is logged: the message could come from anywhere.
            ListenerLog.SigningFailed(_logger, SessionId, _tenant.TenantId, ex.GetType().Name);
            return SmtpReplies.SigningFailed;
        }
    }

    async ValueTask<SmtpReply> CommitAsync(string id, MessageBuffer message, byte[] signature, DateTimeOffset received)
    {
        var envelope = new SpoolEnvelope(id, _transactionTenant ?? _tenant?.TenantId, _mailFrom!.Address, [.. _recipients], received, _remote.Address.ToString(), _listener.Name, _smtpUtf8, _eightBit, Inbound: _tenant is null);
        try
        {
            // Not cancellable: once the bytes are in, finish the commit so the answer matches the disk.
            // DKIM-Signature on top, above our Received (as a signing milter would put it).
            await _services.Spool.CommitAsync(envelope, message.ToSequence(signature), CancellationToken.None).ConfigureAwait(false);
            ListenerLog.Queued(_logger, SessionId, id, _recipients.Count, message.Length);
            return SmtpReplies.Queued(id);
        }
        catch (Exception ex)
        {
            // Disk trouble is transient: 451, never 250 and never 554 (issue #2, ARCHITECTURE "Errors").
            ListenerLog.SpoolFailed(_logger, SessionId, ex);
            return SmtpReplies.SpoolFailed;
        }
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
        var p = _smtpUtf8 ? "UTF8SMTP" : _esmtp ? "ESMTP" : "SMTP";
        if (_tls)
        {
            p += "S";
        }

        if (_tenant?.Kind == TenantSessionKind.Token)
        {
            p += "A";
        }

        return p;
    }

    void ResetTransaction()
    {
        _mailFrom = null;
        _transactionTenant = null;
        _recipients.Clear();
        _smtpUtf8 = false;
        _eightBit = false;
        if (_state is SessionState.Mail or SessionState.Rcpt)
        {
            _state = SessionState.Ready;
        }
    }

    /// <summary>Sender binding for the header From (issue #3): checked on the message as received, before it is queued.</summary>
    SmtpReply? HeaderFromRefusal(MessageBuffer message, long headerLength, out string? author)
    {
        author = null;
        if (_tenant is null)
        {
            return null;
        }

        var addresses = HeaderFrom.Addresses(message.ToSequence().Slice(headerLength), out var otherSenders);
        var decision = Policy.SenderPolicy.HeaderFrom(_tenant, addresses, _tenants);
        if (decision.Accepted)
        {
            decision = Policy.SenderPolicy.OtherSenders(_tenant, otherSenders, _tenants);
            if (decision.Accepted)
            {
                author = addresses![0];
                return null;
            }

            Audit(AuditActions.HeaderFrom, "refused", decision.Reason, _tenant.TenantId, string.Join(",", otherSenders), decision.CrossTenant);
            return decision.Reply;
        }

        Audit(AuditActions.HeaderFrom, "refused", decision.Reason, _tenant.TenantId, addresses is null ? "(none)" : string.Join(",", addresses), decision.CrossTenant);
        return decision.Reply;
    }

    void Audit(string action, string result, string? reason, string? tenant, string? subject, bool crossTenant) =>
        _services.Identity.Audit.Write(new AuditEvent
        {
            Action = action,
            Result = result,
            Reason = reason,
            Tenant = tenant,
            Subject = subject,
            SessionId = SessionId,
            ClientIp = _remote.Address.ToString(),
            Listener = _listener.Name,
            TokenId = _tenant?.TokenId,
            CrossTenant = crossTenant,
        });

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

    async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        if (_out.Length == 0)
        {
            return;
        }

        var count = Encoding.UTF8.GetByteCount(_out.ToString());
        var buffer = ArrayPool<byte>.Shared.Rent(count);
        try
        {
            Encoding.UTF8.GetBytes(_out.ToString(), 0, _out.Length, buffer, 0);
            _out.Clear();
            await _stream.WriteAsync(buffer.AsMemory(0, count), cancellationToken).ConfigureAwait(false);
            await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Thrown when a TLS handshake fails; the session ends without a reply (there is no channel to reply on).</summary>
    sealed class AuthenticationFailure(Exception inner) : Exception("TLS handshake failed", inner);
}
