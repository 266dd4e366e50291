using System.Globalization;
using System.Net.NetworkInformation;
using System.Text;
using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;

namespace SmtpGateway.Delivery.Inbound;

/// <summary>
/// Delivers a tenant's inbound mail (<see cref="SpoolEnvelope.Inbound"/>) along the route of its
/// "Tenants:&lt;id&gt;:Inbound" section: a drop directory, an SMTP forward to the tenant's server, or a signed webhook.
/// A tenant without a section gets the Drop default. Every route returns one result per recipient and never throws
/// except on cancellation; trouble on the tenant's side is Deferred, so the spool retries with backoff.
/// <para>
/// The <see cref="HttpClient"/> is the caller's: it must not follow redirects (AllowAutoRedirect = false; a 3xx is
/// treated as a failure here, so that a compromised or misconfigured endpoint cannot bounce signed mail to another
/// host) and its own Timeout must be at least the largest Webhook:Timeout (or Infinite), since the per-request
/// timeout is applied here.
/// </para>
/// </summary>
public sealed partial class InboundRouter : IDeliveryTransport
{
    const string TempDirectoryName = ".tmp";
    const UnixFileMode PrivateDirectory = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    const UnixFileMode PrivateFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    static readonly InboundRouteConfig DefaultRoute = new();

    readonly IReadOnlyDictionary<string, InboundRouteConfig> _routes;
    readonly string _dataDirectory;
    readonly HttpClient _http;
    readonly TimeProvider _time;
    readonly ILogger _logger;
    readonly SmtpConnector _connector;

    /// <summary>
    /// A router whose Forward route refuses private destinations (the destination guard, no opt-out). The Webhook route is
    /// guarded by the HttpClient's handler: use one from <see cref="CreateWebhookClient"/>.
    /// </summary>
    public InboundRouter(IReadOnlyDictionary<string, InboundRouteConfig> routesByTenant, string dataDirectory, HttpClient httpClient, TimeProvider time, ILogger logger)
        : this(routesByTenant, dataDirectory, httpClient, time, logger, new DestinationPolicy(false, logger ?? throw new ArgumentNullException(nameof(logger))))
    {
    }

    internal InboundRouter(IReadOnlyDictionary<string, InboundRouteConfig> routesByTenant, string dataDirectory, HttpClient httpClient, TimeProvider time, ILogger logger,
        DestinationPolicy destinations)
    {
        ArgumentNullException.ThrowIfNull(routesByTenant);
        ArgumentException.ThrowIfNullOrWhiteSpace(dataDirectory);
        ArgumentNullException.ThrowIfNull(httpClient);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(logger);
        _routes = routesByTenant;
        _dataDirectory = Path.GetFullPath(dataDirectory);
        _http = httpClient;
        _time = time;
        _logger = logger;

        // No private trust anchors: Verify towards a tenant's server uses the system roots.
        _connector = new SmtpConnector(trustAnchors: null, time, logger, destinations, DestinationGuard.Forward);
    }

    /// <summary>
    /// The HttpClient for webhooks: no redirects (see the class remarks), no client-wide timeout, and a connect callback
    /// that resolves the URL's host once through <paramref name="destinations"/> and connects to a checked address, so a
    /// name whose answer changes after validation (DNS rebinding) still cannot reach a refused address.
    /// </summary>
    internal static HttpClient CreateWebhookClient(DestinationPolicy destinations) =>
        new(new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),

            // A proxy would connect on our behalf to an address we never checked.
            UseProxy = false,
            ConnectCallback = (context, cancellationToken) => destinations.ConnectHttpAsync(context,
                context.InitialRequestMessage.Options.TryGetValue(WebhookTenant, out var tenant) ? tenant : "-", cancellationToken),
        })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };

    /// <summary>The tenant of a webhook request, for the guard's log and metric.</summary>
    internal static readonly HttpRequestOptionsKey<string> WebhookTenant = new("smtpgw.tenant");

    /// <inheritdoc />
    public Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(recipients);
        var tenant = message.Envelope.TenantId;
        var route = tenant is not null && _routes.TryGetValue(tenant, out var configured) && configured is not null ? configured : DefaultRoute;
        var tenantName = DropTransport.TenantDirectoryName(tenant);
        return route.Route switch
        {
            InboundRouteKind.Forward => ForwardAsync(message, recipients, tenantName, route.Forward, cancellationToken),
            InboundRouteKind.Webhook => PostAsync(message, recipients, tenantName, route.Webhook, cancellationToken),
            _ => DropAsync(message, recipients, tenantName, route, cancellationToken),
        };
    }

    /// <summary>The tenant's inbound drop folder: the configured one (relative to the data directory), else DataDirectory/inbound/&lt;tenant&gt;.</summary>
    internal string DropDirectory(string tenantName, InboundRouteConfig route) =>
        route.DropDirectory is { } configured && !string.IsNullOrWhiteSpace(configured)
            ? Path.GetFullPath(Path.IsPathRooted(configured) ? configured : Path.Combine(_dataDirectory, configured))
            : Path.Combine(_dataDirectory, "inbound", tenantName);

    /// <summary>
    /// Writes &lt;dir&gt;/&lt;queue id&gt;.eml: a Return-Path line, then the message exactly as received. The Return-Path is
    /// what a final delivery adds (RFC 5321 section 4.4) and the only place the envelope sender survives in a file;
    /// recipients are not written: the tenant's own domains are all that reach this route. The file is written under
    /// .tmp/, fsynced and renamed, so a reader never sees half a message and the spool may delete its copy at once;
    /// a repeated attempt overwrites the same name, so delivery stays idempotent.
    /// </summary>
    async Task<IReadOnlyList<RecipientResult>> DropAsync(SpooledMessage message, IReadOnlyList<string> recipients, string tenant, InboundRouteConfig route, CancellationToken cancellationToken)
    {
        var id = message.Envelope.Id;
        string? directory = null;
        string? tmp = null;
        try
        {
            directory = DropDirectory(tenant, route);
            var tmpDirectory = Path.Combine(directory, TempDirectoryName);
            tmp = Path.Combine(tmpDirectory, string.Create(CultureInfo.InvariantCulture, $"{id}.{Guid.NewGuid():N}.eml"));
            var final = Path.Combine(directory, id + ".eml");
            Directory.CreateDirectory(directory, PrivateDirectory);
            Directory.CreateDirectory(tmpDirectory, PrivateDirectory);

            var source = message.OpenContent();
            await using (source.ConfigureAwait(false))
            {
                var target = new FileStream(tmp, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None, BufferSize = 81920, Options = FileOptions.Asynchronous, UnixCreateMode = PrivateFile });
                await using (target.ConfigureAwait(false))
                {
                    await target.WriteAsync(ReturnPathLine(message.Envelope.MailFrom), cancellationToken).ConfigureAwait(false);
                    await source.CopyToAsync(target, cancellationToken).ConfigureAwait(false);
                    target.Flush(flushToDisk: true);
                }
            }

            File.Move(tmp, final, overwrite: true);
            DurableFile.SyncDirectory(directory);
            InboundLog.Dropped(_logger, id, tenant, final);
            return recipients.Select(r => RecipientResult.FromReply(r, DeliveryReplies.InboundDropped)).ToArray();
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            TryDelete(tmp);
            throw;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            TryDelete(tmp);
            InboundLog.DropFailed(_logger, id, tenant, directory ?? "(unresolved)", ex);
            return recipients.Select(r => RecipientResult.FromReply(r, DeliveryReplies.InboundDropFailed)).ToArray();
        }
    }

    /// <summary>"Return-Path: &lt;sender&gt;" CRLF; the null sender gives "&lt;&gt;" (RFC 5321 section 4.4). CR and LF cannot be in a
    /// reverse-path the listener accepted; they are removed anyway so that no header can be injected.</summary>
    internal static byte[] ReturnPathLine(string mailFrom) =>
        Encoding.UTF8.GetBytes("Return-Path: <" + mailFrom.Replace("\r", "", StringComparison.Ordinal).Replace("\n", "", StringComparison.Ordinal) + ">\r\n");

    void TryDelete(string? path)
    {
        if (path is null)
        {
            return;
        }

        try
        {
            File.Delete(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            InboundLog.DropFailed(_logger, Path.GetFileName(path), "-", Path.GetDirectoryName(path) ?? "", ex);
        }
    }

    /// <summary>EHLO name when Forward:HeloName is not set: the machine's fully qualified name when it is one (RFC 5321 section 4.1.1.1).</summary>
    static string DefaultHeloName()
    {
        try
        {
            var properties = IPGlobalProperties.GetIPGlobalProperties();
            var name = string.IsNullOrEmpty(properties.DomainName) ? properties.HostName : properties.HostName + "." + properties.DomainName;
            return Smtp.SmtpGrammar.IsDomain(name) ? name : "localhost";
        }
        catch (NetworkInformationException)
        {
            return "localhost";
        }
    }
}
