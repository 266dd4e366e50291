using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;
using System.Text;
using MimeKit;

namespace SmtpGateway.Envelope;

/// <summary>Reads the author addresses (RFC 5322 section 3.6.2 From) of a received message, for sender binding.</summary>
public static class HeaderFrom
{
    /// <summary>Header blocks larger than this are not parsed (and the message gets no usable From): bounded work on hostile input.</summary>
    const int MaxHeaderBlock = 1024 * 1024;

    /// <summary>
    /// The addresses of the single From header; null when there is none, more than one, or it does not parse.
    /// </summary>
    public static IReadOnlyList<string>? Addresses(ReadOnlySequence<byte> message) => Addresses(message, out _);

    /// <summary>
    /// As <see cref="Addresses(ReadOnlySequence{byte})"/>, and every address in the other fields that name who sent the
    /// message — Sender, Resent-From, Resent-Sender (RFC 5322 sections 3.6.2 and 3.6.6) — which mail clients show as
    /// "on behalf of" and so must be bound to the tenant too. An unparsable one is returned as its raw text (never owned).
    /// </summary>
    public static IReadOnlyList<string>? Addresses(ReadOnlySequence<byte> message, out IReadOnlyList<string> otherSenders)
    {
        otherSenders = [];
        var block = message.Length > MaxHeaderBlock ? message.Slice(0, MaxHeaderBlock) : message;
        var section = HeaderSection.Parse(block.ToArray(), out var consumed);
        if (consumed == block.Length && message.Length > MaxHeaderBlock)
        {
            // A header block beyond the bound is not parsed in part: a second From after the cut would go unseen.
            return null;
        }

        return Addresses(section, out otherSenders);
    }

    /// <summary>
    /// The same, from the header section as the streaming reader split it (the one split that hygiene and DKIM use too, so
    /// all three agree on which fields there are). The addresses are parsed with MimeKit, from each field's raw value.
    /// </summary>
    public static IReadOnlyList<string>? Addresses(HeaderSection section, out IReadOnlyList<string> otherSenders)
    {
        ArgumentNullException.ThrowIfNull(section);
        var others = new List<string>();
        foreach (var field in section.Fields.Where(f => f.Name is "sender" or "resent-from" or "resent-sender"))
        {
            if (TryParse(field, out var senders) && senders.Mailboxes.Any())
            {
                others.AddRange(senders.Mailboxes.Select(m => m.Address));
            }
            else
            {
                others.Add(Encoding.UTF8.GetString(field.Value.Span).Replace("\r\n", "", StringComparison.Ordinal).Trim());
            }
        }

        otherSenders = others;
        var from = section.Named("from").ToList();
        if (from.Count != 1 || !TryParse(from[0], out var list))
        {
            return null;
        }

        var addresses = list.Mailboxes.Select(m => m.Address).ToList();
        return addresses.Count == 0 ? null : addresses;
    }

    static bool TryParse(HeaderField field, [NotNullWhen(true)] out InternetAddressList? list)
    {
        var value = field.Value;
        return MemoryMarshal.TryGetArray(value, out var segment)
            ? InternetAddressList.TryParse(ParserOptions.Default, segment.Array!, segment.Offset, segment.Count, out list)
            : InternetAddressList.TryParse(ParserOptions.Default, value.ToArray(), out list);
    }
}
