using System.Globalization;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using SmtpGateway.Configuration;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery.Inbound;

public sealed partial class InboundRouter
{
    public const string TenantHeader = "X-Smtpgw-Tenant";
    public const string QueueIdHeader = "X-Smtpgw-Queue-Id";
    public const string MailFromHeader = "X-Smtpgw-Mail-From";
    public const string RcptToHeader = "X-Smtpgw-Rcpt-To";
    public const string TimestampHeader = "X-Smtpgw-Timestamp";
    public const string SignatureHeader = "X-Smtpgw-Signature";

    /// <summary>
    /// POST &lt;Url&gt; with the message exactly as received as the body (Content-Type: message/rfc822, RFC 2046 section 5.2.1),
    /// streamed from the spool file, and the envelope in headers:
    /// <list type="bullet">
    /// <item>X-Smtpgw-Tenant, X-Smtpgw-Queue-Id (stable across retries: the receiver's idempotency key);</item>
    /// <item>X-Smtpgw-Mail-From: the envelope sender, "&lt;&gt;" for the null sender;</item>
    /// <item>X-Smtpgw-Rcpt-To: the recipients of this attempt, comma-separated;</item>
    /// <item>X-Smtpgw-Timestamp and X-Smtpgw-Signature: see <see cref="InboundWebhookSignature"/>.</item>
    /// </list>
    /// Envelope values are encoded by <see cref="EncodeHeaderValue"/> (percent-encoding; undo with Uri.UnescapeDataString).
    /// 2xx: every recipient Delivered. Anything else (3xx, 4xx, 5xx, timeout, network error) is Deferred: the spool
    /// retries with backoff, and inbound mail gets no DSN (the sender is outside the tenant), so a bounce would lose it.
    /// </summary>
    async Task<IReadOnlyList<RecipientResult>> PostAsync(SpooledMessage message, IReadOnlyList<string> recipients, string tenant, InboundWebhookConfig config, CancellationToken cancellationToken)
    {
        var id = message.Envelope.Id;
        if (!Uri.TryCreate(config.Url, UriKind.Absolute, out var url) || (url.Scheme != Uri.UriSchemeHttp && url.Scheme != Uri.UriSchemeHttps))
        {
            InboundLog.WebhookUrlInvalid(_logger, tenant);
            return Deferred(recipients, DeliveryReplies.WebhookNotConfigured, null);
        }

        var endpoint = url.GetLeftPart(UriPartial.Authority);
        var secret = ReadSecret(tenant, config);
        if (secret is null)
        {
            return Deferred(recipients, DeliveryReplies.WebhookSecretUnavailable, endpoint);
        }

        var timeoutAfter = config.Timeout > TimeSpan.Zero ? config.Timeout : TimeSpan.FromSeconds(30);
        try
        {
            var timestamp = _time.GetUtcNow().ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture);

            // The signature header goes before the body, so the MAC is computed in a first pass over the file; the body is
            // then streamed in a second. Spool files never change once committed, so both passes read the same bytes.
            string signature;
            var macInput = message.OpenContent();
            await using (macInput.ConfigureAwait(false))
            {
                signature = await InboundWebhookSignature.ComputeAsync(secret, timestamp, id, macInput, cancellationToken).ConfigureAwait(false);
            }

            using var timeout = new CancellationTokenSource(timeoutAfter, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
            using var request = new HttpRequestMessage(HttpMethod.Post, url);
            request.Content = new StreamContent(message.OpenContent(), 81920);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("message/rfc822");
            request.Content.Headers.ContentLength = message.Length;
            request.Options.Set(WebhookTenant, tenant);
            request.Headers.TryAddWithoutValidation(TenantHeader, EncodeHeaderValue(tenant));
            request.Headers.TryAddWithoutValidation(QueueIdHeader, EncodeHeaderValue(id));
            request.Headers.TryAddWithoutValidation(MailFromHeader, message.Envelope.MailFrom.Length == 0 ? "<>" : EncodeHeaderValue(message.Envelope.MailFrom));
            request.Headers.TryAddWithoutValidation(RcptToHeader, string.Join(',', recipients.Select(EncodeHeaderValue)));
            request.Headers.TryAddWithoutValidation(TimestampHeader, timestamp);
            request.Headers.TryAddWithoutValidation(SignatureHeader, signature);

            // Headers only: the status code decides, and a large or slow response body must not hold the worker.
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, linked.Token).ConfigureAwait(false);
            var status = (int)response.StatusCode;
            if (status is >= 200 and < 300)
            {
                InboundLog.WebhookDelivered(_logger, id, tenant, endpoint, status);
                return recipients.Select(r => RecipientResult.FromReply(r, DeliveryReplies.WebhookAccepted(status)) with { RemoteHost = endpoint }).ToArray();
            }

            // 408 and 429 ask for a retry; other 4xx mean the endpoint refuses what we send: still retried (the tenant can fix
            // its endpoint within the retry window, and a bounce of inbound mail would reach an outsider), but worth a warning.
            // A 3xx is not followed (the caller's HttpClient must not, either): signed mail goes only where the tenant configured.
            if (status is >= 400 and < 500 and not 408 and not 429)
            {
                InboundLog.WebhookRefused(_logger, id, tenant, endpoint, status);
            }
            else if (status is >= 300 and < 400)
            {
                InboundLog.WebhookRedirected(_logger, id, tenant, endpoint, status);
            }
            else
            {
                InboundLog.WebhookDeferred(_logger, id, tenant, endpoint, status);
            }

            return Deferred(recipients, DeliveryReplies.WebhookNotAccepted(status), endpoint);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (OperationCanceledException)
        {
            // Our timeout, or HttpClient.Timeout if the caller set it lower: no answer in time.
            var reply = DeliveryReplies.WebhookTimeout(timeoutAfter);
            InboundLog.WebhookFailed(_logger, id, tenant, endpoint, DeliveryOutcomes.ReplyText(reply));
            return Deferred(recipients, reply, endpoint);
        }
        catch (HttpRequestException ex) when (ex.InnerException is DestinationRefusedException refused)
        {
            // The destination guard refused every address of the host (logged and counted there); DNS or config may change.
            InboundLog.WebhookFailed(_logger, id, tenant, endpoint, DeliveryOutcomes.ReplyText(refused.Reply));
            return Deferred(recipients, refused.Reply, endpoint);
        }
        catch (HttpRequestException ex)
        {
            // Connection refused, DNS, TLS, connection reset: no answer. The message names host and port only.
            var detail = ex.InnerException is SocketException socket ? socket.SocketErrorCode.ToString() : ex.HttpRequestError.ToString();
            InboundLog.WebhookFailed(_logger, id, tenant, endpoint, $"{ex.HttpRequestError}: {ex.Message}");
            return Deferred(recipients, DeliveryReplies.WebhookUnreachable(detail), endpoint);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Reading the spool file failed: local trouble.
            InboundLog.WebhookFailed(_logger, id, tenant, endpoint, $"{ex.GetType().Name}: {ex.Message}");
            return Deferred(recipients, DeliveryReplies.LocalReadError, endpoint);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
        }
    }

    static RecipientResult[] Deferred(IReadOnlyList<string> recipients, SmtpReply reply, string? endpoint) =>
        recipients.Select(r => RecipientResult.FromReply(r, reply) with { RemoteHost = endpoint }).ToArray();

    /// <summary>
    /// The secret as UTF-8 bytes of the trimmed text, from the environment variable when it is set and non-empty, else from
    /// the file; read on every attempt, so a rotated secret takes effect without a restart. Null (logged, without the
    /// value) when neither gives one. The caller zeroes the bytes after use.
    /// </summary>
    byte[]? ReadSecret(string tenant, InboundWebhookConfig config)
    {
        if (!string.IsNullOrWhiteSpace(config.SecretEnvironmentVariable))
        {
            var value = Environment.GetEnvironmentVariable(config.SecretEnvironmentVariable);
            if (!string.IsNullOrWhiteSpace(value))
            {
                return Encoding.UTF8.GetBytes(value.Trim());
            }
        }

        if (!string.IsNullOrWhiteSpace(config.SecretFile))
        {
            try
            {
                var value = File.ReadAllText(Path.GetFullPath(config.SecretFile), Encoding.UTF8);
                if (!string.IsNullOrWhiteSpace(value))
                {
                    return Encoding.UTF8.GetBytes(value.Trim());
                }

                InboundLog.WebhookSecretUnavailable(_logger, tenant, $"file {config.SecretFile} (empty)");
                return null;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
            {
                InboundLog.WebhookSecretUnavailable(_logger, tenant, $"file {config.SecretFile} ({ex.GetType().Name})");
                return null;
            }
        }

        InboundLog.WebhookSecretUnavailable(_logger, tenant,
            string.IsNullOrWhiteSpace(config.SecretEnvironmentVariable) ? "configuration (no SecretFile or SecretEnvironmentVariable)" : $"environment variable {config.SecretEnvironmentVariable} (not set)");
        return null;
    }

    /// <summary>
    /// An envelope value made safe for one HTTP header field (RFC 9110 section 5.5): octets of its UTF-8 form outside
    /// visible ASCII (controls, CR, LF, space, 8-bit), and '%' and ',' (the list separator; legal in quoted local parts),
    /// become %XX. Reversible with Uri.UnescapeDataString; plain addresses pass unchanged.
    /// </summary>
    public static string EncodeHeaderValue(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        var builder = new StringBuilder(value.Length);
        foreach (var b in Encoding.UTF8.GetBytes(value))
        {
            if (b is > 0x20 and < 0x7F and not (byte)'%' and not (byte)',')
            {
                builder.Append((char)b);
            }
            else
            {
                builder.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }

        return builder.ToString();
    }
}
