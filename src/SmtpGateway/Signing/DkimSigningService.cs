using System.Buffers;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using SmtpGateway.Audit;
using SmtpGateway.Diagnostics;
using SmtpGateway.Envelope;
using SmtpGateway.Identity;

namespace SmtpGateway.Signing;

/// <summary>What the Signing stage calls at end of DATA for a tenant's outbound message.</summary>
public interface IMessageSigner
{
    /// <summary>
    /// DKIM-Signature header lines (CRLF-terminated) to put in front of the message. Empty only when
    /// <paramref name="signingRequired"/> is false (the tenant's "Dkim:Unsigned") and the tenant has no active selector
    /// for the From domain. Throws <see cref="SigningException"/> (→ 451 4.3.0) when signing is required and there is no
    /// active selector, when the selector file is unreadable or corrupt, and when the HSM cannot sign.
    /// </summary>
    /// <param name="headerSection">The header section as it will be queued (after hygiene, without our Received field).</param>
    /// <param name="bodyHash">SHA-256 of the relaxed canonical body (<see cref="DkimBodyHash"/>), computed while the body arrived.</param>
    byte[] Sign(string tenantId, string fromAddress, HeaderSection headerSection, ReadOnlySpan<byte> bodyHash, string sessionId, bool signingRequired);

    /// <summary>
    /// False when the tenant has no active DKIM selector at all, so that a message beginning now needs no body hash
    /// (issue 15: SHA-256 over every body of a tenant that does not sign). True when it has one, and when its selector file
    /// cannot be read (the signature then fails closed). A message hashed on false and signed after a selector became
    /// active meanwhile gets <see cref="SigningException"/> from <see cref="Sign"/> (451), never a signature without the hash.
    /// </summary>
    bool MaySign(string tenantId);
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

    /// <summary>A whole message in memory (tests, benchmarks): split into header section and body, the body hashed here.</summary>
    public byte[] Sign(string tenantId, string fromAddress, ReadOnlySequence<byte> message, string sessionId, bool signingRequired)
    {
        var bytes = message.ToArray();
        var header = HeaderSection.Parse(bytes, out var consumed);
        using var hash = new DkimBodyHash();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes.AsMemory(consumed)));
        while (reader.TryReadTo(out ReadOnlySequence<byte> line, "\r\n"u8))
        {
            hash.AppendLine(line);
        }

        if (!reader.End)
        {
            hash.AppendLine(reader.UnreadSequence);
        }

        return Sign(tenantId, fromAddress, header, hash.Finish(), sessionId, signingRequired);
    }

    /// <inheritdoc />
    public bool MaySign(string tenantId)
    {
        try
        {
            return store.Selectors(tenantId).Any(s => s.State == SelectorState.Active);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Whatever went wrong, hash the body: the signature then fails closed with the real reason (451).
            return true;
        }
    }

    /// <param name="bodyHash">Empty when the body was not hashed (<see cref="MaySign"/> said false when it began).</param>
    public byte[] Sign(string tenantId, string fromAddress, HeaderSection headerSection, ReadOnlySpan<byte> bodyHash, string sessionId, bool signingRequired)
    {
        var domain = DomainName.OfAddress(fromAddress);
        try
        {
            // Every way of not finding keys is inside the try: a missing, unreadable or corrupt selector file is counted
            // and audited like an HSM failure, and reaches the session as SigningException (451), never as a crash.
            if (domain is null)
            {
                if (signingRequired)
                {
                    throw new SigningException("the header From address has no domain to sign for");
                }

                return [];
            }

            var selectors = store.ActiveFor(tenantId, domain);
            if (selectors.Count == 0)
            {
                if (signingRequired)
                {
                    // Fail closed: a tenant that has not opted out ("Dkim:Unsigned") never sends unsigned mail.
                    throw new SigningException($"tenant '{tenantId}' has no active DKIM selector for {domain}");
                }

                return [];
            }

            if (bodyHash.IsEmpty)
            {
                // A selector became active while the message arrived (or it began before the session had a tenant): the
                // body was not hashed, and a signature without its hash would be false. The client sends it again.
                throw new SigningException($"tenant '{tenantId}' has an active DKIM selector for {domain}, but this message's body was not hashed");
            }

            // The header section was split into fields once, while it streamed in; every signature reuses that and the body hash.
            ArgumentNullException.ThrowIfNull(headerSection);
            var fields = headerSection.Fields;
            var names = HeadersToSign(fields);
            var signedHeaders = CanonicalHeaders(fields, names);
            var bodyHashText = Convert.ToBase64String(bodyHash);
            var now = time.GetUtcNow().ToUnixTimeSeconds();

            // RSA first, Ed25519 on top: the order does not matter to verifiers; DKIM-Signature fields are not in h=.
            // Each header goes in front of the ones before it, so the output lists them in the reverse order.
            var headers = new List<byte[]>(selectors.Count);
            var length = 0;
            foreach (var ed25519Pass in (ReadOnlySpan<bool>)[false, true])
            {
                foreach (var selector in selectors)
                {
                    if ((selector.Algorithm == DkimAlgorithm.Ed25519) != ed25519Pass)
                    {
                        continue;
                    }

                    var header = SignatureHeader(tenantId, selector, names, bodyHashText, now, signedHeaders.WrittenSpan);
                    headers.Add(header);
                    length += header.Length;
                    _signs.Add(1, new KeyValuePair<string, object?>("tenant", tenantId), new KeyValuePair<string, object?>("algorithm", AlgorithmTag(selector.Algorithm)));
                }
            }

            var output = new byte[length];
            var at = 0;
            for (var i = headers.Count - 1; i >= 0; i--)
            {
                headers[i].CopyTo(output, at);
                at += headers[i].Length;
            }

            return output;
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

    /// <summary>
    /// One DKIM-Signature field (RFC 6376 section 3.5), folded at 78 columns at tag boundaries (and inside h= at its colons,
    /// inside b= anywhere: white space there is ignored), as MimeKit folds it. The signed data is the selected fields'
    /// relaxed forms, then this field's own relaxed form with an empty b= and no CRLF (section 3.7).
    /// </summary>
    byte[] SignatureHeader(string tenantId, DkimSelector selector, List<string> names, string bodyHash, long now, ReadOnlySpan<byte> signedHeaders)
    {
        var tags = new List<string>
        {
            "v=1",
            selector.Algorithm == DkimAlgorithm.Ed25519 ? "a=ed25519-sha256" : "a=rsa-sha256",
            $"d={selector.Domain}",
            $"s={selector.Selector}",
            "c=relaxed/relaxed",
            string.Create(CultureInfo.InvariantCulture, $"t={now}"),
        };
        if (signatureLifetime is { } lifetime)
        {
            tags.Add(string.Create(CultureInfo.InvariantCulture, $"x={now + (long)lifetime.TotalSeconds}"));
        }

        var text = new FoldedField("DKIM-Signature:");
        foreach (var tag in tags)
        {
            text.AddTag(tag + ";");
        }

        text.AddList("h=", names, ':', ';');
        text.StartTag($"bh={bodyHash};");
        text.StartTag("b=");

        var data = new ArrayBufferWriter<byte>(signedHeaders.Length + 512);
        data.Write(signedHeaders);
        DkimHeaders.AppendRelaxed(data, Encoding.ASCII.GetBytes(text.ToString()), withCrlf: false);
        text.AddChunked(Convert.ToBase64String(keys.Sign(tenantId, selector, data.WrittenSpan.ToArray())));
        return Encoding.ASCII.GetBytes(text + "\r\n");
    }

    /// <summary>
    /// The selected fields' relaxed forms in h= order. RFC 6376 section 5.4.2: a name listed n times takes its instances
    /// from the bottom of the header section up; a listing with no instance left (over-signing) contributes nothing.
    /// </summary>
    static ArrayBufferWriter<byte> CanonicalHeaders(IReadOnlyList<HeaderField> fields, List<string> names)
    {
        var output = new ArrayBufferWriter<byte>(1024);
        var taken = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            var skip = taken.GetValueOrDefault(name);
            taken[name] = skip + 1;
            for (var i = fields.Count - 1; i >= 0; i--)
            {
                if (fields[i].Name == name && skip-- == 0)
                {
                    DkimHeaders.AppendRelaxed(output, fields[i].Raw.Span);
                    break;
                }
            }
        }

        return output;
    }

    static List<string> HeadersToSign(IReadOnlyList<HeaderField> headers)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var header in headers)
        {
            counts[header.Name] = counts.GetValueOrDefault(header.Name) + 1;
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

    static string AlgorithmTag(DkimAlgorithm algorithm) => algorithm switch
    {
        DkimAlgorithm.Rsa2048 => "rsa2048",
        DkimAlgorithm.Ed25519 => "ed25519",
        _ => algorithm.ToString().ToLowerInvariant(),
    };
}

/// <summary>A header field written with folding at 78 columns (RFC 5322 section 2.1.1), the way MimeKit folds DKIM-Signature.</summary>
internal sealed class FoldedField(string start)
{
    const int Width = 78;
    readonly StringBuilder _text = new(start);
    int _column = start.Length;

    /// <summary>A whole tag (with its ';'): on this line after a space if it fits, else on a new line.</summary>
    public void AddTag(string tag)
    {
        if (_column + 1 + tag.Length <= Width)
        {
            _text.Append(' ').Append(tag);
            _column += 1 + tag.Length;
        }
        else
        {
            NewLine();
            _text.Append(tag);
            _column += tag.Length;
        }
    }

    /// <summary>A list tag (h=): whole when it fits; otherwise on a new line, folded after a separator where needed.</summary>
    public void AddList(string prefix, List<string> items, char separator, char terminator)
    {
        var whole = prefix + string.Join(separator, items) + terminator;
        if (_column + 1 + whole.Length <= Width)
        {
            AddTag(whole);
            return;
        }

        NewLine();
        _text.Append(prefix);
        _column += prefix.Length;
        for (var i = 0; i < items.Count; i++)
        {
            var item = items[i] + (i == items.Count - 1 ? terminator : separator);
            if (_column + item.Length > Width)
            {
                NewLine();
            }

            _text.Append(item);
            _column += item.Length;
        }
    }

    /// <summary>A tag on a line of its own (bh=, and b= whose value is added later), as MimeKit places them.</summary>
    public void StartTag(string prefix)
    {
        NewLine();
        _text.Append(prefix);
        _column += prefix.Length;
    }

    /// <summary>A value that may be cut anywhere (base64 of b=, where white space is ignored), filling each line to the width.</summary>
    public void AddChunked(string value)
    {
        var at = 0;
        while (at < value.Length)
        {
            if (_column >= Width)
            {
                NewLine();
            }

            var n = Math.Min(Width - _column, value.Length - at);
            _text.Append(value, at, n);
            _column += n;
            at += n;
        }
    }

    void NewLine()
    {
        _text.Append("\r\n\t");
        _column = 1;
    }

    public override string ToString() => _text.ToString();
}
