using System.Text;

namespace SmtpGateway.Smtp;

public enum SmtpVerb
{
    Unknown,
    Helo,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth,
    Bdat,
    Http,
}

/// <summary>A command line split into verb and argument. Syntax only; policy is decided elsewhere.</summary>
public readonly record struct SmtpCommandLine(SmtpVerb Verb, string Argument);

/// <summary>A parsed reverse-path or forward-path (RFC 5321 section 4.1.2) with its ESMTP parameters.</summary>
public sealed record SmtpPath(string LocalPart, string Domain, IReadOnlyDictionary<string, string?> Parameters)
{
    public bool IsNull => LocalPart.Length == 0 && Domain.Length == 0;

    /// <summary>Address as written on the wire, without angle brackets; empty for the null path.</summary>
    public string Address => IsNull ? "" : Domain.Length == 0 ? LocalPart : $"{LocalPart}@{Domain}";

    public bool IsAscii => Ascii.IsValid(LocalPart) && Ascii.IsValid(Domain);
}

public enum PathError
{
    None,
    Syntax,
    SourceRoute,
    Parameter,
}

/// <summary>
/// SMTP command grammar (RFC 5321 section 4.1), kept apart from policy as in cosullivan/SmtpServer.
/// Strict where leniency lets hostile input through: no source routes, no trailing dots, no spaces in paths.
/// </summary>
public static class SmtpGrammar
{
    static readonly (string Name, SmtpVerb Verb)[] Verbs =
    [
        ("HELO", SmtpVerb.Helo), ("EHLO", SmtpVerb.Ehlo), ("MAIL", SmtpVerb.Mail), ("RCPT", SmtpVerb.Rcpt),
        ("DATA", SmtpVerb.Data), ("RSET", SmtpVerb.Rset), ("NOOP", SmtpVerb.Noop), ("QUIT", SmtpVerb.Quit),
        ("VRFY", SmtpVerb.Vrfy), ("EXPN", SmtpVerb.Expn), ("HELP", SmtpVerb.Help), ("STARTTLS", SmtpVerb.StartTls),
        ("AUTH", SmtpVerb.Auth), ("BDAT", SmtpVerb.Bdat),
    ];

    // Methods that show an HTTP client talking to us (cross-protocol attacks, misdirected health checks).
    static readonly string[] HttpMethods = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT", "PATCH", "TRACE"];

    public static SmtpCommandLine ParseCommand(string line)
    {
        var space = line.IndexOf(' ');
        var verbText = space < 0 ? line : line[..space];
        var argument = space < 0 ? "" : line[(space + 1)..];

        foreach (var (name, verb) in Verbs)
        {
            if (verbText.Equals(name, StringComparison.OrdinalIgnoreCase))
            {
                return new SmtpCommandLine(verb, argument);
            }
        }

        foreach (var method in HttpMethods)
        {
            if (verbText.Equals(method, StringComparison.Ordinal) && argument.Contains("HTTP/", StringComparison.Ordinal))
            {
                return new SmtpCommandLine(SmtpVerb.Http, argument);
            }
        }

        return new SmtpCommandLine(SmtpVerb.Unknown, argument);
    }

    /// <summary>Parses "FROM:&lt;path&gt; params" or "TO:&lt;path&gt; params". A space after the colon is tolerated (common clients send it).</summary>
    public static PathError TryParsePath(string argument, string keyword, bool allowNull, out SmtpPath? path)
    {
        path = null;
        if (!argument.StartsWith(keyword, StringComparison.OrdinalIgnoreCase))
        {
            return PathError.Syntax;
        }

        var rest = argument.AsSpan(keyword.Length);
        if (rest.Length > 0 && rest[0] == ' ')
        {
            rest = rest[1..];
        }

        if (rest.Length < 2 || rest[0] != '<')
        {
            return PathError.Syntax;
        }

        var close = FindClosingBracket(rest);
        if (close < 0)
        {
            return PathError.Syntax;
        }

        var inner = rest[1..close];
        var tail = rest[(close + 1)..];

        if (inner.Length > 0 && inner[0] == '@')
        {
            // RFC 5321 section 4.1.2 A-d-l: a relic of source routing and a classic open-relay trick.
            return PathError.SourceRoute;
        }

        string local, domain;
        if (inner.Length == 0)
        {
            if (!allowNull)
            {
                return PathError.Syntax;
            }

            local = "";
            domain = "";
        }
        else if (!TrySplitMailbox(inner, out local, out domain))
        {
            return PathError.Syntax;
        }

        var parameters = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        if (tail.Length > 0)
        {
            if (tail[0] != ' ')
            {
                return PathError.Syntax;
            }

            foreach (var part in tail[1..].ToString().Split(' '))
            {
                if (part.Length == 0)
                {
                    return PathError.Syntax;
                }

                var eq = part.IndexOf('=');
                var key = eq < 0 ? part : part[..eq];
                var value = eq < 0 ? null : part[(eq + 1)..];
                if (key.Length == 0 || !key.All(c => char.IsAsciiLetterOrDigit(c) || c == '-') || !parameters.TryAdd(key, value))
                {
                    return PathError.Parameter;
                }
            }
        }

        path = new SmtpPath(local, domain, parameters);
        return PathError.None;
    }

    /// <summary>
    /// RFC 5321 section 4.1.2 Mailbox = Local-part "@" ( Domain / address-literal ), with RFC 6531 UTF-8 allowed.
    /// "postmaster" without a domain is accepted as RFC 5321 section 4.1.1.3 requires.
    /// </summary>
    static bool TrySplitMailbox(ReadOnlySpan<char> mailbox, out string local, out string domain)
    {
        local = domain = "";
        int at;
        if (mailbox[0] == '"')
        {
            var endQuote = FindEndQuote(mailbox);
            if (endQuote < 0 || endQuote + 1 >= mailbox.Length || mailbox[endQuote + 1] != '@')
            {
                return false;
            }

            at = endQuote + 1;
        }
        else
        {
            at = mailbox.IndexOf('@');
            if (at < 0)
            {
                if (mailbox.Equals("postmaster", StringComparison.OrdinalIgnoreCase))
                {
                    local = mailbox.ToString();
                    return true;
                }

                return false;
            }

            if (!IsDotString(mailbox[..at]))
            {
                return false;
            }
        }

        var domainPart = mailbox[(at + 1)..];
        if (!IsDomain(domainPart) && !IsAddressLiteral(domainPart))
        {
            return false;
        }

        local = mailbox[..at].ToString();
        domain = domainPart.ToString();
        return local.Length <= 64 && domain.Length <= 255; // RFC 5321 section 4.5.3.1.1 and 4.5.3.1.2
    }

    static int FindClosingBracket(ReadOnlySpan<char> s)
    {
        var quoted = false;
        for (var i = 1; i < s.Length; i++)
        {
            var c = s[i];
            if (quoted && c == '\\')
            {
                i++;
                continue;
            }

            if (c == '"')
            {
                quoted = !quoted;
            }
            else if (c == '>' && !quoted)
            {
                return i;
            }
            else if (c == '<' && !quoted)
            {
                return -1;
            }
        }

        return -1;
    }

    static int FindEndQuote(ReadOnlySpan<char> s)
    {
        for (var i = 1; i < s.Length; i++)
        {
            var c = s[i];
            if (c == '\\')
            {
                if (i + 1 >= s.Length || s[i + 1] < 32 || s[i + 1] > 126)
                {
                    return -1;
                }

                i++;
            }
            else if (c == '"')
            {
                return i;
            }
            else if (c < 32 || c == 127)
            {
                return -1;
            }
        }

        return -1;
    }

    static bool IsAtext(char c) =>
        char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-/=?^_`{|}~".Contains(c) || c > 127;

    static bool IsDotString(ReadOnlySpan<char> s)
    {
        if (s.Length == 0 || s[0] == '.' || s[^1] == '.')
        {
            return false;
        }

        for (var i = 0; i < s.Length; i++)
        {
            if (s[i] == '.')
            {
                if (s[i - 1] == '.')
                {
                    return false;
                }
            }
            else if (!IsAtext(s[i]))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>RFC 5321 Domain: sub-domains of let-dig/hyphen (plus UTF-8 U-labels), no empty label, so no trailing dot.</summary>
    public static bool IsDomain(ReadOnlySpan<char> s)
    {
        if (s.Length == 0)
        {
            return false;
        }

        foreach (var range in s.Split('.'))
        {
            var label = s[range];
            if (label.Length == 0 || label.Length > 63 || label[0] == '-' || label[^1] == '-')
            {
                return false;
            }

            foreach (var c in label)
            {
                if (!(char.IsAsciiLetterOrDigit(c) || c == '-' || (c > 127 && !char.IsWhiteSpace(c) && !char.IsControl(c))))
                {
                    return false;
                }
            }
        }

        return true;
    }

    static bool IsAddressLiteral(ReadOnlySpan<char> s)
    {
        if (s.Length < 3 || s[0] != '[' || s[^1] != ']')
        {
            return false;
        }

        var inner = s[1..^1];
        if (inner.StartsWith("IPv6:", StringComparison.OrdinalIgnoreCase))
        {
            return System.Net.IPAddress.TryParse(inner[5..], out var v6) && v6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6;
        }

        return System.Net.IPAddress.TryParse(inner, out var v4) && v4.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork && inner.Count('.') == 3;
    }

    /// <summary>HELO/EHLO argument: a domain or an address literal (RFC 5321 section 4.1.1.1).</summary>
    public static bool IsHeloArgument(string s) => s.Length is > 0 and <= 255 && (IsDomain(s) || IsAddressLiteral(s));
}
