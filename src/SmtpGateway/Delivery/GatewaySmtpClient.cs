using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Authentication;
using MailKit;
using MailKit.Net.Smtp;
using MimeKit;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery;

/// <summary>
/// MailKit's SmtpClient, changed in three ways for relaying:
/// <list type="number">
/// <item>a refused RCPT is recorded, not thrown, so one transaction yields one outcome per recipient
/// (RFC 5321 section 3.3: RCPT replies are per recipient);</item>
/// <item>the message is never prepared (re-encoded) before sending: see <see cref="RawMessageCarrier"/>;</item>
/// <item>the SIZE parameter comes from the known spooled length instead of a second serialisation.</item>
/// </list>
/// Envelope sender and recipients are the spooled ones, never taken from headers.
/// MailKit sends no RSET after a successful transaction (none is needed: RFC 5321 section 4.1.1.4 ends the
/// transaction at the final reply) and sends RSET itself after a refused MAIL/RCPT/DATA; if RSET fails it
/// disconnects, which the pool sees as !IsConnected.
/// </summary>
internal sealed class GatewaySmtpClient : SmtpClient
{
    readonly Dictionary<MailboxAddress, SmtpResponse> _refused = new(ReferenceEqualityComparer.Instance);
    long _knownSize = -1;
    bool _replied;

    /// <summary>
    /// Result of one transaction; <see cref="Reusable"/> is false when the connection must not go back to the pool.
    /// <see cref="SessionLost"/> is true when the session ended under the transaction (a 421 reply, RFC 5321 section 3.8,
    /// or a dropped connection): the replies say nothing about the recipients, so the whole transaction may be tried elsewhere.
    /// </summary>
    /// <para><see cref="LostBeforeReply"/>: the session broke (EOF, reset, I/O error) before any reply of this transaction
    /// arrived, so no DATA was sent and nothing can have been accepted: sending it again at once cannot duplicate it.</para>
    public readonly record struct TransactionResult(IReadOnlyList<RecipientResult> Results, bool Reusable, bool Exact, bool SessionLost = false, bool LostBeforeReply = false);

    /// <summary>The address this connection reached (for the event log); null before connecting.</summary>
    public IPAddress? RemoteAddress { get; set; }

    /// <summary>"TLSv1.3 TLS_AES_256_GCM_SHA384" when the session is encrypted, else null.</summary>
    public string? TlsDescription => IsSecure
        ? string.Create(CultureInfo.InvariantCulture, $"{TlsName(SslProtocol)} {SslCipherSuite?.ToString() ?? "unknown"}")
        : null;

    static string TlsName(SslProtocols protocol) => protocol switch
    {
#pragma warning disable SYSLIB0039 // naming old protocols is not using them
        SslProtocols.Tls => "TLSv1.0",
        SslProtocols.Tls11 => "TLSv1.1",
#pragma warning restore SYSLIB0039
        SslProtocols.Tls12 => "TLSv1.2",
        SslProtocols.Tls13 => "TLSv1.3",
        _ => protocol.ToString(),
    };

    /// <summary>The connected socket under MailKit's stream (set by SmtpConnector), for <see cref="IsQuiet"/>.</summary>
    public Socket? Socket { get; set; }

    /// <summary>
    /// True when the peer has sent nothing since the last reply was read: no EOF, no reset, no unsolicited 421 (RFC 5321
    /// section 3.8). A pooled connection only ever goes back after a completed transaction (RFC 5321 section 4.1.1.4: the
    /// final reply ends it; MailKit itself sends RSET after a refused one), so a quiet connection is exactly where that
    /// reply left it and can be reused without a round trip. One poll(2), as .NET's HTTP connection pool checks an idle
    /// connection. Anything pending sends the caller to <see cref="ResetAsync"/>.
    /// </summary>
    public bool IsQuiet
    {
        get
        {
            try
            {
                return Socket is { Connected: true } socket && !socket.Poll(0, SelectMode.SelectRead);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                return false;
            }
        }
    }

    /// <summary>RSET (RFC 5321 section 4.1.1.5) before reusing a pooled connection on which something arrived: a clean transaction state, and proof that the session is alive.</summary>
    public async Task<bool> ResetAsync(CancellationToken cancellationToken)
    {
        var response = await SendCommandAsync("RSET", cancellationToken).ConfigureAwait(false);
        return (int)response.StatusCode / 100 == 2;
    }

    /// <summary>Runs one SMTP transaction for <paramref name="recipients"/>. Throws only when <paramref name="cancellationToken"/> is cancelled.</summary>
    public Task<TransactionResult> SendSpooledAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken) =>
        SendSpooledAsync(message, recipients, mailFrom: null, cancellationToken);

    /// <summary>Runs one SMTP transaction for <paramref name="recipients"/>. Throws only when <paramref name="cancellationToken"/> is cancelled.</summary>
    /// <param name="message">The spooled message.</param>
    /// <param name="recipients">Recipients for this transaction.</param>
    /// <param name="mailFrom">The reverse-path to send: the tenant's return path, or the envelope sender; null means the envelope sender.</param>
    /// <param name="cancellationToken">Cancels the transaction.</param>
    public async Task<TransactionResult> SendSpooledAsync(SpooledMessage message, IReadOnlyList<string> recipients, string? mailFrom, CancellationToken cancellationToken)
    {
        var results = new RecipientResult?[recipients.Count];
        var envelope = message.Envelope;

        MailboxAddress sender;
        try
        {
            // The null reverse-path "" becomes MAIL FROM:<> (RFC 5321 section 4.5.5).
            sender = new MailboxAddress("", mailFrom ?? envelope.MailFrom);
        }
        catch (ParseException)
        {
            return new TransactionResult(recipients.Select(r => RecipientResult.FromReply(r, DeliveryReplies.BadSenderSyntax)).ToArray(), true, true);
        }

        var mailboxes = new List<MailboxAddress>(recipients.Count);
        var indexOf = new Dictionary<MailboxAddress, int>(ReferenceEqualityComparer.Instance);
        for (var i = 0; i < recipients.Count; i++)
        {
            try
            {
                var mailbox = new MailboxAddress("", recipients[i]);
                mailboxes.Add(mailbox);
                indexOf[mailbox] = i;
            }
            catch (ParseException)
            {
                results[i] = RecipientResult.FromReply(recipients[i], DeliveryReplies.BadRecipientSyntax);
            }
        }

        if (mailboxes.Count == 0)
        {
            return new TransactionResult(Complete(results, recipients), true, true);
        }

        // SMTPUTF8 (RFC 6531) is requested when the client used it and this server offers it; it needs 8BITMIME too.
        var format = FormatOptions.Default.Clone();
        format.NewLineFormat = NewLineFormat.Dos;
        format.International = envelope.SmtpUtf8
            && Capabilities.HasFlag(SmtpCapabilities.UTF8)
            && Capabilities.HasFlag(SmtpCapabilities.EightBitMime);

        RawMessageCarrier.Carrier carrier;
        try
        {
            carrier = await RawMessageCarrier.TryCreateAsync(message, format, cancellationToken).ConfigureAwait(false)
                ?? await RawMessageCarrier.LoadParsedAsync(message, cancellationToken).ConfigureAwait(false);
        }
        catch (FormatException)
        {
            // Not an RFC 5322 message (it does not start with a header field) and MailKit can only send parsed messages:
            // retrying cannot help. Unreachable behind the Listener, which prepends Received.
            return new TransactionResult(Complete(results, recipients, DeliveryReplies.HeaderUnparseable), true, false);
        }

        using var _ = carrier;
        _refused.Clear();
        _replied = false;
        _knownSize = carrier.Length;
        try
        {
            var text = await SendAsync(format, carrier.Message, sender, mailboxes, cancellationToken).ConfigureAwait(false);
            foreach (var mailbox in mailboxes)
            {
                results[indexOf[mailbox]] = Refused(mailbox) ?? RecipientResult.FromReply(recipients[indexOf[mailbox]], 250, text);
            }
        }
        catch (SmtpCommandException ex) when (ex.ErrorCode == SmtpErrorCode.SenderNotAccepted)
        {
            // MAIL refused: the RCPT replies that follow (often 503) say nothing about the recipients.
            foreach (var mailbox in mailboxes)
            {
                results[indexOf[mailbox]] = RecipientResult.FromReply(recipients[indexOf[mailbox]], (int)ex.StatusCode, ex.Message);
            }

            if (ex.StatusCode == SmtpStatusCode.ServiceNotAvailable)
            {
                return new TransactionResult(Complete(results, recipients), false, carrier.Exact, SessionLost: true);
            }
        }
        catch (SmtpCommandException ex)
        {
            // DATA refused, the final reply was not 250, or no RCPT was accepted (then every recipient has its own reply).
            foreach (var mailbox in mailboxes)
            {
                results[indexOf[mailbox]] = Refused(mailbox) ?? RecipientResult.FromReply(recipients[indexOf[mailbox]], (int)ex.StatusCode, ex.Message);
            }

            if (ex.StatusCode == SmtpStatusCode.ServiceNotAvailable)
            {
                return new TransactionResult(Complete(results, recipients), false, carrier.Exact, SessionLost: true);
            }
        }
        catch (ServiceNotAuthenticatedException ex)
        {
            // 530 (RFC 4954 section 6): the smarthost wants AUTH, which this gateway does not do yet.
            foreach (var mailbox in mailboxes)
            {
                results[indexOf[mailbox]] = Refused(mailbox) ?? RecipientResult.FromReply(recipients[indexOf[mailbox]], DeliveryReplies.AuthenticationRequired(ex.Message));
            }
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            // Connection lost, TLS failure, timeout, protocol garbage: no final reply, so transient.
            // A recipient already refused in this transaction keeps that reply.
            foreach (var mailbox in mailboxes)
            {
                results[indexOf[mailbox]] = Refused(mailbox) ?? RecipientResult.FromReply(recipients[indexOf[mailbox]], DeliveryReplies.ConnectionLost(ex.GetType().Name, ex.Message));
            }

            return new TransactionResult(Complete(results, recipients), false, carrier.Exact, SessionLost: true, LostBeforeReply: !_replied);
        }
        finally
        {
            _knownSize = -1;
        }

        // A 421 to a RCPT (RFC 5321 section 3.8: the server is closing the session) is about the session, not that recipient.
        if (_refused.Values.Any(r => r.StatusCode == SmtpStatusCode.ServiceNotAvailable))
        {
            return new TransactionResult(Complete(results, recipients), false, carrier.Exact, SessionLost: true);
        }

        return new TransactionResult(Complete(results, recipients), IsConnected, carrier.Exact);

        RecipientResult? Refused(MailboxAddress mailbox) =>
            _refused.TryGetValue(mailbox, out var response)
                ? RecipientResult.FromReply(recipients[indexOf[mailbox]], (int)response.StatusCode, response.Response) with { AboutRecipient = true }
                : null;
    }

    static RecipientResult[] Complete(RecipientResult?[] results, IReadOnlyList<string> recipients, SmtpReply? missing = null) =>
        results.Select((r, i) => r ?? RecipientResult.FromReply(recipients[i], missing ?? DeliveryReplies.NoResult)).ToArray();

    protected override void OnRecipientNotAccepted(MimeMessage message, MailboxAddress mailbox, SmtpResponse response)
    {
        _replied = true;
        _refused[mailbox] = response;
    }

    protected override void OnSenderAccepted(MimeMessage message, MailboxAddress mailbox, SmtpResponse response)
    {
        _replied = true;
        base.OnSenderAccepted(message, mailbox, response);
    }

    protected override void OnSenderNotAccepted(MimeMessage message, MailboxAddress mailbox, SmtpResponse response)
    {
        _replied = true;
        base.OnSenderNotAccepted(message, mailbox, response);
    }

    protected override void Prepare(FormatOptions options, MimeMessage message, EncodingConstraint constraint, int maxLineLength)
    {
        // Deliberately empty: relaying must not re-encode (see RawMessageCarrier).
    }

    protected override long GetSize(FormatOptions options, MimeMessage message, CancellationToken cancellationToken) =>
        _knownSize >= 0 ? _knownSize : base.GetSize(options, message, cancellationToken);

    protected override Task<long> GetSizeAsync(FormatOptions options, MimeMessage message, CancellationToken cancellationToken) =>
        _knownSize >= 0 ? Task.FromResult(_knownSize) : base.GetSizeAsync(options, message, cancellationToken);
}
