using System.Security.Cryptography;
using System.Text;

namespace SmtpGateway.Delivery.Inbound;

/// <summary>
/// The signature of an inbound webhook request, so that the tenant's endpoint can tell the gateway's POSTs from
/// anyone else's and refuse replays.
/// <para>Construction (version 1), exactly:</para>
/// <code>
/// secret    = UTF-8 bytes of the configured secret, leading and trailing white space removed
/// timestamp = the X-Smtpgw-Timestamp header: Unix time in seconds, decimal ASCII digits ("1767225600")
/// queueId   = the X-Smtpgw-Queue-Id header, as sent
/// signed    = UTF8(timestamp) || "." || UTF8(queueId) || "." || body   (body = the raw request body octets; ids are ASCII)
/// X-Smtpgw-Signature: "v1=" + lowercase hex of HMAC-SHA256(secret, signed)   (RFC 2104, FIPS 180-4)
/// </code>
/// <para>
/// A receiver recomputes the MAC over the body bytes exactly as received (before any parsing or newline
/// conversion), compares with <see cref="Verify"/> (constant time), and refuses timestamps too far from its own
/// clock (a few minutes) to bound replays. The timestamp is inside the MAC so that it cannot be refreshed by an
/// attacker; the queue id is inside it so that one message's signature cannot be moved to another's headers.
/// The same queue id arrives again when an attempt is retried (delivery is at least once): deduplicate on it.
/// </para>
/// </summary>
public static class InboundWebhookSignature
{
    /// <summary>Prefix of the header value; a future scheme would get "v2=".</summary>
    public const string Version = "v1=";

    /// <summary>Length of the HMAC-SHA256 output in bytes.</summary>
    const int MacLength = 32;

    /// <summary>The X-Smtpgw-Signature value ("v1=" + 64 lowercase hex digits) for <paramref name="body"/>.</summary>
    public static string Compute(byte[] secret, string timestamp, string queueId, ReadOnlySpan<byte> body)
    {
        using var hmac = Start(secret, timestamp, queueId);
        hmac.AppendData(body);
        return Format(hmac);
    }

    /// <summary>
    /// True when <paramref name="signature"/> (the X-Smtpgw-Signature value) is the v1 signature of <paramref name="body"/>
    /// with this timestamp and queue id. Compares in constant time, so that response timing does not reveal how many
    /// leading bytes of a forged MAC were right. Checking that the timestamp is recent is the caller's part.
    /// </summary>
    public static bool Verify(byte[] secret, string timestamp, string queueId, ReadOnlySpan<byte> body, string? signature)
    {
        ArgumentNullException.ThrowIfNull(secret);
        if (signature is null || !signature.StartsWith(Version, StringComparison.Ordinal) || signature.Length != Version.Length + (2 * MacLength))
        {
            return false;
        }

        Span<byte> given = stackalloc byte[MacLength];
        if (Convert.FromHexString(signature.AsSpan(Version.Length), given, out _, out var written) != System.Buffers.OperationStatus.Done || written != MacLength)
        {
            return false;
        }

        using var hmac = Start(secret, timestamp, queueId);
        hmac.AppendData(body);
        Span<byte> expected = stackalloc byte[MacLength];
        hmac.GetHashAndReset(expected);
        return CryptographicOperations.FixedTimeEquals(expected, given);
    }

    /// <summary>Streams <paramref name="body"/> into the MAC (the gateway's side: the message stays on disk).</summary>
    internal static async Task<string> ComputeAsync(byte[] secret, string timestamp, string queueId, Stream body, CancellationToken cancellationToken)
    {
        using var hmac = Start(secret, timestamp, queueId);
        var buffer = new byte[81920];
        int read;
        while ((read = await body.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
        {
            hmac.AppendData(buffer, 0, read);
        }

        return Format(hmac);
    }

    static IncrementalHash Start(byte[] secret, string timestamp, string queueId)
    {
        ArgumentNullException.ThrowIfNull(secret);
        ArgumentNullException.ThrowIfNull(timestamp);
        ArgumentNullException.ThrowIfNull(queueId);
        var hmac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, secret);
        hmac.AppendData(Encoding.UTF8.GetBytes(timestamp + "." + queueId + "."));
        return hmac;
    }

    static string Format(IncrementalHash hmac)
    {
        Span<byte> mac = stackalloc byte[MacLength];
        hmac.GetHashAndReset(mac);
        return Version + Convert.ToHexStringLower(mac);
    }
}
