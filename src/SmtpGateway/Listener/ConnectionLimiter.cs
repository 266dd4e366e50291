using System.Net;
using SmtpGateway.Smtp;

namespace SmtpGateway.Listener;

/// <summary>
/// Global and per-client-IP concurrent connection caps (an IPv6 client is its /64, see Identity.ClientAddress). Checked at accept time so an over-limit client
/// gets "421 4.7.0" in place of the banner (RFC 5321 section 3.1 allows 421 as the greeting) and costs no session.
/// </summary>
public sealed class ConnectionLimiter(int maxConnections, int maxPerAddress)
{
    readonly Dictionary<IPAddress, int> _perAddress = [];
    readonly Lock _lock = new();
    int _total;

    public int Active
    {
        get
        {
            lock (_lock)
            {
                return _total;
            }
        }
    }

    /// <summary>Null when admitted (caller must call <see cref="Release"/>), else the refusal reply.</summary>
    public SmtpReply? TryAcquire(IPAddress address)
    {
        address = Identity.ClientAddress.Key(address);
        lock (_lock)
        {
            if (_total >= maxConnections)
            {
                return SmtpReplies.TooManyConnections;
            }

            _perAddress.TryGetValue(address, out var count);
            if (count >= maxPerAddress)
            {
                return SmtpReplies.TooManyConnectionsFromIp;
            }

            _perAddress[address] = count + 1;
            _total++;
            return null;
        }
    }

    public void Release(IPAddress address)
    {
        address = Identity.ClientAddress.Key(address);
        lock (_lock)
        {
            if (_perAddress.TryGetValue(address, out var count))
            {
                if (count <= 1)
                {
                    _perAddress.Remove(address);
                }
                else
                {
                    _perAddress[address] = count - 1;
                }

                _total--;
            }
        }
    }
}
