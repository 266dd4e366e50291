using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace SmtpGateway.Tests.Delivery;

/// <summary>One message as the test server received it: envelope, MAIL parameters, and DATA after dot-unstuffing.</summary>
public sealed record ReceivedMessage(int Connection, string MailFrom, string MailParameters, IReadOnlyList<string> Recipients, byte[] Data);

/// <summary>One AUTH exchange (RFC 4954): the mechanism, the client's lines as sent (base64) and decoded, and the final reply.</summary>
public sealed record AuthExchange(int Connection, string Mechanism, IReadOnlyList<string> WireLines, IReadOnlyList<byte[]> Responses, string Reply);

/// <summary>
/// A tiny SMTP server on loopback for transport tests: EHLO (PIPELINING, 8BITMIME, SIZE, optionally SMTPUTF8),
/// MAIL, RCPT with a reply per address, DATA, RSET, NOOP, QUIT; optionally STARTTLS or implicit TLS, and AUTH PLAIN,
/// LOGIN and XOAUTH2. Records raw DATA bytes and AUTH exchanges, and counts connections.
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
    int _dataReplies;
    int _serverCloses;
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

    /// <summary>
    /// A line sent unprompted after the n-th DATA reply (1-based, over all connections), e.g. a 421; null sends nothing.
    /// Awaited before the session reads its next command, so a test can hold the line back until the client is idle.
    /// </summary>
    public Func<int, Task<string?>> AfterDataReply { get; set; } = _ => Task.FromResult<string?>(null);


    /// <summary>Close the connection right after the n-th DATA reply (1-based), as a server with a short idle timeout does.</summary>
    public Func<int, bool> CloseAfterDataReply { get; set; } = _ => false;

    /// <summary>Connections closed by <see cref="CloseAfterDataReply"/>; the client has seen the FIN once this counts it (loopback).</summary>
    public int ServerCloses => Volatile.Read(ref _serverCloses);

    /// <summary>Close the socket without a reply when the n-th MAIL command (1-based, over all connections) arrives.</summary>
    public Func<int, bool> DropOnMail { get; set; } = _ => false;

    /// <summary>
    /// When above 0, the final DATA reply waits until this many sessions wait for it at once; then every session goes on
    /// and later ones do not wait. It holds connections open concurrently (for the connection caps) without a pause on
    /// the real clock. If that many never meet within 10 s (a cap set lower than the test thinks), they go on anyway and
    /// the test's own assertions say what went wrong.
    /// </summary>
    public int HoldDataUntilConcurrent { get; set; }

    readonly TaskCompletionSource _dataGate = new(TaskCreationOptions.RunContinuationsAsynchronously);
    int _heldAtData;

    async Task HoldAtDataAsync()
    {
        if (Interlocked.Increment(ref _heldAtData) >= HoldDataUntilConcurrent)
        {
            _dataGate.TrySetResult();
        }

        try
        {
            await _dataGate.Task.WaitAsync(TimeSpan.FromSeconds(10), _stop.Token);
        }
        catch (TimeoutException)
        {
            _dataGate.TrySetResult();
        }
    }

    public bool AdvertiseSmtpUtf8 { get; set; }

    /// <summary>Offer STARTTLS but answer the handshake with garbage (a broken TLS stack or a middlebox), then hang up.</summary>
    public bool BreakStartTls { get; set; }

    /// <summary>When set, STARTTLS (RFC 3207) is offered with this certificate.</summary>
    public X509Certificate2? StartTlsCertificate { get; set; }

    /// <summary>When set, every session is TLS from the first byte (RFC 8314 section 3.3) with this certificate.</summary>
    public X509Certificate2? ImplicitTlsCertificate { get; set; }

    /// <summary>SASL mechanisms offered in the EHLO reply (RFC 4954 section 3); no AUTH keyword when empty.</summary>
    public string[] AuthMechanisms { get; set; } = [];

    /// <summary>Final reply to an AUTH exchange from the mechanism and the decoded client responses; default 235.</summary>
    public Func<string, IReadOnlyList<byte[]>, string> AuthReply { get; set; } = (_, _) => "235 2.7.0 Authentication successful";

    public ConcurrentQueue<AuthExchange> AuthExchanges { get; } = new();

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
                    var quit = new StrongBox<bool>();
                    try
                    {
                        using (client)
                        {
                            await SessionAsync(client, number, quit);
                        }
                    }
                    catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
                    {
                    }
                    finally
                    {
                        if (!quit.Value)
                        {
                            Interlocked.Decrement(ref _active);
                        }
                    }
                }));
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    async Task SessionAsync(TcpClient client, int connection, StrongBox<bool> quit)
    {
        Stream stream = client.GetStream();
        var secure = false;
        if (ImplicitTlsCertificate is { } implicitCertificate)
        {
            if (await HandshakeAsync(stream, implicitCertificate) is not { } implicitTls)
            {
                return;
            }

            stream = implicitTls;
            secure = true;
        }

        var reader = new BufferedStream(stream, 8192);
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
                        + ((StartTlsCertificate is not null || BreakStartTls) && !secure ? "250-STARTTLS\r\n" : "")
                        + (AuthMechanisms.Length > 0 ? $"250-AUTH {string.Join(' ', AuthMechanisms)}\r\n" : "") + "250 SIZE 104857600");
                    break;
                case "STARTTLS" when BreakStartTls:
                    await Send("220 2.0.0 Ready to start TLS");
                    await Send("this is not a TLS record");
                    return;
                case "STARTTLS" when StartTlsCertificate is not null && !secure:
                    await Send("220 2.0.0 Ready to start TLS");
                    if (await HandshakeAsync(stream, StartTlsCertificate) is not { } tls)
                    {
                        return;
                    }

                    // RFC 3207 section 4.2: the session starts over after the handshake.
                    stream = tls;
                    reader = new BufferedStream(tls, 8192);
                    secure = true;
                    recipients.Clear();
                    break;
                case "AUTH":
                    if (!await AuthAsync(command, connection, reader, Send))
                    {
                        return;
                    }

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

                    if (HoldDataUntilConcurrent > 0)
                    {
                        await HoldAtDataAsync();
                    }

                    if (DataReply.StartsWith('2'))
                    {
                        Messages.Enqueue(new ReceivedMessage(connection, mailFrom, mailParameters, recipients.ToArray(), data));
                    }

                    recipients.Clear();
                    await Send(DataReply);
                    var replied = Interlocked.Increment(ref _dataReplies);
                    if (await AfterDataReply(replied) is { } unsolicited)
                    {
                        await Send(unsolicited);
                    }

                    if (CloseAfterDataReply(replied))
                    {
                        client.Client.Close();
                        Interlocked.Increment(ref _serverCloses);
                        return;
                    }

                    break;
                case "RSET":
                    recipients.Clear();
                    await Send("250 2.0.0 Ok");
                    break;
                case "NOOP":
                    await Send("250 2.0.0 Ok");
                    break;
                case "QUIT":
                    // The session stops counting as active before the client can see 221: a client that frees its slot on
                    // 221 and connects again at once must not look like one connection too many.
                    quit.Value = true;
                    Interlocked.Decrement(ref _active);
                    await Send("221 2.0.0 Bye");
                    return;
                default:
                    await Send("502 5.5.2 Command not recognized");
                    break;
            }
        }
    }

    /// <summary>The server side of a TLS handshake, counted in <see cref="TlsSessions"/>; null when it failed.</summary>
    async Task<SslStream?> HandshakeAsync(Stream stream, X509Certificate2 certificate)
    {
        var tls = new SslStream(stream, leaveInnerStreamOpen: false);
        try
        {
            await tls.AuthenticateAsServerAsync(certificate);
        }
        catch (System.Security.Authentication.AuthenticationException)
        {
            await tls.DisposeAsync();
            return null;
        }

        Interlocked.Increment(ref _tlsSessions);
        return tls;
    }

    /// <summary>
    /// RFC 4954 section 4: AUTH mechanism [initial-response]; 334 challenges until the client has said everything; then
    /// the final reply. LOGIN asks for the user name and the password in turn; a refused XOAUTH2 first sends a 334 with
    /// a JSON error, which the client answers with an empty line. False when the client hung up.
    /// </summary>
    async Task<bool> AuthAsync(string command, int connection, Stream reader, Func<string, Task> send)
    {
        var parts = command.Split(' ');
        var mechanism = parts[1].ToUpperInvariant();
        var wire = new List<string> { command };
        var responses = new List<byte[]>();
        if (parts.Length > 2)
        {
            responses.Add(Convert.FromBase64String(parts[2]));
        }

        async Task<bool> Ask(string challenge)
        {
            await send("334 " + challenge);
            var line = await ReadLineAsync(reader);
            if (line is null)
            {
                return false;
            }

            var text = Encoding.ASCII.GetString(line).TrimEnd('\r', '\n');
            wire.Add(text);
            responses.Add(Convert.FromBase64String(text));
            return true;
        }

        if (mechanism == "LOGIN")
        {
            if (!await Ask("VXNlcm5hbWU6") || !await Ask("UGFzc3dvcmQ6"))
            {
                return false;
            }
        }
        else if (responses.Count == 0 && !await Ask(""))
        {
            return false;
        }

        var reply = AuthReply(mechanism, responses);
        if (mechanism == "XOAUTH2" && !reply.StartsWith('2') && !await Ask(Convert.ToBase64String("{\"status\":\"401\",\"schemes\":\"bearer\"}"u8)))
        {
            return false;
        }

        AuthExchanges.Enqueue(new AuthExchange(connection, mechanism, wire, responses, reply));
        await send(reply);
        return true;
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
