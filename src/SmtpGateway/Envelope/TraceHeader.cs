using System.Net;
using MimeKit.Utils;

namespace SmtpGateway.Envelope;

/// <summary>The Received trace header every SMTP server must prepend (RFC 5321 section 4.4).</summary>
public static class TraceHeader
{
    /// <param name="helo">Already validated by the grammar (domain or address literal), so it cannot inject header text.</param>
    public static string Received(string helo, IPAddress client, string serverName, string protocol, string? tlsProtocol, string id, DateTimeOffset now)
    {
        var address = client.IsIPv4MappedToIPv6 ? client.MapToIPv4() : client;
        var literal = address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"IPv6:{address}" : address.ToString();
        var tls = tlsProtocol is null ? "" : $" ({tlsProtocol})";
        return $"Received: from {helo} ([{literal}])\r\n\tby {serverName} with {protocol}{tls} id {id};\r\n\t{DateUtils.FormatDate(now)}\r\n";
    }
}
