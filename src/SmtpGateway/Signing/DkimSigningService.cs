using System.Buffers;
using System.Diagnostics.Metrics;
using System.Text;
using MimeKit;
using SmtpGateway.Audit;
using SmtpGateway.Diagnostics;
using SmtpGateway.Identity;

namespace SmtpGateway.Signing;

/// <summary>What the Listener calls at end of DATA for a tenant's outbound message.</summary>
public interface IMessageSigner
{
    /// <summary>
    /// DKIM-Signature header lines (CRLF-terminated) to put in front of the message; empty when the tenant has no
    /// active selector for the From domain. Throws <see cref="SigningException"/> when signing is configured but fails.
    /// </summary>
    byte[] Sign(string tenantId, string fromAddress, ReadOnlySequence<byte> message, string sessionId);
}

/// <summary>
/// Chooses the keys from the session's tenant and the header From domain (which sender binding has already proven
/// the tenant owns): nothing in the message can select another tenant's key. Signs with every active selector of
/// the domain (Ed25519 and RSA side by side when both are active, RFC 8463 section 5).
/// </summary>
public sealed class DkimSigningService(DkimKeyStore store, IDkimKeySigner keys, IAuditLog audit, TimeProvider time, TimeSpan? signatureLifetime) : IMessageSigner
{
    /// <summary>Always signed, and over-signed (listed once more than present) so nobody can add another instance later.</summary>
    static readonly string[] AlwaysSigned = ["from", "to", "subject", "date", "message-id"];

    /// <summary>RFC 6376 section 5.4.1's recommended set (plus MIME headers): signed, and over-signed, when present.</summary>
    static readonly string[] SignedWhenPresent =
    [
        "reply-to", "cc", "sender", "in-reply-to", "references", "mime-version", "content-type", "content-transfer-encoding",
        "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-message-id",
        "list-id", "list-help", "list-unsubscribe", "list-unsubscribe-post", "list-subscribe", "list-post", "list-owner", "list-archive",
    ];

    readonly Counter<long> _signs = Telemetry.Meter.CreateCounter<long>(Telemetry.DkimSignatures, description: "DKIM signatures made, per tenant and algorithm");
    readonly Counter<long> _failures = Telemetry.Meter.CreateCounter<long>(Telemetry.DkimFailures, description: "DKIM signing failures, per tenant");

    public byte[] Sign(string tenantId, string fromAddress, ReadOnlySequence<byte> message, string sessionId)
    {
        var domain = DomainName.OfAddress(fromAddress);
        if (domain is null)
        {
            return [];
        }

        var selectors = store.ActiveFor(tenantId, domain);
        if (selectors.Count == 0)
        {
            return [];
        }

        try
        {
            MimeMessage parsed;
            using (var stream = new MemoryStream(message.ToArray(), writable: false))
            {
                parsed = MimeMessage.Load(ParserOptions.Default, stream);
            }

            var fields = HeadersToSign(parsed);
            var output = new StringBuilder();

            // RSA first, Ed25519 on top: the order does not matter to verifiers; DKIM-Signature fields are not in h=.
            foreach (var selector in selectors.OrderBy(s => s.Algorithm == DkimAlgorithm.Ed25519 ? 1 : 0))
            {
                var signer = new HsmDkimSigner(keys, tenantId, selector, time, signatureLifetime);
                signer.Sign(parsed, fields);
                var header = parsed.Headers[0];
                output.Insert(0, RawHeader(header));
                parsed.Headers.RemoveAt(0);
                _signs.Add(1, new KeyValuePair<string, object?>("tenant", tenantId), new KeyValuePair<string, object?>("algorithm", selector.Algorithm.ToString().ToLowerInvariant()));
            }

            return Encoding.ASCII.GetBytes(output.ToString());
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            _failures.Add(1, new KeyValuePair<string, object?>("tenant", tenantId));
            audit.Write(new AuditEvent
            {
                Action = AuditActions.DkimSign,
                Result = "failed",
                Reason = ex is SigningException ? ex.Message : ex.GetType().Name,
                Tenant = tenantId,
                SessionId = sessionId,
                Subject = domain,
            });
            throw ex as SigningException ?? new SigningException("DKIM signing failed", ex);
        }
    }

    static List<string> HeadersToSign(MimeMessage message)
    {
        var counts = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        foreach (var header in message.Headers.Concat(message.Body?.Headers ?? []))
        {
            counts[header.Field] = counts.GetValueOrDefault(header.Field) + 1;
        }

        var fields = new List<string>();
        foreach (var name in AlwaysSigned)
        {
            fields.AddRange(Enumerable.Repeat(name, counts.GetValueOrDefault(name) + 1));
        }

        foreach (var name in SignedWhenPresent)
        {
            if (counts.GetValueOrDefault(name) is > 0 and var n)
            {
                fields.AddRange(Enumerable.Repeat(name, n + 1));
            }
        }

        return fields;
    }

    /// <summary>
    /// The header exactly as MimeKit folded it when it computed the signature (its relaxed form is what was signed;
    /// re-folding it ourselves could move a space inside h=), with every line ending made CRLF: MimeKit folds with the
    /// platform newline, and a bare LF must never reach the wire.
    /// </summary>
    static string RawHeader(Header header)
    {
        var raw = Encoding.ASCII.GetString(header.RawValue).Replace("\r\n", "\n", StringComparison.Ordinal).TrimEnd('\n');
        return $"{header.Field}:{raw.Replace("\n", "\r\n", StringComparison.Ordinal)}\r\n";
    }
}
