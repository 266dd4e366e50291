using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Text;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Durability: concurrent clients send; the gateway is SIGKILLed at a random moment and restarted on the same
/// data directory. Every message that got "250" must reach the smarthost (at least once, intact).
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class CrashSafetyTests(ITestOutputHelper output)
{
    const int Clients = 8;
    const int MessagesToAcknowledge = 600;
    const int MessagesPerConnection = 25;

    [Fact]
    public async Task Every_acknowledged_message_arrives_after_SIGKILL_and_restart()
    {
        var harness = new GatewayHarness();
        try
        {
            await harness.InitializeAsync();
            await harness.RunAsync(output, () => RunAsync(harness));
        }
        finally
        {
            await harness.DisposeAsync();
        }
    }

    async Task RunAsync(GatewayHarness harness)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var seed = Environment.TickCount;
        var killAt = new Random(seed).Next(100, 401);
        output.WriteLine($"seed {seed}: {Clients} clients, SIGKILL after acknowledgement #{killAt}, stop at {MessagesToAcknowledge} acknowledgements");

        var sent = new ConcurrentDictionary<string, byte[]>(StringComparer.Ordinal);   // every id whose DATA we began
        var acknowledged = new ConcurrentDictionary<string, int>(StringComparer.Ordinal); // id -> gateway run that said 250
        var ackCount = 0;
        var refusals = new ConcurrentQueue<string>();
        var connectionErrors = 0;
        var run = 1;
        var killNow = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var clock = Stopwatch.StartNew();
        TimeSpan killedAt = default, restartedAt = default;
        var ackedBeforeKill = 0;

        async Task ClientAsync(int client)
        {
            var random = new Random(seed + client);
            // The relay listener: clients from the demo tenant's network need no AUTH there.
            var port = harness.RelayPort;
            while (Volatile.Read(ref ackCount) < MessagesToAcknowledge && !cts.IsCancellationRequested)
            {
                RawSmtpClient? smtp = null;
                try
                {
                    smtp = await RawSmtpClient.ConnectAsync("127.0.0.1", port, TimeSpan.FromSeconds(10), cts.Token);
                    if (smtp.Banner.Code != 220)
                    {
                        refusals.Enqueue($"banner {smtp.Banner}");
                        await Task.Delay(100, cts.Token);
                        continue;
                    }

                    var ehlo = await smtp.CommandAsync($"EHLO client{client}.functional.test", cts.Token);
                    Assert.Equal(250, ehlo.Code);
                    for (var i = 0; i < MessagesPerConnection && Volatile.Read(ref ackCount) < MessagesToAcknowledge; i++)
                    {
                        var id = $"c{client}-{Guid.NewGuid():N}";
                        var content = BuildMessage(id, random);
                        sent[id] = content;
                        var gatewayRun = Volatile.Read(ref run);
                        var reply = await smtp.SendMailAsync("load@tenant-a.example", ["sink@example.net"], content, cts.Token);
                        if (reply.Code != 250)
                        {
                            refusals.Enqueue($"{id}: {reply}");
                            break;
                        }

                        acknowledged[id] = gatewayRun;
                        if (Interlocked.Increment(ref ackCount) == killAt)
                        {
                            killNow.TrySetResult();
                        }
                    }

                    await smtp.CommandAsync("QUIT", cts.Token);
                }
                catch (Exception e) when (e is IOException or SocketException or TimeoutException or InvalidDataException or AuthenticationException
                                          && !cts.IsCancellationRequested)
                {
                    // The gateway died under us (or is not back yet): whatever was in flight has no 250; try again.
                    Interlocked.Increment(ref connectionErrors);
                    await Task.Delay(20, cts.Token);
                }
                finally
                {
                    smtp?.Dispose();
                }
            }
        }

        var killer = Task.Run(async () =>
        {
            await killNow.Task.WaitAsync(cts.Token);
            await harness.KillGatewayAsync();
            killedAt = clock.Elapsed;
            ackedBeforeKill = Volatile.Read(ref ackCount);
            Volatile.Write(ref run, 2);
            await harness.StartGatewayAsync(cts.Token);
            restartedAt = clock.Elapsed;
        }, cts.Token);

        await Task.WhenAll(Enumerable.Range(0, Clients).Select(c => Task.Run(() => ClientAsync(c), cts.Token)));
        var sendingTook = clock.Elapsed;
        await killer;

        output.WriteLine($"sent {sent.Count} (DATA begun), acknowledged {acknowledged.Count}; killed at {killedAt.TotalSeconds:F2}s " +
                         $"after {ackedBeforeKill} acknowledgements, serving again at {restartedAt.TotalSeconds:F2}s; " +
                         $"sending done at {sendingTook.TotalSeconds:F2}s; {connectionErrors} broken/refused connections");
        foreach (var refusal in refusals.Take(10))
        {
            output.WriteLine("refused: " + refusal);
        }

        Assert.True(acknowledged.Count >= MessagesToAcknowledge, $"only {acknowledged.Count} messages were acknowledged");
        Assert.Contains(acknowledged.Values, r => r == 2);

        // Wait until every acknowledged message has arrived (retries after the restart included).
        IReadOnlyList<SinkMessage> messages;
        try
        {
            messages = await harness.Sink.WaitAsync(
                ms => acknowledged.Keys.All(new HashSet<string>(ms.Select(m => m.Header("X-Test-Id") ?? ""), StringComparer.Ordinal).Contains),
                TimeSpan.FromSeconds(60), cts.Token);
        }
        catch (TimeoutException)
        {
            messages = harness.Sink.Messages();
        }

        output.WriteLine($"smtp-sink has {messages.Count} messages after {clock.Elapsed.TotalSeconds:F2}s");
        var byId = messages.GroupBy(m => m.Header("X-Test-Id") ?? "(none)").ToDictionary(g => g.Key, g => g.ToList(), StringComparer.Ordinal);

        var lost = acknowledged.Keys.Where(id => !byId.ContainsKey(id)).ToList();
        var duplicates = byId.Where(g => g.Value.Count > 1).ToList();
        var unacknowledgedDelivered = byId.Keys.Count(id => sent.ContainsKey(id) && !acknowledged.ContainsKey(id));
        var unknown = byId.Keys.Where(id => !sent.ContainsKey(id)).ToList();
        var corrupted = new List<string>();
        foreach (var message in messages)
        {
            var id = message.Header("X-Test-Id");
            if (id is null || !sent.TryGetValue(id, out var content))
            {
                continue;
            }

            if (message.SplitTopReceived() is not { } split || split.Body != SinkMessage.AsDumped(content))
            {
                corrupted.Add($"{id} ({message.Path})");
            }
        }

        output.WriteLine($"lost (acknowledged, never arrived): {lost.Count}");
        output.WriteLine($"duplicates (allowed): {duplicates.Count} message(s) arrived more than once, " +
                         $"{duplicates.Sum(g => g.Value.Count - 1)} extra copies");
        output.WriteLine($"arrived without a 250 (in flight at the kill; allowed): {unacknowledgedDelivered}");
        output.WriteLine($"altered in transit: {corrupted.Count}; unknown ids: {unknown.Count}");
        foreach (var id in lost.Take(20))
        {
            output.WriteLine($"LOST {id} (acknowledged by run {acknowledged[id]})");
        }

        Assert.True(lost.Count == 0, $"{lost.Count} acknowledged message(s) never reached the smarthost, e.g. {string.Join(", ", lost.Take(5))}");
        Assert.True(corrupted.Count == 0, $"{corrupted.Count} message(s) differ from what was sent, e.g. {string.Join(", ", corrupted.Take(5))}");
        Assert.True(unknown.Count == 0, $"messages nobody sent arrived: {string.Join(", ", unknown.Take(5))}");
    }

    /// <summary>A message of 0.3–3 KB whose X-Test-Id identifies it; every line ends with CRLF.</summary>
    static byte[] BuildMessage(string id, Random random)
    {
        var text = new StringBuilder()
            .Append("Message-ID: <").Append(id).Append("@crash.functional.test>\r\n")
            .Append("X-Test-Id: ").Append(id).Append("\r\n")
            .Append("From: <load@tenant-a.example>\r\n")
            .Append("To: <sink@example.net>\r\n")
            .Append("Subject: crash safety ").Append(id).Append("\r\n")
            .Append("\r\n");
        var lines = random.Next(3, 40);
        for (var i = 0; i < lines; i++)
        {
            var length = random.Next(0, 76);
            for (var j = 0; j < length; j++)
            {
                text.Append((char)('a' + random.Next(26)));
            }

            text.Append("\r\n");
        }

        text.Append("END ").Append(id).Append("\r\n");
        return Encoding.ASCII.GetBytes(text.ToString());
    }
}
