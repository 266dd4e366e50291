using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace SmtpGateway.Tests.Delivery;

/// <summary>One message as the test server received it: envelope, MAIL parameters, and DATA after dot-unstuffing.</summary>
public sealed record ReceivedMessage(int Connection, string MailFrom, string MailParameters, IReadOnlyList<string> Recipients, byte[] Data);

/// <summary>
/// A tiny SMTP server on loopback for transport tests: EHLO (PIPELINING, 8BITMIME, SIZE, optionally SMTPUTF8),
/// MAIL, RCPT with a reply per address, DATA, RSET, NOOP, QUIT. Records raw DATA bytes and counts connections.
/// </summary>
public sealed class TestSmtpServer : IAsyncDisposable
{
    readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    readonly CancellationTokenSource _stop = new();
    readonly ConcurrentBag<Task> _sessions = [];
    readonly Task _accept;
    int _connections;
    int _active;
    int _maxActive;
    int _mailCommands;
    int _disposed;
    int _tlsSessions;

    public TestSmtpServer()
    {
        _listener.Start();
        _accept = AcceptAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>Reply to RCPT TO by address; default 250.</summary>
    public Func<string, string> RcptReply { get; set; } = _ => "250 2.1.5 Ok";

    /// <summary>Reply to MAIL FROM; default 250.</summary>
    public Func<string, string> MailReply { get; set; } = _ => "250 2.1.0 Ok";

    /// <summary>Final reply after the dot; default 250.</summary>
    public string DataReply { get; set; } = "250 2.0.0 Ok: queued";

    /// <summary>Close the socket without a reply when the n-th MAIL command (1-based, over all connections) arrives.</summary>
    public Func<int, bool> DropOnMail { get; set; } = _ => false;

    /// <summary>Delay before the final DATA reply, to hold connections open concurrently.</summary>
    public TimeSpan DataDelay { get; set; } = TimeSpan.Zero;

    public bool AdvertiseSmtpUtf8 { get; set; }

    /// <summary>Offer STARTTLS but answer the handshake with garbage (a broken TLS stack or a middlebox), then hang up.</summary>
    public bool BreakStartTls { get; set; }

    /// <summary>When set, STARTTLS (RFC 3207) is offered with this certificate.</summary>
    public X509Certificate2? StartTlsCertificate { get; set; }

    /// <summary>Sessions that completed a TLS handshake.</summary>
    public int TlsSessions => Volatile.Read(ref _tlsSessions);

    public int Connections => Volatile.Read(ref _connections);

    public int MaxConcurrentConnections => Volatile.Read(ref _maxActive);

    public ConcurrentQueue<ReceivedMessage> Messages { get; } = new();

    public ConcurrentQueue<string> Commands { get; } = new();

    async Task AcceptAsync()
    {
        try
        {
            while (true)
            {
                var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                var number = Interlocked.Increment(ref _connections);
                var active = Interlocked.Increment(ref _active);
                int max;
                while (active > (max = Volatile.Read(ref _maxActive)) && Interlocked.CompareExchange(ref _maxActive, active, max) != max)
                {
                }

                _sessions.Add(Task.Run(async () =>
                {
                    try
                    {
                        using (client)
                        {
                            await SessionAsync(client, number);
                        }
                    }
                    catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
                    {
                    }
                    finally
                    {
                        Interlocked.Decrement(ref _active);
                    }
                }));
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    async Task SessionAsync(TcpClient client, int connection)
    {
        Stream stream = client.GetStream();
        var reader = new BufferedStream(stream, 8192);
        var secure = false;
        async Task Send(string reply) => await stream.WriteAsync(Encoding.ASCII.GetBytes(reply + "\r\n"), _stop.Token);

        await Send("220 test.example ESMTP");
        string mailFrom = "", mailParameters = "";
        var recipients = new List<string>();
        while (true)
        {
            var line = await ReadLineAsync(reader);
            if (line is null)
            {
                return;
            }

            var command = Encoding.UTF8.GetString(line).TrimEnd('\r', '\n');
            Commands.Enqueue(command);
            var verb = command.Split(' ', 2)[0].ToUpperInvariant();
            switch (verb)
            {
                case "EHLO":
                    await Send("250-test.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n" + (AdvertiseSmtpUtf8 ? "250-SMTPUTF8\r\n" : "")
                        + ((StartTlsCertificate is not null || BreakStartTls) && !secure ? "250-STARTTLS\r\n" : "") + "250 SIZE 104857600");
                    break;
                case "STARTTLS" when BreakStartTls:
                    await Send("220 2.0.0 Ready to start TLS");
                    await Send("this is not a TLS record");
                    return;
                case "STARTTLS" when StartTlsCertificate is not null && !secure:
                    await Send("220 2.0.0 Ready to start TLS");
                    var tls = new SslStream(stream, leaveInnerStreamOpen: false);
                    try
                    {
                        await tls.AuthenticateAsServerAsync(StartTlsCertificate);
                    }
                    catch (System.Security.Authentication.AuthenticationException)
                    {
                        return;
                    }

                    // RFC 3207 section 4.2: the session starts over after the handshake.
                    Interlocked.Increment(ref _tlsSessions);
                    stream = tls;
                    reader = new BufferedStream(tls, 8192);
                    secure = true;
                    recipients.Clear();
                    break;
                case "HELO":
                    await Send("250 test.example");
                    break;
                case "MAIL":
                    if (DropOnMail(Interlocked.Increment(ref _mailCommands)))
                    {
                        client.Client.Close();
                        return;
                    }

                    (mailFrom, mailParameters) = SplitPath(command["MAIL FROM:".Length..]);
                    recipients.Clear();
                    await Send(MailReply(mailFrom));
                    break;
                case "RCPT":
                    var (rcpt, _) = SplitPath(command["RCPT TO:".Length..]);
                    var reply = RcptReply(rcpt);
                    if (reply.StartsWith('2'))
                    {
                        recipients.Add(rcpt);
                    }

                    await Send(reply);
                    break;
                case "DATA":
                    if (recipients.Count == 0)
                    {
                        await Send("554 5.5.1 No valid recipients");
                        break;
                    }

                    await Send("354 End data with <CR><LF>.<CR><LF>");
                    var data = await ReadDataAsync(reader);
                    if (data is null)
                    {
                        return;
                    }

                    if (DataDelay > TimeSpan.Zero)
                    {
                        await Task.Delay(DataDelay, _stop.Token);
                    }

                    if (DataReply.StartsWith('2'))
                    {
                        Messages.Enqueue(new ReceivedMessage(connection, mailFrom, mailParameters, recipients.ToArray(), data));
                    }

                    recipients.Clear();
                    await Send(DataReply);
                    break;
                case "RSET":
                    recipients.Clear();
                    await Send("250 2.0.0 Ok");
                    break;
                case "NOOP":
                    await Send("250 2.0.0 Ok");
                    break;
                case "QUIT":
                    await Send("221 2.0.0 Bye");
                    return;
                default:
                    await Send("502 5.5.2 Command not recognized");
                    break;
            }
        }
    }

    static (string Path, string Parameters) SplitPath(string rest)
    {
        var close = rest.IndexOf('>');
        var path = rest[(rest.IndexOf('<') + 1)..close];
        return (path, rest[(close + 1)..].Trim());
    }

    async Task<byte[]?> ReadLineAsync(Stream reader)
    {
        var line = new MemoryStream();
        var one = new byte[1];
        while (true)
        {
            if (await reader.ReadAsync(one, _stop.Token) == 0)
            {
                return null;
            }

            line.WriteByte(one[0]);
            if (one[0] == '\n')
            {
                return line.ToArray();
            }
        }
    }

    /// <summary>Reads DATA up to CRLF.CRLF and undoes dot-stuffing (RFC 5321 section 4.5.2).</summary>
    async Task<byte[]?> ReadDataAsync(Stream reader)
    {
        var data = new MemoryStream();
        while (true)
        {
            var line = await ReadLineAsync(reader);
            if (line is null)
            {
                return null;
            }

            if (line.AsSpan().SequenceEqual(".\r\n"u8))
            {
                return data.ToArray();
            }

            var start = line.Length > 0 && line[0] == '.' ? 1 : 0;
            data.Write(line, start, line.Length - start);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        await _stop.CancelAsync();
        _listener.Stop();
        await _accept;
        await Task.WhenAll(_sessions);
    }
}
