using SmtpGateway.Identity;
using SmtpGateway.Smtp;

namespace SmtpGateway.Listener;

/// <summary>SMTP AUTH (RFC 4954) as a protocol exchange: challenges and decoding here, the decision in the Identity stage.</summary>
public sealed partial class SmtpSession
{
    async ValueTask<bool> AuthAsync(SmtpCommandLine command, CancellationToken sessionToken)
    {
        if (!_listener.OffersAuth)
        {
            return CountError(SmtpReplies.NotImplemented);
        }

        if (!_tls && !PlaintextAuthAllowed)
        {
            // RFC 4954 section 4 / RFC 8314: never accept a password in clear text.
            return AuthRefused(SmtpReplies.EncryptionRequired, AuthFailure.EncryptionRequired);
        }

        if (_context.Tenant is not null)
        {
            return CountError(SmtpReplies.AlreadyAuthenticated);
        }

        if (_pipeline.AuthBlocked(_context))
        {
            _services.Metrics.AuthFailed(_listener.Name, AuthFailure.Blocked);
            Reply(SmtpReplies.TooManyAuthFailures);
            return false;
        }

        var parts = command.Argument.Split(' ', 2);
        var mechanism = parts[0].ToUpperInvariant();
        var initial = parts.Length > 1 ? parts[1] : null;

        string authzid, user, password;
        switch (mechanism)
        {
            case "PLAIN":
            {
                var response = initial ?? await ChallengeAsync("", sessionToken).ConfigureAwait(false);
                if (response is null)
                {
                    return false;
                }

                var decoded = Sasl.Decode(response, out var failure);
                if (decoded is null)
                {
                    return AuthRefused(failure!, AuthFailure.Malformed);
                }

                if (Sasl.ParsePlain(decoded) is not { } plain)
                {
                    return AuthRefused(SmtpReplies.MalformedPlain, AuthFailure.Malformed);
                }

                (authzid, user, password) = plain;
                break;
            }

            case "LOGIN":
            {
                var userResponse = initial ?? await ChallengeAsync("VXNlcm5hbWU6", sessionToken).ConfigureAwait(false);
                if (userResponse is null)
                {
                    return false;
                }

                var decodedUser = Sasl.Decode(userResponse, out var failure);
                if (decodedUser is null)
                {
                    return AuthRefused(failure!, AuthFailure.Malformed);
                }

                var passwordResponse = await ChallengeAsync("UGFzc3dvcmQ6", sessionToken).ConfigureAwait(false);
                if (passwordResponse is null)
                {
                    return false;
                }

                var decodedPassword = Sasl.Decode(passwordResponse, out failure);
                if (decodedPassword is null)
                {
                    return AuthRefused(failure!, AuthFailure.Malformed);
                }

                (authzid, user, password) = ("", decodedUser, decodedPassword);
                break;
            }

            default:
                return AuthRefused(SmtpReplies.UnknownMechanism, AuthFailure.UnknownMechanism);
        }

        var verdict = await _pipeline.AuthenticateAsync(_context, mechanism, authzid, user, password, sessionToken).ConfigureAwait(false);
        if (verdict.Succeeded)
        {
            Reply(SmtpReplies.AuthSucceeded);
            return true;
        }

        if (verdict.Temporary)
        {
            _services.Metrics.AuthFailed(_listener.Name, ReferenceEquals(verdict.Refusal, SmtpReplies.TenantSessionsAtAuth) ? AuthFailure.SessionLimit : AuthFailure.Unavailable);
            // RFC 4954 section 6: the server could not check the credentials now (or the tenant has MaxSessions); the
            // client may retry, so no strike. But each answer may have cost an HSM MAC: it counts against the junk budget,
            // so a client looping on it is closed with 421 4.7.0 at Limits:MaxJunkCommands rather than spend MACs unmetered.
            if (!CountJunk())
            {
                return false;
            }

            Reply(verdict.Refusal ?? SmtpReplies.AuthTemporaryFailure);
            return true;
        }

        _services.Metrics.AuthFailed(_listener.Name, AuthFailure.InvalidCredentials);
        if (verdict.Delay > TimeSpan.Zero)
        {
            await FlushAsync(sessionToken).ConfigureAwait(false);
            await Task.Delay(verdict.Delay, _services.Time, sessionToken).ConfigureAwait(false);
        }

        if (!CountError(SmtpReplies.AuthFailed))
        {
            return false;
        }

        if (verdict.Blocked)
        {
            Reply(SmtpReplies.TooManyAuthFailures);
            return false;
        }

        return true;
    }

    /// <summary>An AUTH refused before its credentials were checked: counted by reason, and against the error budget.</summary>
    bool AuthRefused(SmtpReply reply, AuthFailure reason)
    {
        _services.Metrics.AuthFailed(_listener.Name, reason);
        return CountError(reply);
    }

    /// <summary>Sends a 334 challenge and reads the client's line; null when the session must end.</summary>
    async ValueTask<string?> ChallengeAsync(string challenge, CancellationToken sessionToken)
    {
        Reply(new SmtpReply(334, null, challenge));
        var line = await ReadLineAsync(MaxAuthLineLength, _services.Limits.CommandTimeout, sessionToken, allowDrain: false).ConfigureAwait(false);
        return line.Status switch
        {
            LineStatus.Ok => line.Text,
            LineStatus.Closed => null,
            _ => "\u0001", // not base64: reported as such by DecodeSasl
        };
    }
}
