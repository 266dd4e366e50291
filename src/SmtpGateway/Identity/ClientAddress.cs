using System.Net;
using System.Net.Sockets;

namespace SmtpGateway.Identity;

/// <summary>The unit a per-client limit counts: one IPv4 address, or one IPv6 /64.</summary>
public static class ClientAddress
{
    /// <summary>
    /// An IPv6 end site gets at least a /64 (RFC 6177), and a host can pick any of its 2^64 addresses (RFC 8981 temporary
    /// addresses), so counting per /128 would let one attacker escape a throttle or a connection cap by changing address.
    /// IPv4-mapped IPv6 addresses count as the IPv4 address.
    /// </summary>
    public static IPAddress Key(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            return address.MapToIPv4();
        }

        if (address.AddressFamily != AddressFamily.InterNetworkV6)
        {
            return address;
        }

        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out _);
        bytes[8..].Clear();
        return new IPAddress(bytes);
    }
}
