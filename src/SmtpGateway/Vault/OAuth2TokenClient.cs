using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using SmtpGateway.Configuration;

namespace SmtpGateway.Vault;

/// <summary>A token endpoint's answer: the new access token (and a rotated refresh token) as bytes, zeroed on dispose.</summary>
internal sealed class TokenResponse(byte[] accessToken, TimeSpan? expiresIn, byte[]? refreshToken) : IDisposable
{
    public byte[] AccessToken { get; } = accessToken;

    /// <summary>expires_in, when the endpoint sent it (RFC 6749 section 5.1 only recommends it).</summary>
    public TimeSpan? ExpiresIn { get; } = expiresIn;

    /// <summary>A new refresh token, when the endpoint rotates them (RFC 6749 section 6, last paragraph).</summary>
    public byte[]? RefreshToken { get; } = refreshToken;

    public void Dispose()
    {
        CryptographicOperations.ZeroMemory(AccessToken);
        if (RefreshToken is not null)
        {
            CryptographicOperations.ZeroMemory(RefreshToken);
        }
    }

    public override string ToString() => $"TokenResponse {{ ExpiresIn = {ExpiresIn} }}";
}

/// <summary>
/// The refresh-token grant (RFC 6749 section 6) over https. The request body and the response are built and parsed as
/// bytes (Utf8JsonReader), so neither the refresh token nor the access token becomes a managed string, and both buffers
/// are zeroed after use. Nothing secret reaches an exception message: only the endpoint, the HTTP status and the
/// OAuth error code.
/// </summary>
internal sealed class OAuth2TokenClient(HttpMessageInvoker http, TimeSpan timeout, TimeProvider time)
{
    /// <summary>Token responses are a few KiB; anything past this is not one, and is not buffered.</summary>
    public const int MaxResponseBytes = 64 * 1024;

    /// <summary>
    /// The handler for real endpoints: certificates verified against the system roots, then the configured trust anchors
    /// (Gateway:Delivery:Tls:TrustAnchorsPath, a private CA); no redirects (a 3xx could send the refresh token elsewhere);
    /// no cookies.
    /// </summary>
    public static SocketsHttpHandler CreateHandler(X509Certificate2Collection? trustAnchors) => new()
    {
        AllowAutoRedirect = false,
        UseCookies = false,
        AutomaticDecompression = DecompressionMethods.None,
        MaxResponseHeadersLength = 64,
        SslOptions = new SslClientAuthenticationOptions
        {
            RemoteCertificateValidationCallback = (_, certificate, chain, errors) => ValidateCertificate(trustAnchors, certificate, chain, errors),
        },
    };

    /// <summary>A chain that does not reach a system root may still reach one of the trust anchors; the name must match either way.</summary>
    internal static bool ValidateCertificate(X509Certificate2Collection? trustAnchors, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        if (errors == SslPolicyErrors.None)
        {
            return true;
        }

        if (certificate is null || errors != SslPolicyErrors.RemoteCertificateChainErrors)
        {
            return false;
        }

        return TrustAnchors.ChainsTo(trustAnchors, certificate, chain);
    }

    /// <summary>Why <paramref name="endpoint"/> cannot be a token endpoint, or null: https only, so the refresh token never crosses plaintext.</summary>
    public static string? EndpointError(string? endpoint) =>
        !Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) ? "the token endpoint must be an absolute https URL"
        : uri.Scheme != Uri.UriSchemeHttps ? "the token endpoint must use https (the refresh token must not cross the network in plaintext)"
        : uri.UserInfo.Length > 0 || uri.Fragment.Length > 0 ? "the token endpoint must not carry user info or a fragment"
        : null;

    /// <summary>POSTs grant_type=refresh_token; throws <see cref="UpstreamCredentialException"/> (transient or not) on any failure.</summary>
    public async Task<TokenResponse> RefreshAsync(string endpoint, string clientId, ReadOnlyMemory<byte> refreshToken, ReadOnlyMemory<byte> clientSecret, CancellationToken cancellationToken)
    {
        if (EndpointError(endpoint) is { } error)
        {
            throw new UpstreamCredentialException(error, transient: false);
        }

        var uri = new Uri(endpoint);
        // Never the user info: this text reaches logs and (through the admin API) problem details.
        var where = uri.GetComponents(UriComponents.SchemeAndServer | UriComponents.Path, UriFormat.UriEscaped);
        var body = FormBody(refreshToken.Span, clientId, clientSecret.Span);
        byte[]? response = null;
        var length = 0;
        int status;
        try
        {
            using var timeoutSource = new CancellationTokenSource(timeout, time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeoutSource.Token);
            using var request = new HttpRequestMessage(HttpMethod.Post, uri) { Content = new ByteArrayContent(body) };
            request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/x-www-form-urlencoded");
            request.Headers.Accept.ParseAdd("application/json");
            try
            {
                using var answer = await http.SendAsync(request, linked.Token).ConfigureAwait(false);
                status = (int)answer.StatusCode;
                response = SecretBuffer.Allocate(MaxResponseBytes);
                var stream = await answer.Content.ReadAsStreamAsync(linked.Token).ConfigureAwait(false);
                await using (stream.ConfigureAwait(false))
                {
                    length = await ReadLimitedAsync(stream, response, linked.Token).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException ex) when (timeoutSource.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
            {
                throw new UpstreamCredentialException($"token endpoint {where} did not answer within {timeout.TotalSeconds:0}s", transient: true, ex);
            }
            catch (HttpRequestException ex)
            {
                throw new UpstreamCredentialException($"token endpoint {where} is unreachable: {ex.HttpRequestError}", transient: true, ex);
            }
            catch (IOException ex)
            {
                // The connection broke while the answer was read (HttpIOException): as temporary as an unreachable endpoint,
                // and reported the same way, so the caller can still use a token that has not expired.
                throw new UpstreamCredentialException($"token endpoint {where} broke off its answer: {ex.GetType().Name}", transient: true, ex);
            }

            if (length < 0)
            {
                throw new UpstreamCredentialException($"token endpoint {where} answered more than {MaxResponseBytes} bytes", transient: true);
            }

            return Parse(response.AsSpan(0, length), status, where);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(body);
            if (response is not null)
            {
                CryptographicOperations.ZeroMemory(response);
            }
        }
    }

    /// <summary>Reads the whole stream into <paramref name="buffer"/>; -1 when it does not fit.</summary>
    static async Task<int> ReadLimitedAsync(Stream stream, byte[] buffer, CancellationToken cancellationToken)
    {
        var length = 0;
        while (true)
        {
            if (length == buffer.Length)
            {
                // Full: one more byte means too long.
                var probe = new byte[1];
                return await stream.ReadAsync(probe, cancellationToken).ConfigureAwait(false) == 0 ? length : -1;
            }

            var read = await stream.ReadAsync(buffer.AsMemory(length), cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                return length;
            }

            length += read;
        }
    }

    /// <summary>application/x-www-form-urlencoded (RFC 6749 appendix B) straight into one byte buffer the caller zeroes.</summary>
    internal static byte[] FormBody(ReadOnlySpan<byte> refreshToken, string clientId, ReadOnlySpan<byte> clientSecret)
    {
        var id = Encoding.UTF8.GetBytes(clientId);
        ReadOnlySpan<byte> grant = "grant_type=refresh_token&refresh_token="u8;
        ReadOnlySpan<byte> idName = "&client_id="u8;
        ReadOnlySpan<byte> secretName = "&client_secret="u8;
        var size = grant.Length + EncodedLength(refreshToken) + idName.Length + EncodedLength(id)
            + (clientSecret.IsEmpty ? 0 : secretName.Length + EncodedLength(clientSecret));
        var body = SecretBuffer.Allocate(size);
        var at = 0;
        Append(body, ref at, grant);
        Encode(body, ref at, refreshToken);
        Append(body, ref at, idName);
        Encode(body, ref at, id);
        if (!clientSecret.IsEmpty)
        {
            // client_secret_post (RFC 6749 section 2.3.1): Basic would put the secret in a header string.
            Append(body, ref at, secretName);
            Encode(body, ref at, clientSecret);
        }

        return body;
    }

    static bool Unreserved(byte b) => b is (>= (byte)'A' and <= (byte)'Z') or (>= (byte)'a' and <= (byte)'z') or (>= (byte)'0' and <= (byte)'9') or (byte)'-' or (byte)'.' or (byte)'_' or (byte)'~';

    static int EncodedLength(ReadOnlySpan<byte> value)
    {
        var n = 0;
        foreach (var b in value)
        {
            n += Unreserved(b) ? 1 : 3;
        }

        return n;
    }

    static void Append(byte[] body, ref int at, ReadOnlySpan<byte> text)
    {
        text.CopyTo(body.AsSpan(at));
        at += text.Length;
    }

    static void Encode(byte[] body, ref int at, ReadOnlySpan<byte> value)
    {
        const string hex = "0123456789ABCDEF";
        foreach (var b in value)
        {
            if (Unreserved(b))
            {
                body[at++] = b;
            }
            else
            {
                body[at++] = (byte)'%';
                body[at++] = (byte)hex[b >> 4];
                body[at++] = (byte)hex[b & 15];
            }
        }
    }

    /// <summary>RFC 6749 section 5.1 (success) and 5.2 (error) from the raw bytes.</summary>
    internal static TokenResponse Parse(ReadOnlySpan<byte> json, int status, string where)
    {
        byte[]? access = null;
        byte[]? refresh = null;
        TimeSpan? expiresIn = null;
        string? tokenType = null;
        string? error = null;
        try
        {
            var reader = new Utf8JsonReader(json);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                throw new JsonException("not a JSON object");
            }

            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                // ValueTextEquals compares the unescaped name, so "acc\u0065ss_token" is still the token.
                var field = reader.ValueTextEquals("access_token"u8) ? Field.AccessToken
                    : reader.ValueTextEquals("refresh_token"u8) ? Field.RefreshToken
                    : reader.ValueTextEquals("token_type"u8) ? Field.TokenType
                    : reader.ValueTextEquals("expires_in"u8) ? Field.ExpiresIn
                    : reader.ValueTextEquals("error"u8) ? Field.Error
                    : Field.Other;
                reader.Read();
                var isString = reader.TokenType == JsonTokenType.String;
                switch (field)
                {
                    case Field.AccessToken when isString:
                        Zero(access);
                        access = StringBytes(ref reader);
                        break;
                    case Field.RefreshToken when isString:
                        Zero(refresh);
                        refresh = StringBytes(ref reader);
                        break;
                    case Field.TokenType when isString:
                        tokenType = reader.GetString();
                        break;
                    case Field.Error when isString:
                        error = reader.GetString();
                        break;
                    case Field.ExpiresIn:
                        expiresIn = ExpiresIn(ref reader);
                        break;
                    default:
                        reader.Skip();
                        break;
                }
            }
        }
        catch (JsonException ex)
        {
            Zero(access);
            Zero(refresh);
            throw new UpstreamCredentialException($"token endpoint {where} answered {status} with a body that is not a token response", transient: status >= 500, ex);
        }

        if (status != 200 || access is null || access.Length == 0)
        {
            Zero(access);
            Zero(refresh);
            // invalid_grant and kin will not pass by themselves (revoked or expired refresh token): an operator must act.
            var code = SafeCode(error);
            var transient = status >= 500 || status == 429 || (status == 200 && code is null);
            throw new UpstreamCredentialException($"token endpoint {where} answered {status}{(code is null ? "" : $" ({code})")} without an access token", transient);
        }

        if (tokenType is not null && !tokenType.Equals("Bearer", StringComparison.OrdinalIgnoreCase))
        {
            Zero(access);
            Zero(refresh);
            throw new UpstreamCredentialException($"token endpoint {where} issued a '{SafeCode(tokenType)}' token; XOAUTH2 needs a bearer token", transient: false);
        }

        return new TokenResponse(access, expiresIn, refresh);
    }

    /// <summary>The string's UTF-8 bytes, unescaped, in an array of their own (never a managed string).</summary>
    static byte[] StringBytes(ref Utf8JsonReader reader)
    {
        if (!reader.ValueIsEscaped && !reader.HasValueSequence)
        {
            return reader.ValueSpan.ToArray();
        }

        // Unescaping never lengthens the value.
        var scratch = SecretBuffer.Allocate(reader.HasValueSequence ? checked((int)reader.ValueSequence.Length) : reader.ValueSpan.Length);
        try
        {
            return scratch.AsSpan(0, reader.CopyString(scratch)).ToArray();
        }
        finally
        {
            CryptographicOperations.ZeroMemory(scratch);
        }
    }

    /// <summary>A number of seconds, or a string of one (some providers quote it); anything else counts as absent.</summary>
    static TimeSpan? ExpiresIn(ref Utf8JsonReader reader)
    {
        long seconds = 0;
        var ok = reader.TokenType == JsonTokenType.Number
            ? reader.TryGetInt64(out seconds)
            : reader.TokenType == JsonTokenType.String
                && long.TryParse(reader.GetString(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out seconds);
        reader.Skip();
        return ok && seconds is > 0 and < 10L * 365 * 24 * 3600 ? TimeSpan.FromSeconds(seconds) : null;
    }

    enum Field
    {
        Other,
        AccessToken,
        RefreshToken,
        TokenType,
        ExpiresIn,
        Error,
    }

    /// <summary>An OAuth error code (RFC 6749 section 5.2: %x20-21 / %x23-5B / %x5D-7E) short enough to log; null otherwise.</summary>
    static string? SafeCode(string? code) =>
        code is { Length: > 0 and <= 64 } && code.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.') ? code : null;

    static void Zero(byte[]? buffer)
    {
        if (buffer is not null)
        {
            CryptographicOperations.ZeroMemory(buffer);
        }
    }
}
