using System.Security.Cryptography;
using System.Text;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 10: DATA streams to disk past a small in-memory threshold. 48 sessions on the relay port each send a 20 MiB
/// message at once (960 MiB in flight; the gateway used to peak at 1.6 GB RSS): the gateway's peak RSS stays under
/// 400 MB and every message reaches the sink byte for byte (hash compared).
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class LargeMessageTests(GatewayHarness harness, ITestOutputHelper output) : IClassFixture<GatewayHarness>
{
    const int Sessions = 48;
    const int MessageSize = 20 * 1024 * 1024;
    const long PeakRssLimit = 400L * 1024 * 1024;
    const string TenantBNetwork = "127.0.0.2";

    [Fact]
    public Task Forty_eight_parallel_20_MiB_messages_stay_under_400_MB_and_arrive_byte_exact() => harness.RunAsync(output, async () =>
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(8));
        var marker = Guid.NewGuid().ToString("N");
        var pid = harness.GatewayPid ?? throw new InvalidOperationException("gateway not running");
        var before = PeakRss(pid);
        output.WriteLine($"gateway peak RSS before: {before / 1048576} MiB");

        var expected = new Dictionary<string, (string Hash, int Length)>(StringComparer.Ordinal);
        var sends = new List<Task<SmtpReply>>();
        for (var i = 0; i < Sessions; i++)
        {
            var recipient = $"big-{marker}-{i}@example.net";
            var content = BigMessage(marker, i, recipient);
            var dumped = Encoding.Latin1.GetBytes(SinkMessage.AsDumped(content));
            expected[recipient] = (Hash(dumped), dumped.Length);
            sends.Add(SendAsync(recipient, content, cts.Token));
        }

        var replies = await Task.WhenAll(sends);
        foreach (var reply in replies)
        {
            Assert.Equal(250, reply.Code);
        }

        // Every message reaches the sink; each is checked and dropped in turn so the test itself stays small.
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        while (seen.Count < Sessions)
        {
            cts.Token.ThrowIfCancellationRequested();
            foreach (var path in Directory.GetFiles(harness.Sink.DumpDirectory))
            {
                if (seen.ContainsValue(path) || new FileInfo(path).Length < MessageSize * 0.95 || !Mentions(path, marker, out var recipient) || seen.ContainsKey(recipient))
                {
                    continue;
                }

                // Complete once our part of the dump is as long as the message (smtp-sink writes it as it arrives).
                if (await CompleteBodyHashAsync(path, marker, expected[recipient].Length, cts.Token) is { } hash)
                {
                    Assert.Equal(expected[recipient].Hash, hash);
                    seen[recipient] = path;
                }
            }

            await Task.Delay(250, cts.Token);
        }

        var peak = PeakRss(pid);
        output.WriteLine($"gateway peak RSS after {Sessions} x {MessageSize / 1048576} MiB: {peak / 1048576} MiB");
        Assert.True(peak < PeakRssLimit, $"gateway peak RSS {peak / 1048576} MiB is over {PeakRssLimit / 1048576} MiB");
    });

    async Task<SmtpReply> SendAsync(string recipient, byte[] content, CancellationToken cancellationToken)
    {
        using var smtp = await harness.ConnectRelayFromAsync(TenantBNetwork, output, cancellationToken);
        // The final reply comes after the whole message is on disk and signed, with 47 others arriving at once.
        smtp.Timeout = TimeSpan.FromMinutes(4);
        return await smtp.SendMailAsync("legacy-app@tenant-b.example", [recipient], content, cancellationToken);
    }

    static byte[] BigMessage(string marker, int index, string recipient)
    {
        var header = $"From: Legacy App <legacy-app@tenant-b.example>\r\nTo: <{recipient}>\r\nSubject: big {index}\r\n" +
            $"Message-ID: <{marker}.{index}@legacy-app.functional.test>\r\nX-Big-Test: {marker}\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\n";
        var message = new byte[MessageSize];
        var at = Encoding.ASCII.GetBytes(header, message);
        var random = new Random(index);
        while (at < MessageSize)
        {
            // 76 characters of base64-like text, then CRLF; a leading dot now and then exercises dot-stuffing.
            var length = Math.Min(78, MessageSize - at);
            for (var j = 0; j < length - 2; j++)
            {
                message[at + j] = (byte)"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/."[random.Next(65)];
            }

            if (length >= 2)
            {
                message[at + length - 2] = (byte)'\r';
                message[at + length - 1] = (byte)'\n';
            }

            at += length;
        }

        // The last line must end with CRLF (fill the tail with a short line when the size does not divide evenly).
        message[^2] = (byte)'\r';
        message[^1] = (byte)'\n';
        if (message[^3] == (byte)'\r')
        {
            message[^3] = (byte)'x';
        }

        return message;
    }

    static bool Mentions(string path, string marker, out string recipient)
    {
        recipient = "";
        using var file = File.OpenRead(path);
        var head = new byte[64 * 1024];
        var n = file.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        var text = Encoding.Latin1.GetString(head, 0, n);
        var at = text.IndexOf($"big-{marker}-", StringComparison.Ordinal);
        if (at < 0)
        {
            return false;
        }

        var end = text.IndexOf('@', at);
        recipient = text[at..end] + "@example.net";
        return true;
    }

    /// <summary>SHA-256 of the dump from our first header line to the end; null while smtp-sink is still writing it.</summary>
    static async Task<string?> CompleteBodyHashAsync(string path, string marker, int length, CancellationToken cancellationToken)
    {
        var bytes = await File.ReadAllBytesAsync(path, cancellationToken);
        var text = Encoding.Latin1.GetString(bytes);
        if (!text.EndsWith("\n\n", StringComparison.Ordinal))
        {
            return null; // smtp-sink ends a finished dump with an empty line
        }

        var start = text.IndexOf("From: Legacy App", StringComparison.Ordinal);
        if (start < 0 || !text.Contains($"X-Big-Test: {marker}", StringComparison.Ordinal))
        {
            return null;
        }

        var dumped = bytes.AsSpan(start, bytes.Length - start - 1);
        return dumped.Length < length ? null : Hash(dumped);
    }

    static string Hash(ReadOnlySpan<byte> bytes) => Convert.ToHexString(SHA256.HashData(bytes));

    /// <summary>VmHWM: the peak resident set size of the process since it started.</summary>
    static long PeakRss(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
            }
        }

        throw new InvalidOperationException("no VmHWM");
    }
}
