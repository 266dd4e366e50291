using System.Security.Cryptography;

namespace SmtpGateway.Vault;

/// <summary>
/// What `vault set` and `vault rotate` store: the non-secret description (kind, user, token endpoint, client id) and the
/// secret bytes, which this object owns and zeroes on <see cref="Dispose"/>. Built only from stdin or a request body,
/// never from argv or the environment.
/// </summary>
public sealed class NewSecret : IDisposable
{
    readonly byte[] _secret;
    readonly byte[]? _clientSecret;

    NewSecret(UpstreamCredentialKind kind, OAuth2Grant? grant, string userName, byte[] secret, byte[]? clientSecret, string? tokenEndpoint, string? clientId)
    {
        try
        {
            CheckText(userName, "user name", 256);
            if (secret.Length == 0)
            {
                throw new ArgumentException("the secret is empty");
            }

            // The refresh record keeps the refresh token and client secret in one ciphertext, split at the first LF.
            if (grant == OAuth2Grant.RefreshToken && secret.AsSpan().Contains((byte)'\n'))
            {
                throw new ArgumentException("a refresh token cannot contain a line feed");
            }

            if (grant == OAuth2Grant.RefreshToken)
            {
                if (OAuth2TokenClient.EndpointError(tokenEndpoint) is { } error)
                {
                    throw new ArgumentException(error);
                }

                CheckText(clientId, "client id", 512);
            }
        }
        catch
        {
            CryptographicOperations.ZeroMemory(secret);
            if (clientSecret is not null)
            {
                CryptographicOperations.ZeroMemory(clientSecret);
            }

            throw;
        }

        Kind = kind;
        Grant = grant;
        UserName = userName;
        _secret = secret;
        _clientSecret = clientSecret is { Length: > 0 } ? clientSecret : null;
        TokenEndpoint = tokenEndpoint;
        ClientId = clientId;
    }

    /// <summary>A password for AUTH PLAIN or LOGIN; takes ownership of <paramref name="password"/>.</summary>
    public static NewSecret Password(string userName, byte[] password) => new(UpstreamCredentialKind.Password, null, userName, password, null, null, null);

    /// <summary>An OAuth 2.0 access token used as it is (XOAUTH2) until the operator rotates it.</summary>
    public static NewSecret AccessToken(string userName, byte[] accessToken) => new(UpstreamCredentialKind.OAuth2, OAuth2Grant.AccessToken, userName, accessToken, null, null, null);

    /// <summary>An OAuth 2.0 refresh token (and client secret, when the client has one) for an https token endpoint.</summary>
    public static NewSecret RefreshToken(string userName, byte[] refreshToken, byte[]? clientSecret, string tokenEndpoint, string clientId) =>
        new(UpstreamCredentialKind.OAuth2, OAuth2Grant.RefreshToken, userName, refreshToken, clientSecret, tokenEndpoint, clientId);

    public UpstreamCredentialKind Kind { get; }

    internal OAuth2Grant? Grant { get; }

    public string UserName { get; }

    public string? TokenEndpoint { get; }

    public string? ClientId { get; }

    /// <summary>The plaintext of the record: the secret, then LF and the client secret when there is one. The caller zeroes it.</summary>
    internal byte[] Payload()
    {
        if (_clientSecret is null)
        {
            return (byte[])_secret.Clone();
        }

        var payload = SecretBuffer.Allocate(_secret.Length + 1 + _clientSecret.Length);
        _secret.CopyTo(payload, 0);
        payload[_secret.Length] = (byte)'\n';
        _clientSecret.CopyTo(payload, _secret.Length + 1);
        return payload;
    }

    public void Dispose()
    {
        CryptographicOperations.ZeroMemory(_secret);
        if (_clientSecret is not null)
        {
            CryptographicOperations.ZeroMemory(_clientSecret);
        }
    }

    public override string ToString() => $"NewSecret {{ Kind = {Kind}, UserName = {UserName} }}";

    static void CheckText(string? value, string what, int maxLength)
    {
        // These go into SASL strings and the file in clear: no control characters, which would also break XOAUTH2's ^A framing.
        if (string.IsNullOrEmpty(value) || value.Length > maxLength || value.Any(char.IsControl))
        {
            throw new ArgumentException($"the {what} must be 1-{maxLength} characters without control characters");
        }
    }
}
