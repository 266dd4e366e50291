using System.Text;

namespace SmtpGateway.Signing;

/// <summary>The TXT record a selector must be published under (RFC 6376 section 3.6.1, RFC 8463 section 4).</summary>
public static class DkimDnsRecord
{
    /// <summary>
    /// <c>selector._domainkey.domain. IN TXT "v=DKIM1; k=…; p=…"</c>, split into strings of at most 255 octets
    /// (RFC 1035 section 3.3.14: a character-string is one length octet + up to 255 octets; RFC 6376 section 3.6.2.2
    /// says verifiers concatenate them).
    /// </summary>
    public static string Format(DkimSelector selector)
    {
        var value = Value(selector);
        var sb = new StringBuilder();
        sb.Append(selector.Selector).Append("._domainkey.").Append(selector.Domain).Append(". IN TXT ");
        for (var i = 0; i < value.Length; i += 255)
        {
            if (i > 0)
            {
                sb.Append(' ');
            }

            sb.Append('"').Append(value, i, Math.Min(255, value.Length - i)).Append('"');
        }

        return sb.ToString();
    }

    public static string Value(DkimSelector selector) =>
        $"v=DKIM1; k={(selector.Algorithm == DkimAlgorithm.Ed25519 ? "ed25519" : "rsa")}; p={selector.PublicKey}";

    /// <summary>Just the TXT strings joined, as a resolver returns them (for verifiers fed from `smtpgw dkim dns`).</summary>
    public static string Name(DkimSelector selector) => $"{selector.Selector}._domainkey.{selector.Domain}.";

    /// <summary>
    /// Whether a published TXT value (its strings joined) carries this selector's key: same key type (k=, default rsa) and
    /// same p=, whitespace removed (RFC 6376 section 3.6.1 allows FWS inside p=, and providers fold long values).
    /// </summary>
    public static bool Matches(string published, DkimSelector selector)
    {
        ArgumentNullException.ThrowIfNull(published);
        ArgumentNullException.ThrowIfNull(selector);
        string? key = null;
        var type = "rsa";
        foreach (var tag in published.Split(';'))
        {
            var eq = tag.IndexOf('=', StringComparison.Ordinal);
            if (eq < 0)
            {
                continue;
            }

            var name = tag[..eq].Trim();
            var value = string.Concat(tag[(eq + 1)..].Where(c => !char.IsWhiteSpace(c)));
            if (name == "p")
            {
                key = value;
            }
            else if (name == "k")
            {
                type = value;
            }
        }

        var expectedType = selector.Algorithm == DkimAlgorithm.Ed25519 ? "ed25519" : "rsa";
        return key is not null && string.Equals(type, expectedType, StringComparison.OrdinalIgnoreCase) && key == selector.PublicKey;
    }
}
