using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>An SMTP reply: its code and every line's text (after "NNN-" / "NNN ").</summary>
internal sealed record SmtpReply(int Code, IReadOnlyList<string> Lines)
{
    public string Text => string.Join(" / ", Lines);

    public override string ToString() => $"{Code} {Text}";
}

/// <summary>
/// A deliberately small SMTP client over a raw socket: it writes exactly the bytes it is given, so tests can
/// send what a library client would refuse to (bare LF, odd pipelining), and it reads replies strictly.
/// </summary>
internal sealed class RawSmtpClient : IDisposable
{
    readonly TcpClient _tcp;
    readonly Stream _stream;
    readonly byte[] _buffer = new byte[8192];
    int _start, _end;

    RawSmtpClient(TcpClient tcp, Stream stream, TimeSpan timeout)
    {
        _tcp = tcp;
        _stream = stream;
        Timeout = timeout;
    }

    /// <summary>How long one reply (or one write) may take.</summary>
    public TimeSpan Timeout { get; set; }

    public SmtpReply Banner { get; private set; } = new(0, []);

    /// <param name="localEndPoint">
    /// Source address (and port, 0 for any) to bind before connecting, e.g. 127.0.0.2 to be another client network
    /// on loopback; null for the system's choice.
    /// </param>
    public static async Task<RawSmtpClient> ConnectAsync(string host, int port, TimeSpan timeout, CancellationToken cancellationToken,
        bool implicitTls = false, IPEndPoint? localEndPoint = null)
    {
        var tcp = localEndPoint is null ? new TcpClient { NoDelay = true } : new TcpClient(localEndPoint) { NoDelay = true };
        try
        {
            using (var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                cts.CancelAfter(timeout);
                try
                {
                    await tcp.ConnectAsync(host, port, cts.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new TimeoutException($"connect to {host}:{port} timed out");
                }
            }

            Stream stream = tcp.GetStream();
            if (implicitTls)
            {
                var ssl = new SslStream(stream, leaveInnerStreamOpen: false, (_, _, _, _) => true);
                using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                cts.CancelAfter(timeout);
                await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "localhost" }, cts.Token)
                    .ConfigureAwait(false);
                stream = ssl;
            }

            var client = new RawSmtpClient(tcp, stream, timeout);
            client.Banner = await client.ReadReplyAsync(cancellationToken).ConfigureAwait(false);
            return client;
        }
        catch
        {
            tcp.Dispose();
            throw;
        }
    }

    /// <summary>Writes <paramref name="line"/> + CRLF and reads one reply.</summary>
    public async Task<SmtpReply> CommandAsync(string line, CancellationToken cancellationToken)
    {
        await WriteAsync(Encoding.ASCII.GetBytes(line + "\r\n"), cancellationToken).ConfigureAwait(false);
        return await ReadReplyAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>AUTH PLAIN with an initial response (RFC 4616: no authorization identity, user, password).</summary>
    /// <summary>One command and its reply, both written to the test output.</summary>
    public async Task<SmtpReply> StepAsync(string command, Xunit.Abstractions.ITestOutputHelper output, CancellationToken cancellationToken)
    {
        var reply = await CommandAsync(command, cancellationToken).ConfigureAwait(false);
        output.WriteLine($"C: {command}\nS: {reply}");
        return reply;
    }

    public Task<SmtpReply> AuthPlainAsync(string user, string password, CancellationToken cancellationToken) =>
        CommandAsync("AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0{user}\0{password}")), cancellationToken);

    public async Task WriteAsync(ReadOnlyMemory<byte> bytes, CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(Timeout);
        await _stream.WriteAsync(bytes, cts.Token).ConfigureAwait(false);
        await _stream.FlushAsync(cts.Token).ConfigureAwait(false);
    }

    /// <summary>Reads one (possibly multi-line) reply. Throws IOException when the server closes the connection.</summary>
    public async Task<SmtpReply> ReadReplyAsync(CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(Timeout);
        var lines = new List<string>();
        try
        {
            while (true)
            {
                var line = await ReadLineAsync(cts.Token).ConfigureAwait(false)
                    ?? throw new IOException($"connection closed by server{(lines.Count > 0 ? " after " + string.Join(" / ", lines) : "")}");
                if (line.Length < 3 || !int.TryParse(line.AsSpan(0, 3), out var code) || (line.Length > 3 && line[3] is not (' ' or '-')))
                {
                    throw new InvalidDataException($"malformed reply line: {line}");
                }

                lines.Add(line.Length > 4 ? line[4..] : "");
                if (line.Length == 3 || line[3] == ' ')
                {
                    return new SmtpReply(code, lines);
                }
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"no reply within {Timeout}");
        }
    }

    /// <summary>Reads a reply if one arrives within <paramref name="wait"/>; null if none did.</summary>
    public async Task<SmtpReply?> TryReadReplyAsync(TimeSpan wait, CancellationToken cancellationToken)
    {
        var saved = Timeout;
        Timeout = wait;
        try
        {
            return await ReadReplyAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return null;
        }
        finally
        {
            Timeout = saved;
        }
    }

    async Task<string?> ReadLineAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var nl = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (nl >= 0)
            {
                var length = nl - _start;
                if (length == 0 || _buffer[nl - 1] != '\r')
                {
                    throw new InvalidDataException("server sent a bare LF");
                }

                var line = Encoding.Latin1.GetString(_buffer, _start, length - 1);
                _start = nl + 1;
                return line;
            }

            if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }

            if (_end == _buffer.Length)
            {
                throw new InvalidDataException("reply line too long");
            }

            var read = await _stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                return null;
            }

            _end += read;
        }
    }

    /// <summary>
    /// One whole transaction (MAIL, RCPT..., DATA, content, final dot), one command at a time. Returns the reply
    /// to the final dot, or the first reply that refused a step. <paramref name="content"/> is sent dot-stuffed and
    /// must end with CRLF (or be empty).
    /// </summary>
    public async Task<SmtpReply> SendMailAsync(string from, IEnumerable<string> recipients, ReadOnlyMemory<byte> content,
        CancellationToken cancellationToken)
    {
        var reply = await CommandAsync($"MAIL FROM:<{from}>", cancellationToken).ConfigureAwait(false);
        if (reply.Code != 250)
        {
            return reply;
        }

        foreach (var rcpt in recipients)
        {
            reply = await CommandAsync($"RCPT TO:<{rcpt}>", cancellationToken).ConfigureAwait(false);
            if (reply.Code is not (250 or 251))
            {
                return reply;
            }
        }

        reply = await CommandAsync("DATA", cancellationToken).ConfigureAwait(false);
        if (reply.Code != 354)
        {
            return reply;
        }

        await WriteAsync(DotStuff(content.Span), cancellationToken).ConfigureAwait(false);
        return await ReadReplyAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Content with a '.' added before every line that starts with '.', followed by ".\r\n".</summary>
    public static byte[] DotStuff(ReadOnlySpan<byte> content)
    {
        if (content.Length > 0 && !content.EndsWith("\r\n"u8))
        {
            throw new ArgumentException("content must end with CRLF", nameof(content));
        }

        var output = new MemoryStream(content.Length + 16);
        var atLineStart = true;
        foreach (var b in content)
        {
            if (atLineStart && b == '.')
            {
                output.WriteByte((byte)'.');
            }

            output.WriteByte(b);
            atLineStart = b == '\n';
        }

        output.Write(".\r\n"u8);
        return output.ToArray();
    }

    public void Dispose()
    {
        _stream.Dispose();
        _tcp.Dispose();
    }
}
