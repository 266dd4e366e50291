using System.Net;
using System.Security.Cryptography;
using System.Text;
using MailKit.Security;
using SmtpGateway.Configuration;
using SmtpGateway.Vault;

namespace SmtpGateway.Delivery;

/// <summary>
/// A MailKit SASL mechanism that builds its responses from an <see cref="UpstreamSecret"/>'s bytes, never from a string.
/// MailKit's own mechanisms read <see cref="NetworkCredential.Password"/>, a string that cannot be zeroed; these are
/// given an empty password and the secret as bytes. Every response buffer they create is pinned (the GC never leaves a
/// moved copy behind) and zeroed on <see cref="Dispose"/>, which the caller does right after AUTH, in a finally.
/// What MailKit does with a returned buffer is outside this class: it base64-encodes it into a string for the command
/// line (SaslMechanism.Challenge(string) and SmtpClient.AuthenticateAsync); see the remarks in UpstreamAuthenticator.
/// </summary>
internal abstract class SecretSaslMechanism : SaslMechanism, IDisposable
{
    readonly UpstreamSecret _secret;
    readonly List<byte[]> _issued = [];

    protected SecretSaslMechanism(string userName, UpstreamSecret secret)
        : base(new NetworkCredential(userName, string.Empty))
    {
        _secret = secret;
        UserNameBytes = Encoding.UTF8.GetBytes(userName);
    }

    /// <summary>The authentication identity (not secret) as UTF-8, as RFC 4616 section 2 and the XOAUTH2 format carry it.</summary>
    protected byte[] UserNameBytes { get; }

    /// <summary>The secret's bytes; valid while the caller holds the secret open.</summary>
    protected ReadOnlySpan<byte> Secret => _secret.Secret;

    /// <summary>
    /// The response <paramref name="prefix"/> ‖ <paramref name="user"/> ‖ <paramref name="infix"/> ‖ secret ‖
    /// <paramref name="suffix"/>, in a buffer that <see cref="Dispose"/> will zero; the only place the secret is copied.
    /// </summary>
    protected byte[] WithSecret(ReadOnlySpan<byte> prefix, ReadOnlySpan<byte> user, ReadOnlySpan<byte> infix, ReadOnlySpan<byte> suffix)
    {
        var secret = Secret;
        var buffer = GC.AllocateArray<byte>(prefix.Length + user.Length + infix.Length + secret.Length + suffix.Length, pinned: true);
        _issued.Add(buffer);
        var span = buffer.AsSpan();
        Append(ref span, prefix);
        Append(ref span, user);
        Append(ref span, infix);
        Append(ref span, secret);
        Append(ref span, suffix);
        return buffer;
    }

    static void Append(ref Span<byte> to, ReadOnlySpan<byte> part)
    {
        part.CopyTo(to);
        to = to[part.Length..];
    }

    /// <summary>The response buffers handed to MailKit so far (zero after <see cref="Dispose"/>), for tests.</summary>
    internal IReadOnlyList<byte[]> Responses => _issued;

    /// <summary>Zeroes every response this mechanism handed to MailKit.</summary>
    public void Dispose()
    {
        foreach (var buffer in _issued)
        {
            CryptographicOperations.ZeroMemory(buffer);
        }
    }

    /// <summary>Creates the mechanism for <paramref name="mechanism"/>.</summary>
    public static SecretSaslMechanism Create(SmarthostAuthMechanism mechanism, string userName, UpstreamSecret secret) => mechanism switch
    {
        SmarthostAuthMechanism.Plain => new SecretSaslPlain(userName, secret),
        SmarthostAuthMechanism.Login => new SecretSaslLogin(userName, secret),
        _ => new SecretSaslXOAuth2(userName, secret),
    };

    /// <summary>The SASL name the server advertises for <paramref name="mechanism"/> (RFC 4954 section 3).</summary>
    public static string NameOf(SmarthostAuthMechanism mechanism) => mechanism switch
    {
        SmarthostAuthMechanism.Plain => "PLAIN",
        SmarthostAuthMechanism.Login => "LOGIN",
        _ => "XOAUTH2",
    };
}

/// <summary>RFC 4616 PLAIN: one initial response, [authzid] NUL authcid NUL passwd, with an empty authzid (act as the authcid).</summary>
internal sealed class SecretSaslPlain(string userName, UpstreamSecret secret) : SecretSaslMechanism(userName, secret)
{
    public override string MechanismName => "PLAIN";

    // RFC 4954 section 4: the initial response goes with the AUTH command, saving a round trip.
    public override bool SupportsInitialResponse => true;

    protected override byte[]? Challenge(byte[]? token, int startIndex, int length, CancellationToken cancellationToken)
    {
        if (IsAuthenticated)
        {
            return null;
        }

        IsAuthenticated = true;
        return WithSecret([0], UserNameBytes, [0], []);
    }
}

/// <summary>
/// LOGIN (draft-murchison-sasl-login-00): no initial response; the server asks twice ("Username:", "Password:"), the
/// client answers with the user name, then the password.
/// </summary>
internal sealed class SecretSaslLogin(string userName, UpstreamSecret secret) : SecretSaslMechanism(userName, secret)
{
    bool _userSent;

    public override string MechanismName => "LOGIN";

    // The exchange starts with the server's "Username:" prompt; servers differ on an initial response, so none is sent
    // (as MailKit's own LOGIN does).
    public override bool SupportsInitialResponse => false;

    protected override byte[]? Challenge(byte[]? token, int startIndex, int length, CancellationToken cancellationToken)
    {
        if (IsAuthenticated)
        {
            return null;
        }

        if (!_userSent)
        {
            _userSent = true;
            return UserNameBytes.ToArray();
        }

        IsAuthenticated = true;
        return WithSecret([], [], [], []);
    }

    public override void Reset()
    {
        _userSent = false;
        base.Reset();
    }
}

/// <summary>
/// XOAUTH2 (Google's and Microsoft's SASL profile for OAuth 2.0 bearer tokens): one initial response,
/// "user=" user ^A "auth=Bearer " token ^A ^A. On failure the server sends a 334 with a JSON error, which is answered
/// with an empty line before the final 535/454 (the null response below).
/// </summary>
internal sealed class SecretSaslXOAuth2(string userName, UpstreamSecret secret) : SecretSaslMechanism(userName, secret)
{
    public override string MechanismName => "XOAUTH2";

    public override bool SupportsInitialResponse => true;

    protected override byte[]? Challenge(byte[]? token, int startIndex, int length, CancellationToken cancellationToken)
    {
        if (IsAuthenticated)
        {
            return null;
        }

        IsAuthenticated = true;
        return WithSecret("user="u8, UserNameBytes, "\u0001auth=Bearer "u8, "\u0001\u0001"u8);
    }
}
