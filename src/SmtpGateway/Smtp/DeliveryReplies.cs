using System.Globalization;

namespace SmtpGateway.Smtp;

/// <summary>
/// The delivery section of the reply catalogue: the replies the gateway gives itself for a recipient when it delivers
/// (outbound over MX or smarthost, inbound to a tenant's drop, forward host or webhook, bounce reports) and no remote
/// reply decides. A remote server's reply is recorded as it came and is never one of these.
/// Transient local or network trouble is 4yz, a 5yz only what can never succeed (RFC 5321 section 4.2.1);
/// enhanced codes are RFC 3463 and the RFC 5248 registry. Recorded as "code enhanced text" (DeliveryOutcomes.FormatReply).
/// </summary>
public static class DeliveryReplies
{
    // Local results: drop directories, bounce reports, missing results.

    /// <summary>RFC 3463 2.0.0 "other undefined status" (success): the message is in the outbound drop directory.</summary>
    public static readonly SmtpReply Dropped = new(250, "2.0.0", "Written to drop directory");

    /// <summary>RFC 3463 4.3.0 "other or undefined mail system status": local system trouble writing the drop directory, transient.</summary>
    public static readonly SmtpReply DropFailed = new(451, "4.3.0", "Drop directory not writable");

    /// <summary>RFC 3463 2.0.0 "other undefined status" (success): the message is in the tenant's inbound drop directory.</summary>
    public static readonly SmtpReply InboundDropped = new(250, "2.0.0", "Written to inbound drop directory");

    /// <summary>RFC 3463 4.3.0 "other or undefined mail system status": local system trouble writing the inbound drop directory, transient.</summary>
    public static readonly SmtpReply InboundDropFailed = new(451, "4.3.0", "Inbound drop directory not writable");

    /// <summary>RFC 3463 2.0.0 "other undefined status" (success): a delivery report to a return path was attributed and processed.</summary>
    public static readonly SmtpReply ReportProcessed = new(250, "2.0.0", "Report processed");

    /// <summary>RFC 3463 2.0.0 "other undefined status": accepted and dropped, a report to a retired return path (never bounce a bounce).</summary>
    public static readonly SmtpReply ReportDiscarded = new(250, "2.0.0", "Report discarded: return path no longer valid");

    /// <summary>RFC 3463 4.3.0 "other or undefined mail system status": a report to a return path cannot be checked now (the
    /// tenant's HSM token does not answer); deferred, never discarded as forged.</summary>
    public static readonly SmtpReply ReportDeferred = new(451, "4.3.0", "Report deferred: return path cannot be checked now");

    /// <summary>RFC 3463 4.3.0 "other or undefined mail system status": a transport gave no result for this recipient, so it is retried.</summary>
    public static readonly SmtpReply NoResult = new(451, "4.3.0", "No result");

    /// <summary>RFC 3463 4.3.0 "other or undefined mail system status": a transport returned a short result list; the missing ones are retried.</summary>
    public static readonly SmtpReply NoResultFromTransport = new(451, "4.3.0", "No result from transport");

    /// <summary>RFC 3463 4.3.0 "other or undefined mail system status": the tenant's return path cannot be made (key file unreadable, HSM token unavailable); never sent with another sender.</summary>
    public static readonly SmtpReply ReturnPathUnavailable = new(451, "4.3.0", "Return path unavailable (local configuration)");

    // The transaction as the gateway sees it before and around the remote replies.

    /// <summary>RFC 3463 5.1.7 "bad sender's mailbox address syntax": the reverse-path cannot be sent, so retrying cannot help.</summary>
    public static readonly SmtpReply BadSenderSyntax = new(553, "5.1.7", "Bad sender address syntax");

    /// <summary>RFC 3463 5.1.3 "bad destination mailbox address syntax": this recipient cannot be sent in RCPT TO.</summary>
    public static readonly SmtpReply BadRecipientSyntax = new(553, "5.1.3", "Bad recipient address syntax");

    /// <summary>RFC 3463 5.1.2 "bad destination system address": the recipient has no routable domain.</summary>
    public static readonly SmtpReply DomainNotRoutable = new(550, "5.1.2", "Recipient domain is not routable");

    /// <summary>RFC 3463 5.6.0 "other or undefined media error": not an RFC 5322 message, and it can only be relayed parsed; permanent.</summary>
    public static readonly SmtpReply HeaderUnparseable = new(554, "5.6.0", "Message header cannot be parsed for relaying");

    /// <summary>RFC 3463 5.7.0 "other or undefined security status": the next hop wants AUTH (RFC 4954 section 6, 530), which the gateway does not do.</summary>
    public static SmtpReply AuthenticationRequired(string detail) => new(530, "5.7.0", detail);

    /// <summary>RFC 3463 4.4.2 "bad connection": the session broke under the transaction with no final reply (lost, TLS, timeout), transient.</summary>
    public static SmtpReply ConnectionLost(string exceptionType, string detail) => new(451, "4.4.2", $"Connection to next hop failed ({exceptionType}: {detail})");

    // Routing: MX lookups (RFC 5321 section 5.1).

    /// <summary>RFC 3463 4.4.3 "directory server failure": the MX query timed out or failed (SERVFAIL and the like), transient.</summary>
    public static SmtpReply DnsLookupFailed(string domain, string detail) => new(451, "4.4.3", $"DNS lookup of MX for {domain} failed ({detail})");

    /// <summary>RFC 3463 5.4.4 "unable to route": the recipient domain does not exist (NXDOMAIN), permanent.</summary>
    public static SmtpReply DomainNotFound(string domain) => new(550, "5.4.4", $"Domain {domain} does not exist (NXDOMAIN)");

    /// <summary>RFC 3463 5.4.4 "unable to route": no MX and the implicit MX (the domain itself) has no address, permanent.</summary>
    public static SmtpReply NoMxNoAddress(string domain) => new(550, "5.4.4", $"Domain {domain} has no MX and no address records");

    /// <summary>RFC 7505 section 3 and the RFC 5248 registry X.1.10 "recipient address has null MX": the domain accepts no mail.</summary>
    public static SmtpReply NullMx(string domain) => new(556, "5.1.10", $"Domain {domain} does not accept mail (null MX, RFC 7505)");

    /// <summary>RFC 3463 4.4.3 "directory server failure": no MX host could be resolved because DNS had trouble, transient.</summary>
    public static SmtpReply MxHostsLookupFailed(string domain) => new(451, "4.4.3", $"DNS lookup of MX hosts for {domain} failed");

    /// <summary>RFC 3463 5.4.4 "unable to route": every MX host name of the domain exists but none has an address, permanent.</summary>
    public static SmtpReply NoMxHostAddress(string domain) => new(550, "5.4.4", $"No MX host of {domain} has an address");

    /// <summary>RFC 3463 4.4.3 "directory server failure": the A or AAAA query for a host timed out or failed, transient.</summary>
    public static SmtpReply AddressLookupFailed(string type, string host, string detail) => new(451, "4.4.3", $"DNS lookup of {type} for {host} failed ({detail})");

    /// <summary>RFC 3463 5.4.4 "unable to route": the host name does not exist (NXDOMAIN), permanent.</summary>
    public static SmtpReply HostNotFound(string host) => new(550, "5.4.4", $"Host {host} does not exist (NXDOMAIN)");

    /// <summary>RFC 3463 4.4.3 "directory server failure": the host resolves only to addresses a public MX must not have (SSRF guard); transient, DNS may be fixed.</summary>
    public static SmtpReply NonPublicAddresses(string host) => new(451, "4.4.3", $"{host} resolves only to non-public addresses");

    /// <summary>RFC 3463 4.4.3 "directory server failure": the system resolver could not resolve the next hop's name, transient.</summary>
    public static SmtpReply CannotResolve(string host, string detail) => new(451, "4.4.3", $"Cannot resolve {host} ({detail})");

    // Sessions with the next hop (connect, greeting, STARTTLS).

    /// <summary>RFC 3463 4.4.1 "no answer from host": the next hop has no address in the egress source address's family.</summary>
    public static SmtpReply NoAddressInFamily(string host) => new(451, "4.4.1", $"No address of {host} matches the source address family");

    /// <summary>RFC 3463 4.4.1 "no answer from host": the next hop has no address to try.</summary>
    public static SmtpReply NoAddress(string host) => new(451, "4.4.1", $"No address for {host}");

    /// <summary>RFC 3463 4.4.1 "no answer from host": connected or connecting, but no greeting within the connect timeout.</summary>
    public static SmtpReply NoGreeting(string peer, TimeSpan timeout) =>
        new(451, "4.4.1", string.Create(CultureInfo.InvariantCulture, $"No greeting from {peer} within {timeout.TotalSeconds:0}s"));

    /// <summary>RFC 3463 4.4.1 "no answer from host": the connection was refused or failed (detail: socket error or exception type).</summary>
    public static SmtpReply CannotConnect(string peer, string detail) => new(451, "4.4.1", $"Cannot connect to {peer} ({detail})");

    /// <summary>RFC 3463 4.4.1 "no answer from host": the next hop refused the session (a non-220 greeting or EHLO reply, quoted).</summary>
    public static SmtpReply SessionRefused(string peer, string remoteReply) => new(451, "4.4.1", $"{peer} refused the session: {remoteReply}");

    /// <summary>RFC 3463 4.4.1 "no answer from host": the session failed in some other way before MAIL FROM.</summary>
    public static SmtpReply SessionFailed(string peer, string exceptionType) => new(451, "4.4.1", $"Session with {peer} failed before the transaction ({exceptionType})");

    /// <summary>RFC 3463 4.4.1 "no answer from host": the hop kept failing and is skipped until the time given (destination backoff).</summary>
    public static SmtpReply HopBackedOff(string host, int port, DateTimeOffset until) =>
        new(451, "4.4.1", string.Create(CultureInfo.InvariantCulture, $"{host}:{port} not tried: it kept failing; next try after {until:yyyy-MM-ddTHH:mm:ssZ}"));

    /// <summary>RFC 3463 4.4.1 "no answer from host": there was no next hop to try.</summary>
    public static readonly SmtpReply NoNextHop = new(451, "4.4.1", "No next hop");

    /// <summary>RFC 5248 registry X.7.10 "encryption needed" (RFC 3207 section 4): the TLS policy needs STARTTLS, which the next hop does not offer.</summary>
    public static SmtpReply StartTlsNotOffered(string peer, string policy) => new(451, "4.7.10", $"{peer} does not offer STARTTLS, which the TLS policy ({policy}) requires");

    /// <summary>RFC 3463 4.7.5 "cryptographic failure": the next hop's certificate does not verify for the host name the policy checks.</summary>
    public static SmtpReply CertificateNotVerified(string peer, string host, string problem) => new(451, "4.7.5", $"Certificate of {peer} does not verify for {host} ({problem})");

    /// <summary>RFC 3463 4.7.5 "cryptographic failure": the TLS handshake with the next hop failed.</summary>
    public static SmtpReply TlsHandshakeFailed(string peer) => new(451, "4.7.5", $"TLS handshake with {peer} failed");

    // Upstream AUTH to a tenant's smarthost (RFC 4954). A refused or missing credential is the tenant's configuration, not
    // the recipient's: always 4yz (deferred, retried, expired in the end), never a bounce, whatever the smarthost said.
    // The text names the credential and version (name#vN), never the secret.

    /// <summary>
    /// RFC 4954 section 6 454 4.7.0 "temporary authentication failure": the smarthost refused the credential (535 5.7.8 and
    /// kin). A remote 4yz keeps its own code and enhanced status; a remote 5yz becomes 454 4.7.0, since rotating or
    /// fixing the credential makes the same message deliverable.
    /// </summary>
    public static SmtpReply UpstreamAuthRefused(string peer, string credential, int remoteCode, string remoteText)
    {
        var remote = remoteCode > 0 ? $"{remoteCode.ToString(CultureInfo.InvariantCulture)} {remoteText}".TrimEnd() : remoteText;
        var text = $"{peer} refused upstream credential {credential} ({remote})";
        if (remoteCode is >= 400 and < 500)
        {
            var enhanced = remoteText.Split(' ', 2)[0];
            return enhanced.StartsWith("4.", StringComparison.Ordinal) && enhanced.Count(c => c == '.') == 2
                ? new SmtpReply(remoteCode, enhanced, text)
                : new SmtpReply(remoteCode, "4.7.0", text);
        }

        return new SmtpReply(454, "4.7.0", text);
    }

    /// <summary>RFC 3463 4.7.0: the vault could not produce the credential (HSM unavailable, record undecryptable, token endpoint down, no vault configured).</summary>
    public static SmtpReply UpstreamCredentialUnavailable(string credential, string detail) =>
        new(454, "4.7.0", $"Upstream credential {credential} unavailable ({detail})");

    /// <summary>RFC 3463 4.7.0: the tenant's egress names a credential of which no version is stored (or every version retired).</summary>
    public static SmtpReply UpstreamCredentialMissing(string credential) => new(454, "4.7.0", $"Upstream credential {credential} has no usable version in the vault");

    /// <summary>RFC 3463 4.7.0: the smarthost offers no SASL mechanism the gateway can use with this credential (RFC 4954 section 3).</summary>
    public static SmtpReply UpstreamAuthNotOffered(string peer, string wanted) => new(454, "4.7.0", $"{peer} does not offer AUTH {wanted}");

    /// <summary>RFC 5248 registry X.7.11 "encryption required for requested authentication mechanism": the session is not encrypted, so no credential is sent.</summary>
    public static SmtpReply UpstreamAuthNeedsTls(string peer) => new(454, "4.7.11", $"{peer}: session is not encrypted; the credential is not sent");

    /// <summary>RFC 3463 4.4.2 "bad connection": the session broke during AUTH.</summary>
    public static SmtpReply UpstreamAuthBroken(string peer, string exceptionType) => new(451, "4.4.2", $"Session with {peer} failed during AUTH ({exceptionType})");

    // Inbound routes of a tenant (forward host, webhook).

    /// <summary>RFC 3463 4.3.5 "system incorrectly configured": no forward host or port; transient, the operator can fix it before the message expires.</summary>
    public static readonly SmtpReply ForwardNotConfigured = new(451, "4.3.5", "Inbound forward host is not configured");

    /// <summary>RFC 3463 4.3.5 "system incorrectly configured": the webhook URL is missing or not http(s).</summary>
    public static readonly SmtpReply WebhookNotConfigured = new(451, "4.3.5", "Inbound webhook is not configured");

    /// <summary>RFC 3463 4.3.5 "system incorrectly configured": the webhook's signing secret is not set or not readable.</summary>
    public static readonly SmtpReply WebhookSecretUnavailable = new(451, "4.3.5", "Inbound webhook secret unavailable");

    /// <summary>RFC 3463 2.0.0 "other undefined status" (success): the webhook answered 2xx.</summary>
    public static SmtpReply WebhookAccepted(int status) => new(250, "2.0.0", string.Create(CultureInfo.InvariantCulture, $"Webhook answered {status}"));

    /// <summary>RFC 3463 4.4.1 "no answer from host": the webhook answered, but not 2xx; retried (inbound mail gets no DSN).</summary>
    public static SmtpReply WebhookNotAccepted(int status) => new(451, "4.4.1", string.Create(CultureInfo.InvariantCulture, $"Webhook answered {status}"));

    /// <summary>RFC 3463 4.4.1 "no answer from host": no webhook answer within the timeout.</summary>
    public static SmtpReply WebhookTimeout(TimeSpan timeout) =>
        new(451, "4.4.1", string.Create(CultureInfo.InvariantCulture, $"Webhook did not answer within {timeout.TotalSeconds:0.###}s"));

    /// <summary>RFC 3463 4.4.1 "no answer from host": connection refused, DNS, TLS or reset on the way to the webhook.</summary>
    public static SmtpReply WebhookUnreachable(string detail) => new(451, "4.4.1", $"Webhook unreachable ({detail})");

    /// <summary>RFC 3463 4.3.0 "other or undefined mail system status": reading the spooled message failed, local trouble.</summary>
    public static readonly SmtpReply LocalReadError = new(451, "4.3.0", "Local error reading the message");

    /// <summary>
    /// RFC 3463 4.4.3 (as <see cref="NonPublicAddresses"/>): every address of the destination is in a range the destination
    /// guard refuses (loopback, private, link-local, metadata, ...); transient, since DNS or the configuration may be fixed.
    /// </summary>
    public static SmtpReply DestinationRefused(string host, string range) => new(451, "4.4.3", $"{host} resolves only to refused non-public addresses ({range})");
}
