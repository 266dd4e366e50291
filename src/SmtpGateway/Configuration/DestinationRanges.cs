using System.Net;

namespace SmtpGateway.Configuration;

/// <summary>
/// One row of the destination guard's table. A row with <see cref="EmbeddedIPv4At"/> refuses nothing by itself: the
/// IPv4 address carried inside the IPv6 one at that byte offset is what the packets finally reach, so that address is
/// checked against the table instead.
/// </summary>
/// <param name="Network">The range.</param>
/// <param name="Name">Why it is refused; a closed set, used as the metric label "range".</param>
/// <param name="EmbeddedIPv4At">Byte offset of an embedded IPv4 address, or -1.</param>
public sealed record GuardRange(IPNetwork Network, string Name, int EmbeddedIPv4At = -1)
{
    public static GuardRange Refuse(string cidr, string name) => new(IPNetwork.Parse(cidr), name);

    public static GuardRange Embedded(string cidr, string name, int offset) => new(IPNetwork.Parse(cidr), name, offset);
}

/// <summary>
/// The destination guard's policy as data (issue 12): addresses no outbound path (MX, smarthosts, inbound Forward and
/// Webhook) may connect to unless the operator allows private destinations, because a tenant or a sender who publishes
/// DNS records could otherwise steer the gateway at loopback services (its own relay listener, the admin API), the
/// private network or the cloud metadata endpoint. Pure and in Configuration, so config validation checks IP literals
/// with the same table Delivery uses at connect time (the Delivery stage's DestinationGuard) without depending on Delivery.
/// </summary>
public static class DestinationRanges
{
    /// <summary>
    /// Refused ranges (RFC 6890 special-purpose registries, IANA IPv4/IPv6 special-purpose address registries), and
    /// IPv6 forms that carry an IPv4 address. Metadata endpoints come before their enclosing range, so logs name them.
    /// </summary>
    public static readonly IReadOnlyList<GuardRange> Ranges =
    [
        // Cloud instance metadata (AWS, GCP, Azure, OpenStack): credentials of the machine the gateway runs on.
        GuardRange.Refuse("169.254.169.254/32", "metadata"),
        GuardRange.Refuse("fd00:ec2::254/128", "metadata"),

        // IPv4.
        GuardRange.Refuse("0.0.0.0/8", "this-network"),           // RFC 791, RFC 1122 section 3.2.1.3
        GuardRange.Refuse("10.0.0.0/8", "private"),               // RFC 1918
        GuardRange.Refuse("100.64.0.0/10", "shared"),             // RFC 6598 carrier-grade NAT
        GuardRange.Refuse("127.0.0.0/8", "loopback"),             // RFC 1122 section 3.2.1.3
        GuardRange.Refuse("169.254.0.0/16", "link-local"),        // RFC 3927
        GuardRange.Refuse("172.16.0.0/12", "private"),            // RFC 1918
        GuardRange.Refuse("192.0.0.0/24", "ietf-protocol"),       // RFC 6890 (DS-Lite B4, NAT64 discovery, ...)
        GuardRange.Refuse("192.168.0.0/16", "private"),           // RFC 1918
        GuardRange.Refuse("198.18.0.0/15", "benchmarking"),       // RFC 2544
        GuardRange.Refuse("224.0.0.0/4", "multicast"),            // RFC 5771
        GuardRange.Refuse("240.0.0.0/4", "reserved"),             // RFC 1112 section 4; includes 255.255.255.255 (RFC 919 broadcast)

        // IPv6.
        GuardRange.Refuse("::/128", "unspecified"),               // RFC 4291 section 2.5.2
        GuardRange.Refuse("::1/128", "loopback"),                 // RFC 4291 section 2.5.3
        GuardRange.Embedded("::ffff:0:0/96", "ipv4-mapped", 12),  // RFC 4291 section 2.5.5.2: the socket talks IPv4 to the embedded address
        GuardRange.Refuse("::/96", "ipv4-compatible"),            // RFC 4291 section 2.5.5.1: deprecated, never a real destination

        // RFC 6052 well-known NAT64 prefix: the translator forwards to the embedded IPv4 address, so that address decides
        // (refusing the prefix outright would cut IPv6-only hosts behind DNS64 off from every IPv4 MX).
        GuardRange.Embedded("64:ff9b::/96", "nat64", 12),
        GuardRange.Refuse("64:ff9b:1::/48", "nat64-local"),       // RFC 8215 local-use translation: the embedding is site-defined
        GuardRange.Embedded("2002::/16", "6to4", 2),              // RFC 3056 section 2: the relay tunnels to the embedded IPv4 address
        GuardRange.Refuse("fc00::/7", "unique-local"),            // RFC 4193
        GuardRange.Refuse("fe80::/10", "link-local"),             // RFC 4291 section 2.5.6
        GuardRange.Refuse("fec0::/10", "site-local"),             // RFC 3879 (deprecated, still routed inside some sites)
        GuardRange.Refuse("ff00::/8", "multicast"),               // RFC 4291 section 2.7
    ];

    /// <summary>The name of the refused range <paramref name="address"/> is in, or null when the gateway may connect to it.</summary>
    public static string? RefusedRange(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        foreach (var range in Ranges)
        {
            if (!range.Network.Contains(address))
            {
                continue;
            }

            if (range.EmbeddedIPv4At < 0)
            {
                return range.Name;
            }

            // The embedded address is IPv4, so this recursion ends after one step.
            var bytes = address.GetAddressBytes();
            return RefusedRange(new IPAddress(bytes.AsSpan(range.EmbeddedIPv4At, 4)));
        }

        return null;
    }

    public static bool IsAllowed(IPAddress address) => RefusedRange(address) is null;

    /// <summary>
    /// Configuration check: a destination given as an IP literal in a refused range is an error unless allowed (names are
    /// checked at connect time, since their answers may change). The message names the range and the switch that allows it.
    /// </summary>
    public static void CheckLiteral(string path, string? host, bool allowPrivate, string allowSetting, List<string> errors)
    {
        ArgumentNullException.ThrowIfNull(errors);
        if (allowPrivate || string.IsNullOrWhiteSpace(host))
        {
            return;
        }

        var literal = host.Trim();
        if (literal.StartsWith('[') && literal.EndsWith(']'))
        {
            literal = literal[1..^1];
        }

        if (IPAddress.TryParse(literal, out var address) && RefusedRange(address) is { } range)
        {
            errors.Add($"{path}: {literal} is a {range} address, which the destination guard refuses (connections to loopback, private, link-local and metadata addresses are how a misdirected route reaches internal services). Use a public address or name, or set {allowSetting} to true.");
        }
    }

    /// <summary>
    /// Every tenant's destinations given as IP literals: Egress:Smarthost:Host, and the selected inbound route's Forward:Host
    /// or Webhook:Url host. Allowed by Delivery:AllowPrivateDestinations (or, for a tenant smarthost that is the gateway's
    /// own smarthost, by Smarthost:AllowPrivateDestinations); a tenant section cannot allow itself.
    /// </summary>
    public static void CheckTenants(IReadOnlyDictionary<string, TenantConfig> tenants, DeliveryConfig delivery, List<string> errors)
    {
        ArgumentNullException.ThrowIfNull(tenants);
        ArgumentNullException.ThrowIfNull(delivery);
        const string Allow = "Gateway:Delivery:AllowPrivateDestinations";
        var trusted = TrustedSmarthost(delivery).Select(t => (t.Host.ToUpperInvariant(), t.Port)).ToHashSet();
        foreach (var (id, tenant) in tenants)
        {
            var p = $"Tenants:{id}";
            if (tenant?.Egress?.Smarthost is { } smarthost && smarthost.Host is { } host)
            {
                var allowed = delivery.AllowPrivateDestinations || trusted.Contains((host.Trim().ToUpperInvariant(), smarthost.Port));
                CheckLiteral($"{p}:Egress:Smarthost:Host", host, allowed, Allow, errors);
            }

            switch (tenant?.Inbound)
            {
                case { Route: InboundRouteKind.Forward, Forward: { } forward }:
                    CheckLiteral($"{p}:Inbound:Forward:Host", forward.Host, delivery.AllowPrivateDestinations, Allow, errors);
                    break;
                case { Route: InboundRouteKind.Webhook, Webhook.Url: { } url } when Uri.TryCreate(url, UriKind.Absolute, out var uri):
                    // Only the host is named in the message: the rest of a webhook URL may carry a token.
                    CheckLiteral($"{p}:Inbound:Webhook:Url", uri.Host, delivery.AllowPrivateDestinations, Allow, errors);
                    break;
            }
        }
    }

    /// <summary>The gateway's smarthost, when it is in use and allowed to be private.</summary>
    public static IEnumerable<(string Host, int Port)> TrustedSmarthost(DeliveryConfig delivery) =>
        delivery.Mode == DeliveryMode.Smarthost && delivery.Smarthost.AllowPrivateDestinations && !string.IsNullOrWhiteSpace(delivery.Smarthost.Host)
            ? [(delivery.Smarthost.Host.Trim(), delivery.Smarthost.Port)]
            : [];
}
