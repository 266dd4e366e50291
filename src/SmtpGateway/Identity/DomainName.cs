using System.Globalization;

namespace SmtpGateway.Identity;

/// <summary>
/// One canonical form per domain: lower case, no trailing dot, A-labels (RFC 5891). U-label and A-label spellings
/// compare equal; a lookalike (Cyrillic "а" for Latin "a") has a different A-label and so never matches.
/// </summary>
public static class DomainName
{
    static readonly IdnMapping Idn = new() { UseStd3AsciiRules = true, AllowUnassigned = false };

    /// <summary>Null when the text is not a valid domain name.</summary>
    public static string? Normalize(string? domain)
    {
        if (string.IsNullOrWhiteSpace(domain) || domain.Length > 255)
        {
            return null;
        }

        var d = domain.EndsWith('.') ? domain[..^1] : domain;
        if (d.Length == 0 || d.StartsWith('[') || d.Contains(' ', StringComparison.Ordinal))
        {
            return null;
        }

        try
        {
            return Idn.GetAscii(d.ToLowerInvariant()).ToLowerInvariant();
        }
        catch (ArgumentException)
        {
            return null;
        }
    }

    /// <summary>Domain part of an address (after the last '@'), normalised; null if there is none.</summary>
    public static string? OfAddress(string address)
    {
        var at = address.LastIndexOf('@');
        return at < 0 ? null : Normalize(address[(at + 1)..]);
    }
}
