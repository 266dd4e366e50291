// smtp-loadgen sink: the smallest async .NET SMTP server that takes the bench's messages, for perf/floor.sh (issue 15).
//
// It stores and forwards nothing, like Postfix's smtp-sink, but runs on .NET's socket engine and thread pool the way the
// gateway's listener does: one async loop per connection over a PipeReader, replies written once the buffered input is
// used up (RFC 2920 section 3.2), and a zero-byte read before each wait (the listener's way to hold no buffer while a
// client thinks). Its CPU per message beside smtp-sink's is what the runtime itself adds to the inbound half of a
// relayed message. It does less than the listener: no CRLF, NUL or UTF-8 checks, no dot-unstuffing, no copy of the
// body. Runs until killed.
using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;

namespace SmtpGateway.LoadGen;

static class SinkCommand
{
    // RFC 5321 section 4.5.3.1.4 (command line) and 4.5.3.1.6 (text line): 512 and 1000 octets; one bound for both.
    const int MaxLine = 1000;

    public static async Task<int> RunAsync(Options o)
    {
        var port = o.Int("--port", 0);
        if (port <= 0 || port > 65535)
        {
            Console.Error.WriteLine("smtp-loadgen: sink needs --port 1..65535");
            return 2;
        }

        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Bind(new IPEndPoint(IPAddress.Parse(o.Str("--host", "127.0.0.1")), port));
        listener.Listen(2048);
        while (true)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync();
            }
            catch (SocketException e)
            {
                // Out of descriptors or a connection reset before accept: keep listening.
                Console.Error.WriteLine($"smtp-loadgen sink: accept: {e.Message}");
                await Task.Delay(10);
                continue;
            }

            socket.NoDelay = true;
            _ = Task.Run(() => ServeAsync(socket));
        }
    }

    enum Verb
    {
        Unknown,
        Ehlo,
        Data,
        Quit,
        Ok,
    }

    /// <summary>The command of a line by its first four octets, case-insensitive, without a string per line.</summary>
    static Verb VerbOf(ReadOnlySequence<byte> line)
    {
        if (line.Length < 4)
        {
            return Verb.Unknown;
        }

        Span<byte> v = stackalloc byte[4];
        line.Slice(0, 4).CopyTo(v);
        for (var i = 0; i < 4; i++)
        {
            v[i] |= 0x20; // ASCII letters to lower case; the verbs are letters only
        }

        return v switch
        {
            _ when v.SequenceEqual("ehlo"u8) => Verb.Ehlo,
            _ when v.SequenceEqual("data"u8) => Verb.Data,
            _ when v.SequenceEqual("quit"u8) => Verb.Quit,
            _ when v.SequenceEqual("helo"u8) || v.SequenceEqual("mail"u8) || v.SequenceEqual("rcpt"u8)
                || v.SequenceEqual("rset"u8) || v.SequenceEqual("noop"u8) => Verb.Ok,
            _ => Verb.Unknown,
        };
    }

    /// <summary>The line ".&lt;CR&gt;" (its LF already cut): the end of DATA (RFC 5321 section 4.1.1.4).</summary>
    static bool IsEndOfData(ReadOnlySequence<byte> line)
    {
        if (line.Length != 2)
        {
            return false;
        }

        Span<byte> two = stackalloc byte[2];
        line.CopyTo(two);
        return two[0] == (byte)'.' && two[1] == (byte)'\r';
    }

    static async Task ServeAsync(Socket socket)
    {
        using var _ = socket;
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        var reader = PipeReader.Create(stream);
        var replies = new ArrayBufferWriter<byte>(256);
        try
        {
            await stream.WriteAsync("220 sink.dotnet ESMTP\r\n"u8.ToArray());
            var inData = false;
            while (true)
            {
                // After AdvanceTo(consumed, examined) with everything examined, TryRead has nothing new: the replies go
                // out, then the loop waits for the client as the listener does.
                if (!reader.TryRead(out var result))
                {
                    if (replies.WrittenCount > 0)
                    {
                        await stream.WriteAsync(replies.WrittenMemory);
                        replies.ResetWrittenCount();
                    }

                    await stream.ReadAsync(Memory<byte>.Empty);
                    result = await reader.ReadAsync();
                }

                var buffer = result.Buffer;
                var quit = false;
                while (buffer.PositionOf((byte)'\n') is { } lf)
                {
                    var line = buffer.Slice(0, lf);
                    buffer = buffer.Slice(buffer.GetPosition(1, lf));
                    if (line.Length + 1 > MaxLine)
                    {
                        replies.Write("500 5.5.0 line too long\r\n"u8);
                        quit = true;
                        break;
                    }

                    if (inData)
                    {
                        if (IsEndOfData(line))
                        {
                            inData = false;
                            replies.Write("250 2.0.0 Ok\r\n"u8);
                        }

                        continue;
                    }

                    switch (VerbOf(line))
                    {
                        case Verb.Ehlo:
                            replies.Write("250-sink.dotnet\r\n250-PIPELINING\r\n250 8BITMIME\r\n"u8);
                            break;
                        case Verb.Data:
                            inData = true;
                            replies.Write("354 End data with <CR><LF>.<CR><LF>\r\n"u8);
                            break;
                        case Verb.Quit:
                            replies.Write("221 2.0.0 Bye\r\n"u8);
                            quit = true;
                            break;
                        case Verb.Ok:
                            replies.Write("250 2.0.0 Ok\r\n"u8);
                            break;
                        default:
                            replies.Write("502 5.5.1 Unknown command\r\n"u8);
                            break;
                    }

                    if (quit)
                    {
                        break;
                    }
                }

                if (quit || result.IsCompleted)
                {
                    if (replies.WrittenCount > 0)
                    {
                        await stream.WriteAsync(replies.WrittenMemory);
                    }

                    return;
                }

                if (buffer.Length > MaxLine)
                {
                    await stream.WriteAsync("500 5.5.0 line too long\r\n"u8.ToArray());
                    return;
                }

                reader.AdvanceTo(buffer.Start, buffer.End);
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            // The client went away mid-session: nothing to keep.
        }
        finally
        {
            await reader.CompleteAsync();
        }
    }
}
