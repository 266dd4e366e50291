using System.Text;
using SmtpGateway.Smtp;

namespace SmtpGateway.Identity;

/// <summary>SASL responses as SMTP AUTH carries them (RFC 4954 section 4): base64 of UTF-8, "*" cancels, "=" is empty.</summary>
public static class Sasl
{
    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The decoded response, or null and the reply that says why not.</summary>
    public static string? Decode(string response, out SmtpReply? failure)
    {
        ArgumentNullException.ThrowIfNull(response);
        failure = null;
        if (response == "*")
        {
            // RFC 4954 section 4: the client cancels the exchange.
            failure = SmtpReplies.AuthCancelled;
            return null;
        }

        if (response == "=")
        {
            return ""; // RFC 4954 section 4: "=" is an empty initial response
        }

        var bytes = new byte[(response.Length / 4 * 3) + 3];
        if (response.Length == 0 || !Convert.TryFromBase64String(response, bytes, out var written))
        {
            failure = SmtpReplies.InvalidBase64;
            return null;
        }

        try
        {
            return StrictUtf8.GetString(bytes, 0, written);
        }
        catch (DecoderFallbackException)
        {
            failure = SmtpReplies.InvalidBase64;
            return null;
        }
        finally
        {
            // The response carries a session token: do not leave its octets in a dead array.
            Array.Clear(bytes);
        }
    }

    /// <summary>RFC 4616 section 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd. Null when malformed.</summary>
    public static (string AuthorizationIdentity, string User, string Password)? ParsePlain(string decoded)
    {
        ArgumentNullException.ThrowIfNull(decoded);
        var fields = decoded.Split('\0');
        return fields.Length == 3 ? (fields[0], fields[1], fields[2]) : null;
    }
}
