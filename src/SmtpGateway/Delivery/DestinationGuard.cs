using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using SmtpGateway.Configuration;
using SmtpGateway.Diagnostics;
using SmtpGateway.Smtp;

namespace SmtpGateway.Delivery;

/// <summary>
/// The SSRF guard of every outbound path at connect time: the table is <see cref="DestinationRanges"/> (rules are data;
/// the first matching row decides); here are the paths' names, and the log and metric of a refusal.
/// </summary>
internal static class DestinationGuard
{
    /// <summary>Paths, the closed set of the metric label "path".</summary>
    public const string Mx = "mx";
    public const string Smarthost = "smarthost";
    public const string Forward = "forward";
    public const string Webhook = "webhook";

    static readonly Counter<long> Refusals = Telemetry.Meter.CreateCounter<long>(
        Telemetry.DeliveryDestinationRefused, "{connection}",
        "Outbound connections refused by the destination guard; path=mx|smarthost|forward|webhook, range=the refused range's name.");

    /// <summary>The name of the refused range <paramref name="address"/> is in, or null when the gateway may connect to it.</summary>
    public static string? RefusedRange(IPAddress address) => DestinationRanges.RefusedRange(address);

    public static bool IsAllowed(IPAddress address) => DestinationRanges.IsAllowed(address);

    /// <summary>Counts and logs one refused destination; the host is operator or DNS data, the labels are closed sets.</summary>
    public static void Refused(ILogger logger, string path, string tenant, string host, IPAddress address, string range)
    {
        Refusals.Add(1, new KeyValuePair<string, object?>("path", path), new KeyValuePair<string, object?>("range", range),
            new KeyValuePair<string, object?>("tenant", tenant));
        DestinationGuardLog.Refused(logger, path, tenant, host, address.ToString(), range);
    }
}

/// <summary>System name resolution, replaceable in tests (a DNS answer that changes between validation and connect).</summary>
internal delegate Task<IPAddress[]> HostResolver(string host, CancellationToken cancellationToken);

/// <summary>The guard's answer for a name: addresses the gateway may connect to, none of them refused.</summary>
internal sealed class DestinationRefusedException(SmtpReply reply) : Exception(reply.ToString())
{
    public SmtpReply Reply { get; } = reply;
}

/// <summary>
/// Resolves a destination once and checks every address, for the paths whose destination is a host name from the
/// configuration (smarthosts, Forward, Webhook; MX answers are checked in <see cref="MxResolver"/>). The caller connects
/// to the returned addresses only, never to the name again: a second resolution could answer differently (DNS
/// rebinding) and reach an address that was never checked.
/// </summary>
internal sealed class DestinationPolicy
{
    readonly bool _allowPrivate;
    readonly HashSet<(string Host, int Port)> _trusted;
    readonly HostResolver _resolve;
    readonly ILogger _logger;

    /// <param name="allowPrivate">Gateway:Delivery:AllowPrivateDestinations: no address is refused.</param>
    /// <param name="logger">Where refusals are logged.</param>
    /// <param name="trusted">Destinations the operator allowed individually (the gateway's smarthost with its own AllowPrivateDestinations).</param>
    /// <param name="resolver">Name resolution; default the system resolver (which honours /etc/hosts).</param>
    public DestinationPolicy(bool allowPrivate, ILogger logger, IEnumerable<(string Host, int Port)>? trusted = null, HostResolver? resolver = null)
    {
        _allowPrivate = allowPrivate;
        _logger = logger;
        _trusted = new HashSet<(string, int)>(trusted?.Select(t => (t.Host.ToUpperInvariant(), t.Port)) ?? []);
        _resolve = resolver ?? SystemResolve;
    }

    /// <summary>Every address allowed: tests and closed networks.</summary>
    public static DestinationPolicy AllowAll(ILogger logger) => new(true, logger);

    /// <summary>The policy the configuration states: Delivery:AllowPrivateDestinations, and the gateway's smarthost when it allows itself.</summary>
    public static DestinationPolicy For(DeliveryConfig delivery, ILogger logger, HostResolver? resolver = null) =>
        new(delivery.AllowPrivateDestinations, logger, TrustedSmarthost(delivery), resolver);

    /// <summary>The gateway's smarthost, when it is in use and allowed to be private.</summary>
    public static IEnumerable<(string Host, int Port)> TrustedSmarthost(DeliveryConfig delivery) => DestinationRanges.TrustedSmarthost(delivery);

    /// <summary>Names compared as config validation compares them (trimmed, case-insensitive), so what check-config passes is what connects.</summary>
    public bool AllowsPrivate(string host, int port) => _allowPrivate || _trusted.Contains((host.Trim().ToUpperInvariant(), port));

    /// <summary>
    /// The addresses of <paramref name="host"/> the gateway may connect to, in the resolver's order, refused ones left out
    /// (each logged and counted). Throws <see cref="DestinationRefusedException"/> (451 4.4.3, deferred: DNS may be fixed)
    /// when every address is refused; resolver failures (<see cref="SocketException"/>) pass through.
    /// </summary>
    public async Task<IReadOnlyList<IPAddress>> ResolveAsync(string path, string tenant, string host, int port, CancellationToken cancellationToken)
    {
        var name = host.StartsWith('[') && host.EndsWith(']') ? host[1..^1] : host;
        var addresses = IPAddress.TryParse(name, out var literal) ? [literal] : await _resolve(name, cancellationToken).ConfigureAwait(false);
        if (AllowsPrivate(host, port))
        {
            return addresses;
        }

        var allowed = new List<IPAddress>(addresses.Length);
        string? firstRange = null;
        foreach (var address in addresses)
        {
            if (DestinationGuard.RefusedRange(address) is { } range)
            {
                firstRange ??= range;
                DestinationGuard.Refused(_logger, path, tenant, name, address, range);
            }
            else
            {
                allowed.Add(address);
            }
        }

        return allowed.Count > 0 || firstRange is null ? allowed : throw new DestinationRefusedException(DeliveryReplies.DestinationRefused(name, firstRange));
    }

    /// <summary>
    /// For SocketsHttpHandler.ConnectCallback: resolves and checks the request's host once, connects a socket to a checked
    /// address; TLS (SNI, certificate name) and the Host header still use the URL's name, since the handler layers them on
    /// the returned stream.
    /// </summary>
    public async ValueTask<Stream> ConnectHttpAsync(SocketsHttpConnectionContext context, string tenant, CancellationToken cancellationToken)
    {
        var endpoint = context.DnsEndPoint;
        var addresses = await ResolveAsync(DestinationGuard.Webhook, tenant, endpoint.Host, endpoint.Port, cancellationToken).ConfigureAwait(false);
        SocketException? last = null;
        foreach (var address in addresses)
        {
            var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(new IPEndPoint(address, endpoint.Port), cancellationToken).ConfigureAwait(false);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch (SocketException ex)
            {
                socket.Dispose();
                last = ex;
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }

        throw last ?? new SocketException((int)SocketError.HostNotFound);
    }

    static Task<IPAddress[]> SystemResolve(string host, CancellationToken cancellationToken) => Dns.GetHostAddressesAsync(host, cancellationToken);
}

/// <summary>Destination guard log messages; event ids Delivery+180..199.</summary>
internal static partial class DestinationGuardLog
{
    [LoggerMessage(EventId = EventIds.Delivery + 180, Level = LogLevel.Warning,
        Message = "Destination guard: {Path} for tenant {Tenant}: {Host} resolves to {Address} ({Range}); not connecting (set Gateway:Delivery:AllowPrivateDestinations to allow)")]
    public static partial void Refused(ILogger logger, string path, string tenant, string host, string address, string range);
}
