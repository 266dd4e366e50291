using System.Buffers;
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

        // Only the header block is copied and parsed, not the body (it can be megabytes).
        var reader = new SequenceReader<byte>(block);
        if (reader.TryReadTo(out ReadOnlySequence<byte> headerBlock, "\r\n\r\n"u8, advancePastDelimiter: false))
        {
            block = block.Slice(0, headerBlock.Length + 4);
        }
        else if (message.Length > MaxHeaderBlock)
        {
            // A header block beyond the bound is not parsed in part: a second From after the cut would go unseen.
            return null;
        }

        using var stream = new MemoryStream(block.ToArray(), writable: false);
        HeaderList headers;
        try
        {
            headers = HeaderList.Load(ParserOptions.Default, stream);
        }
        catch (FormatException)
        {
            return null;
        }

        var others = new List<string>();
        foreach (var header in headers.Where(h => h.Id is HeaderId.Sender or HeaderId.ResentFrom or HeaderId.ResentSender))
        {
            if (InternetAddressList.TryParse(ParserOptions.Default, header.RawValue, out var senders) && senders.Mailboxes.Any())
            {
                others.AddRange(senders.Mailboxes.Select(m => m.Address));
            }
            else
            {
                others.Add(header.Value.Trim());
            }
        }

        otherSenders = others;
        var from = headers.Where(h => h.Id == HeaderId.From).ToList();
        if (from.Count != 1 || !InternetAddressList.TryParse(ParserOptions.Default, from[0].RawValue, out var list))
        {
            return null;
        }

        var addresses = list.Mailboxes.Select(m => m.Address).ToList();
        return addresses.Count == 0 ? null : addresses;
    }
}
