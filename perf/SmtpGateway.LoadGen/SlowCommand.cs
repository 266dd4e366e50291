// smtp-loadgen slow: slow clients ("slowloris") for perf/bench.sh --slow-clients.
//
// Each connection reads the banner, then sends one byte every --interval seconds, either of a command line ("EHLO ..."
// then NOOPs: the command phase) or, after EHLO, MAIL, RCPT and DATA sent at normal speed, of a message that never ends
// (the data phase). A reader per connection notes every reply line; when the server closes the connection, the last
// line it sent (the closing reply, e.g. "421 4.4.2") and the time since the banner are recorded.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;

namespace SmtpGateway.LoadGen;

static class SlowCommand
{
    enum Phase
    {
        Command,
        Data,
    }

    sealed class Session(int index, Phase phase)
    {
        public int Index { get; } = index;

        public Phase Phase { get; } = phase;

        public long OpenedTicks { get; set; }

        public double ClosedAfterSeconds { get; set; } = -1;

        public string? ClosingReply { get; set; }

        public long BytesSent;
    }

    public static async Task<int> RunAsync(Options o)
    {
        if (o.Server() is not { } server)
        {
            return 2;
        }

        var count = o.Int("--count", 1000);
        var interval = TimeSpan.FromSeconds(o.Double("--interval", 5));
        var duration = TimeSpan.FromSeconds(o.Double("--duration", 60));
        var phaseName = o.Str("--phase", "mixed");
        if (phaseName is not ("command" or "data" or "mixed"))
        {
            Console.Error.WriteLine("smtp-loadgen: --phase must be command, data or mixed");
            return 2;
        }

        var helo = o.Str("--helo", "slow.bench");
        var from = o.Str("--from", "slow@slow.bench");
        var to = o.Str("--to", "rcpt@tenant-a.example");
        var sources = o.Sources();
        var sessions = new Session[count];
        for (var i = 0; i < count; i++)
        {
            sessions[i] = new Session(i, phaseName switch
            {
                "command" => Phase.Command,
                "data" => Phase.Data,
                _ => i % 2 == 0 ? Phase.Command : Phase.Data,
            });
        }

        var openFailures = new Errors();
        var clock = Stopwatch.StartNew();
        using var stop = new CancellationTokenSource();
        var running = new ConcurrentBag<Task>();
        var next = -1;
        var opened = 0;

        // Command phase: a command line that never completes quickly; once it does, NOOPs (each one byte at a time).
        var commandBytes = Encoding.ASCII.GetBytes($"EHLO {helo}\r\n");
        var noopBytes = "NOOP\r\n"u8.ToArray();
        // Data phase: header lines of 76 octets (well under the 1000-octet line limit), never the final ".".
        var dataLine = Encoding.ASCII.GetBytes("X-Slow: " + new string('s', 66) + "\r\n");

        async Task Opener()
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < count)
            {
                var s = sessions[i];
                SmtpConnection? c = null;
                try
                {
                    c = await SmtpConnection.OpenAsync(server, sources[i % sources.Length], stop.Token).ConfigureAwait(false);
                    if (s.Phase == Phase.Data)
                    {
                        using var greet = CancellationTokenSource.CreateLinkedTokenSource(stop.Token);
                        greet.CancelAfter(TimeSpan.FromSeconds(30));
                        await Expect(c, $"EHLO {helo}", 250, greet.Token).ConfigureAwait(false);
                        await Expect(c, $"MAIL FROM:<{from}>", 250, greet.Token).ConfigureAwait(false);
                        await Expect(c, $"RCPT TO:<{to}>", 250, greet.Token).ConfigureAwait(false);
                        await Expect(c, "DATA", 354, greet.Token).ConfigureAwait(false);
                    }

                    s.OpenedTicks = clock.ElapsedTicks;
                    Interlocked.Increment(ref opened);
                    var conn = c;
                    c = null;
                    running.Add(Task.Run(() => TrickleAsync(conn, s)));
                }
                catch (Exception e)
                {
                    openFailures.Add(e is ProtocolError ? e.Message : Errors.Describe(e));
                }
                finally
                {
                    c?.Dispose();
                }
            }
        }

        async Task TrickleAsync(SmtpConnection c, Session s)
        {
            using (c)
            {
                // The reader ends when the server closes (or resets) the connection, or when the run stops.
                var reader = Task.Run(async () =>
                {
                    string? last = null;
                    try
                    {
                        while (true)
                        {
                            var r = await c.ReadReplyAsync(stop.Token).ConfigureAwait(false);
                            last = r.Text;
                        }
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                    catch (Exception e)
                    {
                        s.ClosedAfterSeconds = Stopwatch.GetElapsedTime(0, clock.ElapsedTicks - s.OpenedTicks).TotalSeconds;
                        s.ClosingReply = last is null ? $"(no reply: {Errors.Describe(e)})" : RunCommand.ReplyKind(last);
                    }
                });

                // Spread the first bytes over one interval, so that 1,000 sessions do not write in lockstep.
                var delay = TimeSpan.FromTicks((long)(interval.Ticks * Random.Shared.NextDouble()));
                var payload = s.Phase == Phase.Command ? commandBytes : dataLine;
                var pos = 0;
                try
                {
                    while (!reader.IsCompleted)
                    {
                        var wake = await Task.WhenAny(reader, Task.Delay(delay, stop.Token)).ConfigureAwait(false);
                        if (wake == reader || stop.IsCancellationRequested)
                        {
                            break;
                        }

                        delay = interval;
                        await c.WriteAsync(payload.AsMemory(pos, 1), stop.Token).ConfigureAwait(false);
                        Interlocked.Increment(ref s.BytesSent);
                        if (++pos == payload.Length)
                        {
                            pos = 0;
                            if (s.Phase == Phase.Command)
                            {
                                payload = noopBytes;
                            }
                        }
                    }
                }
                catch (Exception e) when (e is OperationCanceledException or IOException or System.Net.Sockets.SocketException)
                {
                    // A write that fails: the server has gone; the reader records how.
                }

                await Task.WhenAny(reader, Task.Delay(TimeSpan.FromSeconds(2))).ConfigureAwait(false);
            }
        }

        await Task.WhenAll(Enumerable.Range(0, 64).Select(_ => Task.Run(Opener))).ConfigureAwait(false);
        var openSeconds = clock.Elapsed.TotalSeconds;
        if (o.Opt("--ready") is { } ready)
        {
            await File.WriteAllTextAsync(ready, $"{opened}\n").ConfigureAwait(false);
        }

        await Task.Delay(duration).ConfigureAwait(false);
        // Snapshot before stopping: what the server closed within the run, not what our own close provokes.
        var closed = sessions.Where(s => s.OpenedTicks != 0 && s.ClosedAfterSeconds >= 0).ToArray();
        var stillOpen = sessions.Count(s => s.OpenedTicks != 0 && s.ClosedAfterSeconds < 0);
        await stop.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(running).ConfigureAwait(false);

        var after = closed.Select(s => s.ClosedAfterSeconds).Order().ToArray();
        double Pct(double p) => after.Length == 0 ? 0 : Math.Round(after[Math.Min(after.Length - 1, (int)Math.Ceiling(p / 100.0 * after.Length) - 1)], 1);
        JsonObject ByPhase(Phase p)
        {
            var all = sessions.Where(s => s.Phase == p).ToArray();
            var shut = closed.Where(s => s.Phase == p).ToArray();
            var replies = new JsonObject();
            foreach (var g in shut.GroupBy(s => s.ClosingReply ?? "?").OrderByDescending(g => g.Count()))
            {
                replies[g.Key] = g.Count();
            }

            return new JsonObject
            {
                ["requested"] = all.Length,
                ["opened"] = all.Count(s => s.OpenedTicks != 0),
                ["closed_by_server"] = shut.Length,
                ["closing_replies"] = replies,
                ["closed_after_s_max"] = shut.Length == 0 ? null : Math.Round(shut.Max(s => s.ClosedAfterSeconds), 1),
            };
        }

        var closingReplies = new JsonObject();
        foreach (var g in closed.GroupBy(s => s.ClosingReply ?? "?").OrderByDescending(g => g.Count()))
        {
            closingReplies[g.Key] = g.Count();
        }

        var result = new JsonObject
        {
            ["client"] = "smtp-loadgen slow",
            ["server"] = server.ToString(),
            ["requested"] = count,
            ["opened"] = opened,
            ["open_failures"] = openFailures.Total,
            ["open_failure_kinds"] = openFailures.ToJson(),
            ["open_seconds"] = Math.Round(openSeconds, 2),
            ["interval_s"] = interval.TotalSeconds,
            ["duration_s"] = duration.TotalSeconds,
            ["source_addresses"] = sources.Length,
            ["closed_by_server"] = closed.Length,
            ["closing_replies"] = closingReplies,
            ["closed_after_s"] = new JsonObject
            {
                ["min"] = after.Length == 0 ? null : Math.Round(after[0], 1),
                ["p50"] = Pct(50),
                ["p90"] = Pct(90),
                ["max"] = after.Length == 0 ? null : Math.Round(after[^1], 1),
            },
            ["still_open_at_end"] = stillOpen,
            ["bytes_sent"] = sessions.Sum(s => Interlocked.Read(ref s.BytesSent)),
            ["by_phase"] = new JsonObject
            {
                ["command"] = ByPhase(Phase.Command),
                ["data"] = ByPhase(Phase.Data),
            },
        };
        await o.EmitAsync(result).ConfigureAwait(false);

        return opened > 0 ? 0 : 1;
    }

    static async Task Expect(SmtpConnection c, string command, int code, CancellationToken ct)
    {
        var r = await c.CommandAsync(command, ct).ConfigureAwait(false);
        if (r.Code != code)
        {
            throw new ProtocolError($"{command.Split(' ')[0]}: {RunCommand.ReplyKind(r.Text)}");
        }
    }
}
