using System.Globalization;
using SmtpGateway.Smtp;

namespace SmtpGateway.Delivery;

/// <summary>What became of one recipient in one attempt. Closed: every reply and every error maps to exactly one.</summary>
public enum DeliveryOutcome
{
    /// <summary>2xx: the next hop took responsibility (RFC 5321 section 6.1).</summary>
    Delivered,

    /// <summary>4xx, or no usable reply (network, TLS, timeout): try again later (RFC 5321 section 4.5.4.1).</summary>
    Deferred,

    /// <summary>5xx: will never succeed as sent (RFC 5321 section 4.2.1); kept for a bounce.</summary>
    Bounced,
}

/// <summary>The outcome for one recipient with the reply it came from, e.g. "550 5.1.1 No such user".</summary>
public readonly record struct RecipientResult(string Recipient, DeliveryOutcome Outcome, string Reply)
{
    /// <summary>The next hop that gave the reply, e.g. "mx1.example.net[192.0.2.1]:25"; null when no host was reached (DNS failure, local error).</summary>
    public string? RemoteHost { get; init; }

    /// <summary>TLS version and cipher of the session that carried the transaction ("TLSv1.3 TLS_AES_256_GCM_SHA384"); null for plaintext or no session.</summary>
    public string? Tls { get; init; }

    /// <summary>
    /// True when the reply was the answer to this recipient's own RCPT (RFC 5321 section 3.3). A refused MAIL FROM or DATA
    /// is copied to every recipient of the transaction but says nothing about any address: it never suppresses one.
    /// </summary>
    public bool AboutRecipient { get; init; }

    /// <summary>The reverse-path the transaction was sent with (the tenant's VERP return path); null when none was sent.</summary>
    public string? ReturnPath { get; init; }

    /// <summary>Builds a result from a reply; the outcome comes from <see cref="DeliveryOutcomes.FromReplyCode"/>.</summary>
    public static RecipientResult FromReply(string recipient, int code, string text) =>
        new(recipient, DeliveryOutcomes.FromReplyCode(code), DeliveryOutcomes.FormatReply(code, text));

    /// <summary>Builds a result from one of the gateway's own replies (<see cref="DeliveryReplies"/>), recorded as "code enhanced text".</summary>
    public static RecipientResult FromReply(string recipient, SmtpReply reply) =>
        FromReply(recipient, reply.Code, DeliveryOutcomes.ReplyText(reply));
}

/// <summary>The one place where a reply becomes an outcome.</summary>
public static class DeliveryOutcomes
{
    /// <summary>
    /// RFC 5321 section 4.2.1: the first digit decides. 2yz done, 4yz transient, 5yz permanent.
    /// Anything else as a final reply (1yz, 3yz, garbage) is a protocol error, treated as transient.
    /// Errors without a reply (connection lost, TLS failure, timeout) are given a synthetic 4yz reply
    /// by the transport and come through here too.
    /// </summary>
    public static DeliveryOutcome FromReplyCode(int code) => (code / 100) switch
    {
        2 => DeliveryOutcome.Delivered,
        5 => DeliveryOutcome.Bounced,
        _ => DeliveryOutcome.Deferred,
    };

    /// <summary>"code text" on one line; multi-line replies are joined so that logs and state files stay one line per reply.</summary>
    public static string FormatReply(int code, string? text)
    {
        var flat = string.Join(' ', (text ?? "").Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        return flat.Length == 0
            ? code.ToString(CultureInfo.InvariantCulture)
            : string.Create(CultureInfo.InvariantCulture, $"{code} {flat}");
    }

    /// <summary>The same one-line form for one of the gateway's own replies: "451 4.3.0 Drop directory not writable".</summary>
    public static string FormatReply(SmtpReply reply) => FormatReply(reply.Code, ReplyText(reply));

    /// <summary>What follows the code: the enhanced status, a space and the text ("4.3.0 Drop directory not writable"); the text alone without one.</summary>
    public static string ReplyText(SmtpReply reply) => reply.Enhanced is null ? reply.Text : $"{reply.Enhanced} {reply.Text}";
}
