using System.Collections.Concurrent;
using System.Globalization;
using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;
using SmtpGateway.Smtp;
using SmtpGateway.Vault;

namespace SmtpGateway.Delivery;

/// <summary>How one AUTH went: authenticated, refused by the server (the credential's fault), or not attempted / broken (local or network).</summary>
internal enum UpstreamAuthStatus
{
    Authenticated,
    Refused,
    Failed,
}

/// <summary>The result of one AUTH; <see cref="Reply"/> is the deferral to record when it did not succeed.</summary>
internal readonly record struct UpstreamAuthResult(UpstreamAuthStatus Status, SmtpReply? Reply)
{
    public static UpstreamAuthResult Ok { get; } = new(UpstreamAuthStatus.Authenticated, null);
}

/// <summary>
/// AUTH (RFC 4954) to a tenant's smarthost with a vault credential. The secret is decrypted just before AUTH and zeroed
/// right after, in a finally: the <see cref="UpstreamSecret"/> buffer and every response buffer the SASL mechanism
/// made. It never becomes a string in this code.
/// <para>
/// What MailKit does with a response (checked against MailKit's source, SaslMechanism.ChallengeAsync(string) and
/// SmtpClient.AuthenticateAsync(SaslMechanism)): it base64-encodes the returned bytes with Convert.ToBase64String, builds
/// the command line "AUTH PLAIN &lt;base64&gt;\r\n" with string.Format, and encodes that into its output buffer. So
/// the base64 form of the response lives for a while as two immutable strings on the managed heap (until collected and
/// overwritten), and as bytes in MailKit's reused 4 KiB output buffer (until the next commands overwrite it). It is not
/// avoidable while MailKit's SmtpClient sends the command: every path that writes to its stream takes a string.
/// </para>
/// </summary>
internal sealed class UpstreamAuthenticator(IUpstreamCredentials? credentials, TimeProvider time, ILogger logger)
{
    /// <summary>The audit purpose of a decryption for AUTH.</summary>
    public const string Purpose = "smtp-auth";

    /// <summary>
    /// A version the server refused is tried after the others for this long, so that a rotation to a wrong password does
    /// not cost a refused AUTH per message for the whole grace window (servers lock out accounts that keep failing).
    /// </summary>
    static readonly TimeSpan RefusedMemory = TimeSpan.FromMinutes(5);

    readonly ConcurrentDictionary<(string Tenant, string Name, int Version), DateTimeOffset> _refused = new();

    /// <summary>The vault this authenticator asks; null when none is registered.</summary>
    internal IUpstreamCredentials? Credentials => credentials;

    /// <summary>
    /// The versions to try for a new connection, in order: the usable ones newest first, those refused in the last few
    /// minutes last. Or the deferral when there is none (no vault, none stored, vault unavailable).
    /// </summary>
    public (IReadOnlyList<UpstreamCredentialVersion> Versions, SmtpReply? Failure) Candidates(string tenant, string name)
    {
        if (credentials is null)
        {
            return ([], DeliveryReplies.UpstreamCredentialUnavailable(name, "no credential vault is configured"));
        }

        IReadOnlyList<UpstreamCredentialVersion> usable;
        try
        {
            usable = credentials.Usable(tenant, name);
        }
        catch (UpstreamCredentialException ex)
        {
            return ([], DeliveryReplies.UpstreamCredentialUnavailable(name, ex.Message));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            // The vault file could not be read: a deferral like any other unavailability; only the type is recorded.
            return ([], DeliveryReplies.UpstreamCredentialUnavailable(name, ex.GetType().Name));
        }

        if (usable.Count == 0)
        {
            return ([], DeliveryReplies.UpstreamCredentialMissing(name));
        }

        var now = time.GetUtcNow();
        var ordered = usable.OrderBy(v => _refused.TryGetValue((tenant, name, v.Version), out var at) && now - at < RefusedMemory ? 1 : 0).ToList();
        return (ordered, null);
    }

    /// <summary>
    /// Authenticates <paramref name="client"/> (connected, after STARTTLS) with <paramref name="version"/>. A refusal is
    /// reported to the vault (audit event) and counted; the caller closes the connection whenever this is not a success.
    /// Throws only when <paramref name="cancellationToken"/> is cancelled.
    /// </summary>
    public async Task<UpstreamAuthResult> AuthenticateAsync(GatewaySmtpClient client, string peer, UpstreamCredentialVersion version,
        SmarthostAuthMechanism? configured, string queueId, CancellationToken cancellationToken)
    {
        var credential = Name(version);

        // Defence in depth: configuration already demands TLS for a smarthost with a credential (RFC 4954 section 4).
        if (!client.IsSecure)
        {
            return Failed(queueId, version, DeliveryReplies.UpstreamAuthNeedsTls(peer));
        }

        var mechanism = Choose(configured, version.Kind, client.AuthenticationMechanisms);
        if (mechanism is null)
        {
            var wanted = configured is { } c ? SecretSaslMechanism.NameOf(c) : version.Kind == UpstreamCredentialKind.OAuth2 ? "XOAUTH2" : "PLAIN or LOGIN";
            return Failed(queueId, version, DeliveryReplies.UpstreamAuthNotOffered(peer, wanted));
        }

        UpstreamSecret secret;
        try
        {
            secret = await credentials!.OpenAsync(version, Purpose, queueId, cancellationToken).ConfigureAwait(false);
        }
        catch (UpstreamCredentialException ex)
        {
            return Failed(queueId, version, DeliveryReplies.UpstreamCredentialUnavailable(credential, ex.Message));
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            // Anything else from the vault (it should have said UpstreamCredentialException): still a deferral, never a
            // bounce, and only the exception type is recorded, since its message was not written to be safe to log.
            return Failed(queueId, version, DeliveryReplies.UpstreamCredentialUnavailable(credential, ex.GetType().Name));
        }

        try
        {
            var sasl = SecretSaslMechanism.Create(mechanism.Value, version.UserName, secret);
            try
            {
                await client.AuthenticateAsync(sasl, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                // Zeroed before anything else happens, whatever the outcome.
                sasl.Dispose();
            }

            DeliveryLog.UpstreamAuthenticated(logger, peer, version.Tenant, credential, sasl.MechanismName);
            _refused.TryRemove((version.Tenant, version.Name, version.Version), out _);
            return UpstreamAuthResult.Ok;
        }
        catch (MailKit.Security.AuthenticationException ex)
        {
            var (code, text) = ParseRefusal(ex.Message);
            var reply = DeliveryReplies.UpstreamAuthRefused(peer, credential, code, text);
            var remote = code > 0 ? DeliveryOutcomes.FormatReply(code, text) : text;
            _refused[(version.Tenant, version.Name, version.Version)] = time.GetUtcNow();
            DeliveryMetrics.UpstreamAuthFailure(version.Tenant);
            DeliveryLog.UpstreamAuthRefused(logger, queueId, peer, version.Tenant, credential, remote);
            credentials!.Refused(version, queueId, remote);
            return new UpstreamAuthResult(UpstreamAuthStatus.Refused, reply);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            // The session broke under AUTH (I/O, protocol error, timeout): only the exception type is recorded.
            return Failed(queueId, version, DeliveryReplies.UpstreamAuthBroken(peer, ex.GetType().Name));
        }
        finally
        {
            secret.Dispose();
        }
    }

    UpstreamAuthResult Failed(string queueId, UpstreamCredentialVersion version, SmtpReply reply)
    {
        DeliveryLog.UpstreamAuthFailed(logger, queueId, version.Tenant, DeliveryOutcomes.FormatReply(reply));
        return new UpstreamAuthResult(UpstreamAuthStatus.Failed, reply);
    }

    /// <summary>"name#vN": how replies, logs and pool keys name a credential version.</summary>
    public static string Name(UpstreamCredentialVersion version) => string.Create(CultureInfo.InvariantCulture, $"{version.Name}#v{version.Version}");

    /// <summary>
    /// The configured mechanism when the server offers it; else XOAUTH2 for an OAuth 2.0 token; else PLAIN, then LOGIN
    /// (RFC 4954 section 3: the EHLO AUTH keyword lists what the server accepts). Null when nothing fits.
    /// </summary>
    internal static SmarthostAuthMechanism? Choose(SmarthostAuthMechanism? configured, UpstreamCredentialKind kind, IEnumerable<string> offered)
    {
        var names = new HashSet<string>(offered, StringComparer.OrdinalIgnoreCase);
        if (configured is { } c)
        {
            return names.Contains(SecretSaslMechanism.NameOf(c)) ? c : null;
        }

        if (kind == UpstreamCredentialKind.OAuth2)
        {
            return names.Contains("XOAUTH2") ? SmarthostAuthMechanism.XOAuth2 : null;
        }

        return names.Contains("PLAIN") ? SmarthostAuthMechanism.Plain : names.Contains("LOGIN") ? SmarthostAuthMechanism.Login : null;
    }

    /// <summary>MailKit words a refusal "535: 5.7.8 text" (code, colon, the server's text); anything else is kept whole without a code.</summary>
    internal static (int Code, string Text) ParseRefusal(string message)
    {
        var flat = string.Join(' ', message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        return flat.Length >= 4 && flat[3] == ':' && int.TryParse(flat.AsSpan(0, 3), NumberStyles.None, CultureInfo.InvariantCulture, out var code)
            ? (code, flat[4..].Trim())
            : (0, flat);
    }
}
