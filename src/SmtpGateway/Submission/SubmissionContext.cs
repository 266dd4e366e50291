using System.Net;
using SmtpGateway.Identity;
using SmtpGateway.Smtp;

namespace SmtpGateway.Submission;

/// <summary>The door a submission came through: audit events and metrics say which.</summary>
public enum SubmissionChannel
{
    Smtp,
    Mcp,
    Api,
}

/// <summary>
/// One client's conversation with the <see cref="SubmissionPipeline"/>: who it is (tenant session, set only by the Identity
/// stage), the tenant snapshot it began with, and the open transaction. The channel (an SMTP session, an MCP call) owns it
/// and states the protocol facts; the stages decide everything else.
/// </summary>
public sealed class SubmissionContext
{
    readonly List<string> _recipients = [];

    /// <summary>The tenant's session slot (Limits:MaxSessions), held from identification until <see cref="SubmissionPipeline.Close"/>.</summary>
    IDisposable? _sessionSlot;

    internal SubmissionContext(string sessionId, SubmissionChannel channel, IPAddress client, string listener, TenantSnapshot tenants)
    {
        SessionId = sessionId;
        Channel = channel;
        ClientAddress = client;
        Listener = listener;
        Tenants = tenants;
    }

    public string SessionId { get; }

    public SubmissionChannel Channel { get; }

    public IPAddress ClientAddress { get; }

    /// <summary>Listener name (or the channel's name for MCP and the admin API).</summary>
    public string Listener { get; }

    /// <summary>The tenant map this conversation started with: a reload mid-session does not change who it is.</summary>
    public TenantSnapshot Tenants { get; }

    /// <summary>The tenant this conversation acts for; null for unauthenticated (inbound) mail.</summary>
    public TenantSession? Tenant { get; internal set; }

    /// <summary>HELO/EHLO argument, already validated by the grammar (it goes into the Received field).</summary>
    public string? Helo { get; set; }

    /// <summary>RFC 3848 "with" keyword for the Received field (ESMTPSA and kin), stated by the channel.</summary>
    public string Protocol { get; set; } = "ESMTP";

    /// <summary>TLS version for the Received field, or null in clear text.</summary>
    public string? TlsProtocol { get; set; }

    public SmtpPath? MailFrom { get; private set; }

    public bool SmtpUtf8 { get; private set; }

    public bool EightBitMime { get; private set; }

    /// <summary>Tenant of the recipients accepted so far (one transaction serves one tenant).</summary>
    public string? TransactionTenant { get; internal set; }

    public IReadOnlyList<string> Recipients => _recipients;

    /// <summary>
    /// Set when the conversation may not start (the network-matched tenant is at its MaxSessions): the channel answers it in
    /// place of its greeting and ends.
    /// </summary>
    public SmtpReply? ConnectRefusal { get; internal set; }

    internal void HoldSessionSlot(IDisposable? slot)
    {
        // One slot per conversation: a second identification (AUTH after a revoked token) gives the first one back.
        _sessionSlot?.Dispose();
        _sessionSlot = slot;
    }

    public bool InTransaction => MailFrom is not null;

    internal void BeginTransaction(SmtpPath mailFrom, bool smtpUtf8, bool eightBitMime)
    {
        ResetTransaction();
        MailFrom = mailFrom;
        SmtpUtf8 = smtpUtf8;
        EightBitMime = eightBitMime;
    }

    internal void AddRecipient(string address, string? tenant)
    {
        TransactionTenant = tenant;
        _recipients.Add(address);
    }

    /// <summary>RSET, EHLO, end of DATA: the transaction is gone, the identity stays.</summary>
    public void ResetTransaction()
    {
        MailFrom = null;
        SmtpUtf8 = false;
        EightBitMime = false;
        TransactionTenant = null;
        _recipients.Clear();
    }
}
