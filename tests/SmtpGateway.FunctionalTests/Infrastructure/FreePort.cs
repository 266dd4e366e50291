using System.Net;
using System.Net.Sockets;

namespace SmtpGateway.FunctionalTests.Infrastructure;

internal static class FreePort
{
    static readonly HashSet<int> s_handedOut = [];

    /// <summary>A loopback TCP port nobody listens on right now (and that this run has not handed out before).</summary>
    public static int Next()
    {
        while (true)
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            var port = ((IPEndPoint)listener.LocalEndpoint).Port;
            listener.Stop();
            lock (s_handedOut)
            {
                if (s_handedOut.Add(port))
                {
                    return port;
                }
            }
        }
    }
}
