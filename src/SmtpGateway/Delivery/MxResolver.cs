using System.Net;
using System.Net.Sockets;
using DnsClient;
using SmtpGateway.Configuration;
using SmtpGateway.Smtp;

namespace SmtpGateway.Delivery;

/// <summary>One mail exchanger to try: its name (pool key, TLS name check) and its addresses in the order to try them.</summary>
internal sealed record MxHost(string Name, int Preference, IReadOnlyList<IPAddress> Addresses);

/// <summary>
/// Where mail for a domain goes: the hosts in the order to try them, or a reply that says why there is nowhere to go
/// (permanent 5yz for a domain that does not exist or refuses mail, transient 4yz when DNS could not answer).
/// </summary>
internal sealed record MxRoute(IReadOnlyList<MxHost> Hosts, int FailureCode = 0, string? FailureText = null)
{
    public bool Failed => FailureCode != 0;

    public static MxRoute Fail(int code, string text) => new([], code, text);

    /// <summary>No route, for the reason in one of the gateway's own replies (<see cref="DeliveryReplies"/>).</summary>
    public static MxRoute Fail(SmtpReply reply) => Fail(reply.Code, DeliveryOutcomes.ReplyText(reply));
}

/// <summary>Finds the mail exchangers of a recipient domain (RFC 5321 section 5.1).</summary>
internal interface IMxResolver
{
    Task<MxRoute> ResolveAsync(string domain, CancellationToken cancellationToken);
}

/// <summary>
/// RFC 5321 section 5.1 over DnsClient:
/// <list type="bullet">
/// <item>MX records sorted by preference, equal preferences shuffled (section 5.1: "randomize"), each host's A
/// (then AAAA) addresses tried in turn;</item>
/// <item>no MX records: the domain itself is the implicit MX (its A/AAAA records);</item>
/// <item>a single MX "0 ." is a null MX (RFC 7505 section 3): the domain accepts no mail, 556 5.1.10;</item>
/// <item>NXDOMAIN for the domain: permanent, 550 5.4.4 (RFC 3463: unable to route);</item>
/// <item>timeouts, SERVFAIL and other resolver trouble: transient, 451 4.4.3 (RFC 3463: directory server failure).</item>
/// </list>
/// Answers are cached for their TTL by DnsClient's cache, so a burst of mail to one domain asks once.
/// </summary>
internal sealed class MxResolver : IMxResolver
{
    readonly ILookupClient _dns;
    readonly MxConfig _mx;
    readonly bool _allowPrivate;

    /// <param name="dns">Resolvers.</param>
    /// <param name="mx">MX settings, among them Mx:AllowPrivateDestinations.</param>
    /// <param name="allowPrivateDestinations">Delivery:AllowPrivateDestinations, which allows private answers for every path.</param>
    public MxResolver(DnsConfig dns, MxConfig mx, bool allowPrivateDestinations = false)
    {
        _mx = mx;
        _allowPrivate = mx.AllowPrivateDestinations || allowPrivateDestinations;
        var servers = dns.Endpoints();
        var options = servers.Length > 0 ? new LookupClientOptions(servers) : new LookupClientOptions();
        options.UseCache = dns.UseCache;
        options.Timeout = dns.Timeout;
        options.Retries = dns.Retries;
        options.ThrowDnsErrors = false;
        options.UseTcpFallback = true;
        options.ContinueOnDnsError = false;
        options.ContinueOnEmptyResponse = false;

        // Negative answers are cached briefly too, so that a burst of mail to a broken domain does not ask every time.
        options.CacheFailedResults = true;
        options.FailedResultsCacheDuration = TimeSpan.FromSeconds(30);
        _dns = new LookupClient(options);
    }

    internal MxResolver(ILookupClient dns, MxConfig mx)
    {
        _dns = dns;
        _mx = mx;
        _allowPrivate = mx.AllowPrivateDestinations;
    }

    public async Task<MxRoute> ResolveAsync(string domain, CancellationToken cancellationToken)
    {
        IDnsQueryResponse mx;
        try
        {
            mx = await _dns.QueryAsync(domain, QueryType.MX, QueryClass.IN, cancellationToken).ConfigureAwait(false);
        }
        catch (DnsResponseException ex)
        {
            return MxRoute.Fail(DeliveryReplies.DnsLookupFailed(domain, Describe(ex)));
        }

        if (mx.Header.ResponseCode == DnsHeaderResponseCode.NotExistentDomain)
        {
            return MxRoute.Fail(DeliveryReplies.DomainNotFound(domain));
        }

        if (mx.HasError)
        {
            return MxRoute.Fail(DeliveryReplies.DnsLookupFailed(domain, mx.Header.ResponseCode.ToString()));
        }

        var records = mx.Answers.MxRecords().ToList();
        if (records.Count == 0)
        {
            // RFC 5321 section 5.1: no MX records, so the domain is its own (implicit) MX with preference 0.
            var implicitHost = await AddressesAsync(domain, cancellationToken).ConfigureAwait(false);
            if (implicitHost.Failure is { } failure)
            {
                return failure.Code == 550 ? MxRoute.Fail(DeliveryReplies.NoMxNoAddress(domain)) : failure.Route;
            }

            return implicitHost.Addresses.Count == 0
                ? MxRoute.Fail(DeliveryReplies.NoMxNoAddress(domain))
                : new MxRoute([new MxHost(domain, 0, implicitHost.Addresses)]);
        }

        // RFC 7505 section 3: a single MX with an empty exchange (".") says the domain accepts no mail.
        if (records.All(r => IsRoot(r.Exchange)))
        {
            return MxRoute.Fail(DeliveryReplies.NullMx(domain));
        }

        var ordered = records
            .Where(r => !IsRoot(r.Exchange))
            .GroupBy(r => r.Preference)
            .OrderBy(g => g.Key)
            .SelectMany(g => g.OrderBy(_ => Random.Shared.Next()))
            .Select(r => (Name: r.Exchange.Value.TrimEnd('.').ToLowerInvariant(), r.Preference))
            .DistinctBy(r => r.Name, StringComparer.Ordinal)
            .Take(_mx.MaxHosts)
            .ToList();

        var hosts = new List<MxHost>(ordered.Count);
        var transient = false;
        MxRoute? lastTransient = null;
        foreach (var (name, preference) in ordered)
        {
            var lookup = await AddressesAsync(name, cancellationToken).ConfigureAwait(false);
            if (lookup.Failure is { Code: not 550 } failure)
            {
                transient = true;
                lastTransient = failure.Route;
            }

            if (lookup.Addresses.Count > 0)
            {
                hosts.Add(new MxHost(name, preference, lookup.Addresses));
            }
        }

        if (hosts.Count > 0)
        {
            return new MxRoute(hosts);
        }

        // Every MX name failed to resolve: transient if DNS had trouble, else the domain's MX records point nowhere.
        return transient
            ? lastTransient ?? MxRoute.Fail(DeliveryReplies.MxHostsLookupFailed(domain))
            : MxRoute.Fail(DeliveryReplies.NoMxHostAddress(domain));
    }

    async Task<(IReadOnlyList<IPAddress> Addresses, (int Code, MxRoute Route)? Failure)> AddressesAsync(string host, CancellationToken cancellationToken)
    {
        var addresses = new List<IPAddress>();
        (int, MxRoute)? failure = null;
        var types = _mx.UseIPv6 ? new[] { QueryType.A, QueryType.AAAA } : [QueryType.A];
        var nxdomain = 0;
        foreach (var type in types)
        {
            try
            {
                var response = await _dns.QueryAsync(host, type, QueryClass.IN, cancellationToken).ConfigureAwait(false);
                if (response.Header.ResponseCode == DnsHeaderResponseCode.NotExistentDomain)
                {
                    nxdomain++;
                    continue;
                }

                if (response.HasError)
                {
                    failure = Failed(DeliveryReplies.AddressLookupFailed(type.ToString(), host, response.Header.ResponseCode.ToString()));
                    continue;
                }

                addresses.AddRange(type == QueryType.A
                    ? response.Answers.ARecords().Select(a => a.Address)
                    : response.Answers.AaaaRecords().Select(a => a.Address));
            }
            catch (DnsResponseException ex)
            {
                failure = Failed(DeliveryReplies.AddressLookupFailed(type.ToString(), host, Describe(ex)));
            }
        }

        if (addresses.Count == 0 && failure is null && nxdomain > 0)
        {
            failure = Failed(DeliveryReplies.HostNotFound(host));
        }

        var all = addresses.Distinct().ToList();
        var distinct = all.Where(a => _allowPrivate || IsPublic(a)).Take(_mx.MaxAddressesPerHost).ToList();
        if (distinct.Count == 0 && all.Count > 0)
        {
            failure = Failed(DeliveryReplies.NonPublicAddresses(host));
        }

        return (distinct, distinct.Count > 0 ? null : failure);

        static (int, MxRoute) Failed(SmtpReply reply) => (reply.Code, MxRoute.Fail(reply));
    }

    /// <summary>False for addresses a public MX must never have (SSRF guard: <see cref="DestinationGuard"/>'s table).</summary>
    internal static bool IsPublic(IPAddress address) => DestinationGuard.IsAllowed(address);

    static bool IsRoot(DnsString exchange) => exchange.Value is "." or "";

    static string Describe(DnsResponseException ex) =>
        ex.Code == DnsResponseCode.ConnectionTimeout ? "timeout" : ex.InnerException is SocketException s ? s.SocketErrorCode.ToString() : ex.Code.ToString();
}
