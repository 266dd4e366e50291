using System.Net;
using SmtpGateway.Listener;

namespace SmtpGateway.Policy;

/// <summary>Facts the relay rule needs, gathered by the Listener before asking.</summary>
public readonly record struct RelayFacts(IPAddress ClientAddress, bool Authenticated);

/// <summary>
/// Pure relay rule (trunk): an authenticated session, or a client inside a configured relay network, may relay;
/// everything else gets 554 5.7.1 so the gateway is never an open relay. Tenant-aware rules replace the network
/// list when tenant identity lands.
/// </summary>
public sealed class RelayPolicy(IReadOnlyList<IPNetwork> relayNetworks)
{
    public IReadOnlyList<IPNetwork> RelayNetworks { get; } = relayNetworks;

    /// <summary>Null means accept; otherwise the reply to send.</summary>
    public SmtpReply? Evaluate(in RelayFacts facts)
    {
        if (facts.Authenticated)
        {
            return null;
        }

        var address = Normalize(facts.ClientAddress);
        foreach (var network in RelayNetworks)
        {
            if (network.Contains(address))
            {
                return null;
            }
        }

        return SmtpReplies.RelayDenied;
    }

    /// <summary>A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; networks are written as IPv4.</summary>
    public static IPAddress Normalize(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
}
