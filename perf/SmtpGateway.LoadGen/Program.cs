// smtp-loadgen: the SMTP load generator of perf/bench.sh.
//
//   smtp-loadgen run  --port P [options]   N concurrent connections, M messages per connection; records the time from
//                                          the end of DATA ("." sent) to the final reply, per message; prints JSON.
//   smtp-loadgen idle --port P [options]   opens N connections, reads the banner, says EHLO, holds them; prints JSON.
//   smtp-loadgen sink --port P              the smallest async .NET SMTP server that takes these messages (stores
//                                          nothing; runs until killed): what the runtime adds, for perf/floor.sh.
//   smtp-loadgen slow --port P [options]   opens N connections that trickle one byte every few seconds (slowloris), in
//                                          the command phase or inside DATA; records which ones the server closed, when,
//                                          and with which reply; prints JSON.
//
// A 4xx reply to MAIL, RCPT, DATA or the end of data is a refusal (a rate limit, a full spool), not a client error: it
// is counted by code under "refused" and the session goes on with its next message (after RSET); 421 ends the session
// and the worker reconnects. Only other failures count under "errors".
//
// The same client drives every server row of the benchmark (SmtpGateway and Postfix), so the comparison is fair.
// No pipelining: each command waits for its reply, as a plain submission client does.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace SmtpGateway.LoadGen;

static class Program
{
    static async Task<int> Main(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            Console.Out.Write(Usage);
            return 0;
        }

        Options o;
        try
        {
            o = Options.Parse(args.AsSpan(1));
            _ = o.Sources();
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"smtp-loadgen: {e.Message}");
            return 2;
        }

        return args[0] switch
        {
            "run" => await RunCommand.RunAsync(o),
            "idle" => await IdleCommand.RunAsync(o),
            "slow" => await SlowCommand.RunAsync(o),
            "sink" => await SinkCommand.RunAsync(o),
            _ => Fail($"unknown command '{args[0]}'"),
        };
    }

    static int Fail(string message)
    {
        Console.Error.WriteLine($"smtp-loadgen: {message}");
        Console.Error.Write(Usage);
        return 2;
    }

    const string Usage = """
        usage: smtp-loadgen run|idle|slow|sink [options]
          --host H            server address (127.0.0.1)
          --port P            server port (required)
          --connections N     concurrent connections (20)           [run]
          --per-conn M        messages per connection (1)           [run]
          --messages T        messages in all (20000)               [run]
          --size S            message size in bytes, e.g. 4096, 4k, 100k (4k)  [run]
          --from A            MAIL FROM and header From (sender@tenant-a.example)
          --to A              recipient (rcpt@example.net)
          --helo NAME         EHLO name (loadgen.bench)
          --starttls          STARTTLS after EHLO (certificate not verified), then EHLO again
          --auth-user U       AUTH PLAIN user (with --auth-pass)
          --auth-pass P       AUTH PLAIN password (a gateway token)
          --rate R            paced: start at most R messages/s in all (0 = as fast as possible)
          --max-seconds S     stop claiming new messages after S seconds (600)
          --progress FILE     rewrite FILE with "acked errors" every 200 ms
          --out FILE          write the JSON result to FILE as well as stdout
          --label TEXT        copied into the JSON
          --count N           connections to open (10000)           [idle]
          --hold S            seconds to hold them once all are open (20)  [idle]
          --timeline          [run] add "acks_per_second" (250 replies in each second of the run) to the JSON
          --source A          first client source address (127.0.0.1); a tenant matched by network sends from its own
          --source-count K    bind client sockets to A, A+1, .. A+K-1 round-robin (1)
          --ready FILE        [idle, slow] written once every connection is open (for the caller to sample memory)
          --count N           [slow] connections (1000)
          --interval S        [slow] seconds between two bytes of one connection (5)
          --duration S        [slow] seconds to keep trickling after all are open (60)
          --phase P           [slow] command: trickle "EHLO ..." itself; data: EHLO, MAIL, RCPT, DATA at once, then
                              trickle the message; mixed: every other connection (mixed)

        """;
}

sealed class Options
{
    readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);
    readonly HashSet<string> _flags = new(StringComparer.Ordinal);
    static readonly HashSet<string> FlagNames = ["--starttls", "--timeline"];

    public static Options Parse(ReadOnlySpan<string> args)
    {
        var o = new Options();
        for (var i = 0; i < args.Length; i++)
        {
            var a = args[i];
            if (!a.StartsWith("--", StringComparison.Ordinal))
            {
                throw new ArgumentException($"unexpected argument '{a}'");
            }

            if (FlagNames.Contains(a))
            {
                o._flags.Add(a);
                continue;
            }

            if (i + 1 >= args.Length)
            {
                throw new ArgumentException($"{a} needs a value");
            }

            o._values[a] = args[++i];
        }

        return o;
    }

    public bool Flag(string name) => _flags.Contains(name);

    /// <summary>--host (127.0.0.1) and --port (required); null, with a message, without a port.</summary>
    public IPEndPoint? Server()
    {
        var port = Int("--port", 0);
        if (port <= 0)
        {
            Console.Error.WriteLine("smtp-loadgen: --port is required");
            return null;
        }

        return new IPEndPoint(IPAddress.Parse(Str("--host", "127.0.0.1")), port);
    }

    /// <summary>The command's JSON result, on stdout and in --out FILE.</summary>
    public async Task EmitAsync(JsonObject result)
    {
        var json = result.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        Console.Out.WriteLine(json);
        if (Opt("--out") is { } outFile)
        {
            await File.WriteAllTextAsync(outFile, json + "\n").ConfigureAwait(false);
        }
    }

    public string Str(string name, string fallback) => _values.TryGetValue(name, out var v) ? v : fallback;

    public string? Opt(string name) => _values.TryGetValue(name, out var v) ? v : null;

    public int Int(string name, int fallback) => _values.TryGetValue(name, out var v) ? checked((int)Size(v)) : fallback;

    public double Double(string name, double fallback) => _values.TryGetValue(name, out var v) ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;

    /// <summary>"4096", "4k", "100k", "1m" (binary multiples).</summary>
    public static long Size(string v)
    {
        v = v.Trim().ToLowerInvariant();
        long mult = 1;
        if (v.EndsWith('k'))
        {
            mult = 1024;
            v = v[..^1];
        }
        else if (v.EndsWith('m'))
        {
            mult = 1024 * 1024;
            v = v[..^1];
        }

        return long.Parse(v, CultureInfo.InvariantCulture) * mult;
    }

    /// <summary>--source (default 127.0.0.1) and the next --source-count - 1 IPv4 addresses.</summary>
    public IPAddress[] Sources()
    {
        var k = Math.Max(1, Int("--source-count", 1));
        var first = IPAddress.Parse(Str("--source", "127.0.0.1"));
        if (first.AddressFamily != AddressFamily.InterNetwork)
        {
            throw new ArgumentException("--source must be an IPv4 address");
        }

        var b = first.GetAddressBytes();
        var start = (uint)(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);
        return [.. Enumerable.Range(0, k).Select(i =>
        {
            var a = start + (uint)i;
            return new IPAddress(new[] { (byte)(a >> 24), (byte)(a >> 16), (byte)(a >> 8), (byte)a });
        })];
    }
}

/// <summary>One SMTP client connection with a small line reader. Not thread-safe: one worker owns it.</summary>
sealed class SmtpConnection : IDisposable
{
    readonly Socket _socket;
    Stream _stream;
    readonly byte[] _buffer = new byte[16 * 1024];
    int _start;
    int _end;

    SmtpConnection(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    public static async Task<SmtpConnection> ConnectAsync(IPEndPoint server, IPAddress? source, CancellationToken ct)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            if (source is not null && !source.Equals(IPAddress.Loopback))
            {
                // IP_BIND_ADDRESS_NO_PORT (24): pick the ephemeral port at connect time, per destination, so that many
                // source addresses each get the whole port range.
                socket.SetRawSocketOption(0, 24, BitConverter.GetBytes(1));
                socket.Bind(new IPEndPoint(source, 0));
            }

            await socket.ConnectAsync(server, ct).ConfigureAwait(false);
            return new SmtpConnection(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Connects and reads the banner (at most 30 s); a banner other than 220 is a <see cref="ProtocolError"/>.</summary>
    public static async Task<SmtpConnection> OpenAsync(IPEndPoint server, IPAddress? source, CancellationToken ct)
    {
        var c = await ConnectAsync(server, source, ct).ConfigureAwait(false);
        try
        {
            using var greet = CancellationTokenSource.CreateLinkedTokenSource(ct);
            greet.CancelAfter(TimeSpan.FromSeconds(30));
            var r = await c.ReadReplyAsync(greet.Token).ConfigureAwait(false);
            return r.Code == 220 ? c : throw new ProtocolError($"banner {RunCommand.ReplyKind(r.Text)}");
        }
        catch
        {
            c.Dispose();
            throw;
        }
    }

    public async Task StartTlsAsync(string host, CancellationToken ct)
    {
        if (_start != _end)
        {
            throw new IOException("data after the STARTTLS reply");
        }

        var ssl = new SslStream(_stream, leaveInnerStreamOpen: false);
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = host,
            RemoteCertificateValidationCallback = static (_, _, _, _) => true,
        }, ct).ConfigureAwait(false);
        _stream = ssl;
    }

    public ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken ct) => _stream.WriteAsync(data, ct);

    public async Task<Reply> CommandAsync(string line, CancellationToken ct)
    {
        var bytes = Encoding.ASCII.GetBytes(line + "\r\n");
        await _stream.WriteAsync(bytes, ct).ConfigureAwait(false);
        return await ReadReplyAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Reads a whole (possibly multi-line) reply; returns its code and last line.</summary>
    public async Task<Reply> ReadReplyAsync(CancellationToken ct)
    {
        while (true)
        {
            var line = await ReadLineAsync(ct).ConfigureAwait(false);
            if (line.Length < 3 || !int.TryParse(line.AsSpan(0, 3), NumberStyles.None, CultureInfo.InvariantCulture, out var code))
            {
                throw new IOException($"malformed reply line '{Trim(line)}'");
            }

            if (line.Length == 3 || line[3] == ' ')
            {
                return new Reply(code, line);
            }
        }
    }

    async Task<string> ReadLineAsync(CancellationToken ct)
    {
        while (true)
        {
            var lf = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (lf >= 0)
            {
                var len = lf - _start;
                if (len > 0 && _buffer[lf - 1] == '\r')
                {
                    len--;
                }

                var line = Encoding.ASCII.GetString(_buffer, _start, len);
                _start = lf + 1;
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
                throw new IOException("reply line too long");
            }

            var n = await _stream.ReadAsync(_buffer.AsMemory(_end), ct).ConfigureAwait(false);
            if (n == 0)
            {
                throw new EndOfStreamException("server closed the connection");
            }

            _end += n;
        }
    }

    static string Trim(string s) => s.Length > 80 ? s[..80] : s;

    public void Dispose() => _stream.Dispose();
}

readonly record struct Reply(int Code, string Text)
{
    public bool Positive => Code is >= 200 and < 400;
}

/// <summary>Error tally: kind → count, so a run with errors says which.</summary>
sealed class Errors
{
    readonly ConcurrentDictionary<string, int> _kinds = new(StringComparer.Ordinal);
    int _total;

    public int Total => Volatile.Read(ref _total);

    public void Add(string kind)
    {
        Interlocked.Increment(ref _total);
        if (kind.Length > 120)
        {
            kind = kind[..120];
        }

        // Bound the cardinality: reply texts carry queue ids and such.
        if (_kinds.Count < 20 || _kinds.ContainsKey(kind))
        {
            _kinds.AddOrUpdate(kind, 1, (_, c) => c + 1);
        }
        else
        {
            _kinds.AddOrUpdate("(other)", 1, (_, c) => c + 1);
        }
    }

    public static string Describe(Exception e) => e switch
    {
        SocketException s => $"socket: {s.SocketErrorCode}",
        EndOfStreamException => "connection closed by server",
        IOException io when io.InnerException is SocketException s => $"socket: {s.SocketErrorCode}",
        IOException io => $"io: {io.Message}",
        System.Security.Authentication.AuthenticationException a => $"tls: {a.Message}",
        OperationCanceledException => "timeout",
        _ => $"{e.GetType().Name}: {e.Message}",
    };

    public JsonObject ToJson()
    {
        var o = new JsonObject();
        foreach (var (k, v) in _kinds.OrderByDescending(p => p.Value))
        {
            o[k] = v;
        }

        return o;
    }
}

static class RunCommand
{
    public static async Task<int> RunAsync(Options o)
    {
        if (o.Server() is not { } server)
        {
            return 2;
        }

        var connections = o.Int("--connections", 20);
        var perConn = Math.Max(1, o.Int("--per-conn", 1));
        var total = o.Int("--messages", 20000);
        var size = (int)Options.Size(o.Str("--size", "4k"));
        var from = o.Str("--from", "sender@tenant-a.example");
        var to = o.Str("--to", "rcpt@example.net");
        var helo = o.Str("--helo", "loadgen.bench");
        var startTls = o.Flag("--starttls");
        var authUser = o.Opt("--auth-user");
        var authPass = o.Opt("--auth-pass");
        var rate = o.Double("--rate", 0);
        var maxSeconds = o.Double("--max-seconds", 600);
        var progressFile = o.Opt("--progress");
        var sources = o.Sources();
        var body = MessageBody.Build(size, from, to);
        var runId = Guid.NewGuid().ToString("N")[..8];

        var claimed = 0;
        var acked = 0;
        var sessionsOpened = 0;
        var errors = new Errors();
        var refused = new Errors();
        var refusedAt = new Errors();
        var connectFailures = new Errors();
        var timeline = o.Flag("--timeline") ? new ConcurrentDictionary<int, int>() : null;
        var latencies = new List<long>[connections];
        var deadline = Stopwatch.StartNew();
        var limit = TimeSpan.FromSeconds(maxSeconds);
        using var stop = new CancellationTokenSource(limit + TimeSpan.FromSeconds(60));
        var startedUnix = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;
        var clock = Stopwatch.StartNew();
        long lastAckTicks = 0;

        using var progressCts = new CancellationTokenSource();
        var progress = progressFile is null ? Task.CompletedTask : Task.Run(async () =>
        {
            while (!progressCts.IsCancellationRequested)
            {
                await File.WriteAllTextAsync(progressFile + ".tmp", $"{Volatile.Read(ref acked)} {errors.Total}\n").ConfigureAwait(false);
                File.Move(progressFile + ".tmp", progressFile, overwrite: true);
                try
                {
                    await Task.Delay(200, progressCts.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                }
            }
        });

        void Refuse(Reply r, string step)
        {
            refused.Add(ReplyKind(r.Text));
            refusedAt.Add(step);
        }

        async Task Worker(int w)
        {
            var lat = latencies[w] = new List<long>(total / connections + 16);
            var buffer = new byte[body.Length + 512];
            var ct = stop.Token;
            var attempt = 0;
            while (Volatile.Read(ref claimed) < total && deadline.Elapsed < limit)
            {
                SmtpConnection conn;
                try
                {
                    // Connect and greet before claiming a message: a server that is down (kill test) costs retries,
                    // not messages.
                    conn = await SmtpConnection.ConnectAsync(server, sources[(w + attempt++) % sources.Length], ct).ConfigureAwait(false);
                }
                catch (Exception e) when (e is SocketException or IOException)
                {
                    connectFailures.Add(Errors.Describe(e));
                    await Task.Delay(50, ct).ConfigureAwait(false);
                    continue;
                }

                using (conn)
                {
                    try
                    {
                        var r = await conn.ReadReplyAsync(ct).ConfigureAwait(false);
                        if (r.Code != 220)
                        {
                            connectFailures.Add($"banner {r.Text}");
                            await Task.Delay(50, ct).ConfigureAwait(false);
                            continue;
                        }

                        r = await conn.CommandAsync($"EHLO {helo}", ct).ConfigureAwait(false);
                        Expect(r, 250, "EHLO");
                        if (startTls)
                        {
                            Expect(await conn.CommandAsync("STARTTLS", ct).ConfigureAwait(false), 220, "STARTTLS");
                            await conn.StartTlsAsync(server.Address.ToString(), ct).ConfigureAwait(false);
                            Expect(await conn.CommandAsync($"EHLO {helo}", ct).ConfigureAwait(false), 250, "EHLO after TLS");
                        }

                        if (authUser is not null)
                        {
                            var plain = Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0{authUser}\0{authPass}"));
                            Expect(await conn.CommandAsync($"AUTH PLAIN {plain}", ct).ConfigureAwait(false), 235, "AUTH");
                        }
                    }
                    catch (ProtocolError e)
                    {
                        // The server refused EHLO, STARTTLS or AUTH: that costs a message (else a refusing server
                        // would keep the run spinning until --max-seconds).
                        Interlocked.Increment(ref claimed);
                        errors.Add(e.Message);
                        continue;
                    }
                    catch (Exception e) when (e is IOException or SocketException or System.Security.Authentication.AuthenticationException)
                    {
                        connectFailures.Add(Errors.Describe(e));
                        await Task.Delay(50, ct).ConfigureAwait(false);
                        continue;
                    }

                    Interlocked.Increment(ref sessionsOpened);
                    var closing = false;
                    var needRset = false;
                    bool Accepted(Reply r, int code, string step, bool rset)
                    {
                        if (r.Code == code)
                        {
                            return true;
                        }

                        if (r.Code is < 400 or >= 500)
                        {
                            throw new ProtocolError($"{step}: {r.Text}");
                        }

                        Refuse(r, step);
                        closing = r.Code == 421;
                        needRset = rset;
                        return false;
                    }

                    try
                    {
                        for (var j = 0; j < perConn; j++)
                        {
                            if (deadline.Elapsed >= limit)
                            {
                                break;
                            }

                            var i = Interlocked.Increment(ref claimed) - 1;
                            if (i >= total)
                            {
                                break;
                            }

                            if (rate > 0)
                            {
                                var due = TimeSpan.FromSeconds(i / rate) - clock.Elapsed;
                                if (due > TimeSpan.Zero)
                                {
                                    await Task.Delay(due, ct).ConfigureAwait(false);
                                }
                            }

                            // A 4xx is a refusal (rate limit, full spool): counted, then the next message (RSET after
                            // RCPT or DATA, RFC 5321 section 4.1.1.5); 421 means the server is closing (section 3.8).
                            if (!Accepted(await conn.CommandAsync($"MAIL FROM:<{from}>", ct).ConfigureAwait(false), 250, "MAIL", rset: false)
                                || !Accepted(await conn.CommandAsync($"RCPT TO:<{to}>", ct).ConfigureAwait(false), 250, "RCPT", rset: true)
                                || !Accepted(await conn.CommandAsync("DATA", ct).ConfigureAwait(false), 354, "DATA", rset: true))
                            {
                                if (closing)
                                {
                                    break;
                                }

                                if (needRset)
                                {
                                    await conn.CommandAsync("RSET", ct).ConfigureAwait(false);
                                }

                                continue;
                            }

                            var n = MessageBody.Compose(buffer, body, i, runId);
                            await conn.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                            var t0 = Stopwatch.GetTimestamp();
                            var final = await conn.ReadReplyAsync(ct).ConfigureAwait(false);
                            var t1 = Stopwatch.GetTimestamp();
                            if (final.Code == 250)
                            {
                                Interlocked.Increment(ref acked);
                                lat.Add(t1 - t0);
                                Volatile.Write(ref lastAckTicks, clock.ElapsedTicks);
                                if (timeline is not null)
                                {
                                    timeline.AddOrUpdate((int)clock.Elapsed.TotalSeconds, 1, (_, c) => c + 1);
                                }
                            }
                            else if (final.Code is >= 400 and < 500)
                            {
                                Refuse(final, "end of data");
                                if (final.Code == 421)
                                {
                                    closing = true;
                                    break;
                                }
                            }
                            else
                            {
                                errors.Add($"end of data: {Redact(final.Text)}");
                            }
                        }

                        if (closing)
                        {
                            continue;
                        }

                        await conn.CommandAsync("QUIT", ct).ConfigureAwait(false);
                    }
                    catch (ProtocolError e)
                    {
                        errors.Add(e.Message);
                    }
                    catch (Exception e) when (e is IOException or SocketException)
                    {
                        // A message in flight when the server went away is lost (not acknowledged): counted here.
                        errors.Add(Errors.Describe(e));
                    }
                }
            }
        }

        var workers = new Task[connections];
        for (var w = 0; w < connections; w++)
        {
            var id = w;
            workers[w] = Task.Run(() => Worker(id));
        }

        try
        {
            await Task.WhenAll(workers).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            errors.Add("run cancelled (max-seconds + 60 s)");
        }

        var elapsed = clock.Elapsed.TotalSeconds;
        var lastAck = Stopwatch.GetElapsedTime(0, Volatile.Read(ref lastAckTicks) == 0 ? clock.ElapsedTicks : Volatile.Read(ref lastAckTicks)).TotalSeconds;
        progressCts.Cancel();
        await progress.ConfigureAwait(false);
        if (progressFile is not null)
        {
            await File.WriteAllTextAsync(progressFile, $"{acked} {errors.Total}\n").ConfigureAwait(false);
        }

        var all = latencies.Where(l => l is not null).SelectMany(l => l).ToArray();
        Array.Sort(all);
        double Ms(long ticks) => Math.Round(ticks * 1000.0 / Stopwatch.Frequency, 3);
        double Pct(double p) => all.Length == 0 ? 0 : Ms(all[Math.Min(all.Length - 1, (int)Math.Ceiling(p / 100.0 * all.Length) - 1)]);

        var result = new JsonObject
        {
            ["client"] = "smtp-loadgen",
            ["label"] = o.Opt("--label"),
            ["server"] = server.ToString(),
            ["mode"] = authUser is not null ? "auth" : startTls ? "starttls" : "plain",
            ["connections"] = connections,
            ["per_conn"] = perConn,
            ["size"] = size,
            ["wire_bytes"] = body.Length + 64,
            ["rate_limit"] = rate,
            ["messages"] = total,
            ["attempted"] = Math.Min(claimed, total),
            ["count"] = acked,
            ["errors"] = errors.Total,
            ["error_kinds"] = errors.ToJson(),
            ["refused"] = refused.Total,
            ["refused_by_code"] = refused.ToJson(),
            ["refused_at"] = refusedAt.ToJson(),
            ["sessions"] = sessionsOpened,
            ["connect_failures"] = connectFailures.Total,
            ["connect_failure_kinds"] = connectFailures.ToJson(),
            ["started_unix"] = startedUnix,
            ["client_cpu_s"] = Math.Round(Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds, 3),
            ["elapsed_s"] = Math.Round(elapsed, 3),
            ["last_ack_s"] = Math.Round(lastAck, 3),
            ["throughput"] = lastAck > 0 ? Math.Round(acked / lastAck, 1) : 0,
            ["latency_ms"] = new JsonObject
            {
                ["p50"] = Pct(50),
                ["p90"] = Pct(90),
                ["p99"] = Pct(99),
                ["max"] = all.Length == 0 ? 0 : Ms(all[^1]),
                ["mean"] = all.Length == 0 ? 0 : Math.Round(all.Average() * 1000.0 / Stopwatch.Frequency, 3),
            },
        };
        if (timeline is not null)
        {
            var seconds = timeline.IsEmpty ? 0 : timeline.Keys.Max() + 1;
            result["acks_per_second"] = new JsonArray([.. Enumerable.Range(0, seconds).Select(s => (JsonNode?)JsonValue.Create(timeline.GetValueOrDefault(s)))]);
        }

        await o.EmitAsync(result).ConfigureAwait(false);

        // A run whose every message was refused still ran: only "nothing attempted" or "nothing answered" is a failure.
        return acked > 0 || refused.Total > 0 ? 0 : 1;
    }

    static string Redact(string reply)
    {
        // "250 2.0.0 Ok: queued as ABC" → without the id, so that kinds group.
        var i = reply.IndexOf("queued as", StringComparison.OrdinalIgnoreCase);
        return i >= 0 ? reply[..(i + 9)] : reply;
    }

    /// <summary>"450 4.7.1 ..." → "450 4.7.1": the code and the RFC 3463 enhanced status, without the free text.</summary>
    public static string ReplyKind(string reply)
    {
        var parts = reply.Split(' ', 3, StringSplitOptions.RemoveEmptyEntries);
        return parts.Length >= 2 && parts[1].Length >= 5 && char.IsAsciiDigit(parts[1][0]) && parts[1][1] == '.'
            ? $"{parts[0][..Math.Min(3, parts[0].Length)]} {parts[1]}"
            : reply.Length >= 3 ? reply[..3] : reply;
    }

    static void Expect(Reply r, int code, string step)
    {
        if (r.Code != code)
        {
            throw new ProtocolError($"{step}: {r.Text}");
        }
    }
}

sealed class ProtocolError(string message) : Exception(message);

/// <summary>
/// The message: a few headers (From equal to MAIL FROM, so sender binding passes) and a body of 78-character lines,
/// padded to the requested size. Each message gets its own Message-ID and Subject; the body is shared.
/// </summary>
static class MessageBody
{
    public static byte[] Build(int size, string from, string to)
    {
        var head = $"From: <{from}>\r\nTo: <{to}>\r\nDate: {DateTimeOffset.UtcNow.ToString("ddd, dd MMM yyyy HH:mm:ss +0000", CultureInfo.InvariantCulture)}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n";
        var sb = new StringBuilder();
        var line = 0;
        // Leave ~100 bytes for the per-message Subject and Message-ID headers.
        var target = Math.Max(0, size - head.Length - 100);
        while (sb.Length < target)
        {
            var text = $"{line++:D6} The quick brown fox jumps over the lazy dog; benchmark body text, line padding.";
            var take = Math.Min(text.Length, Math.Max(1, target - sb.Length - 2));
            sb.Append(text.AsSpan(0, take)).Append("\r\n");
        }

        return Encoding.ASCII.GetBytes(head + "\u0000" + sb + ".\r\n");
    }

    /// <summary>Writes headers with this message's ids, the blank line and the shared body (ending in ".\r\n").</summary>
    public static int Compose(byte[] buffer, byte[] template, int index, string runId)
    {
        var split = Array.IndexOf(template, (byte)0);
        template.AsSpan(0, split).CopyTo(buffer);
        var n = split;
        n += Encoding.ASCII.GetBytes($"Subject: bench {runId} {index}\r\nMessage-ID: <{index}.{runId}@loadgen.bench>\r\n\r\n", buffer.AsSpan(n));
        template.AsSpan(split + 1).CopyTo(buffer.AsSpan(n));
        return n + template.Length - split - 1;
    }
}

static class IdleCommand
{
    public static async Task<int> RunAsync(Options o)
    {
        if (o.Server() is not { } server)
        {
            return 2;
        }

        var count = o.Int("--count", 10000);
        var hold = o.Double("--hold", 20);
        var helo = o.Str("--helo", "loadgen.bench");
        var sources = o.Sources();
        var open = new ConcurrentBag<SmtpConnection>();
        var failures = new Errors();
        var next = -1;
        var clock = Stopwatch.StartNew();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(hold + 300));

        async Task Opener()
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < count)
            {
                SmtpConnection? c = null;
                try
                {
                    c = await SmtpConnection.OpenAsync(server, sources[i % sources.Length], cts.Token).ConfigureAwait(false);
                    using var greet = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
                    greet.CancelAfter(TimeSpan.FromSeconds(30));
                    var r = await c.CommandAsync($"EHLO {helo}", greet.Token).ConfigureAwait(false);
                    if (r.Code != 250)
                    {
                        throw new ProtocolError($"EHLO {r.Text}");
                    }

                    open.Add(c);
                    c = null;
                }
                catch (Exception e)
                {
                    failures.Add(e is ProtocolError ? e.Message : Errors.Describe(e));
                }
                finally
                {
                    c?.Dispose();
                }
            }
        }

        await Task.WhenAll(Enumerable.Range(0, 128).Select(_ => Task.Run(Opener))).ConfigureAwait(false);
        var openSeconds = clock.Elapsed.TotalSeconds;
        if (o.Opt("--ready") is { } ready)
        {
            await File.WriteAllTextAsync(ready, $"{open.Count}\n").ConfigureAwait(false);
        }

        await Task.Delay(TimeSpan.FromSeconds(hold)).ConfigureAwait(false);

        // Still open after the hold? One NOOP each, in parallel batches.
        var alive = 0;
        var conns = open.ToArray();
        await Parallel.ForEachAsync(conns, new ParallelOptions { MaxDegreeOfParallelism = 128 }, async (c, ct) =>
        {
            try
            {
                using var t = CancellationTokenSource.CreateLinkedTokenSource(ct);
                t.CancelAfter(TimeSpan.FromSeconds(30));
                if ((await c.CommandAsync("NOOP", t.Token).ConfigureAwait(false)).Code == 250)
                {
                    Interlocked.Increment(ref alive);
                }
            }
            catch (Exception)
            {
            }
            finally
            {
                c.Dispose();
            }
        }).ConfigureAwait(false);

        var result = new JsonObject
        {
            ["client"] = "smtp-loadgen idle",
            ["server"] = server.ToString(),
            ["requested"] = count,
            ["opened"] = conns.Length,
            ["alive_after_hold"] = alive,
            ["failed"] = failures.Total,
            ["failure_kinds"] = failures.ToJson(),
            ["open_seconds"] = Math.Round(openSeconds, 2),
            ["hold_seconds"] = hold,
            ["source_addresses"] = sources.Length,
        };
        await o.EmitAsync(result).ConfigureAwait(false);

        return conns.Length > 0 ? 0 : 1;
    }
}
