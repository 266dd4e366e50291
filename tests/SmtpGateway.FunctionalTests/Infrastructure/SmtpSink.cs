using System.Diagnostics;
using System.Net.Sockets;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>
/// Postfix's smtp-sink (Debian package "postfix") on a free loopback port, capturing every message to its own
/// file (see <see cref="SinkMessage"/> for the format). It plays the smarthost: an SMTP server we did not write.
/// </summary>
internal sealed class SmtpSink : IDisposable
{
    public const string Binary = "/usr/sbin/smtp-sink";

    readonly ChildProcess _process;
    readonly Dictionary<string, SinkMessage> _complete = new(StringComparer.Ordinal);

    SmtpSink(ChildProcess process, int port, string dumpDirectory, string address = "127.0.0.1")
    {
        _process = process;
        Port = port;
        DumpDirectory = dumpDirectory;
        Address = address;
    }

    public int Port { get; }

    /// <summary>The loopback address it listens on (127.0.0.x: each MX of a test zone has its own).</summary>
    public string Address { get; }

    public bool HasExited => _process.HasExited;

    public string DumpDirectory { get; }

    public string Output => _process.Output;

    public static async Task<SmtpSink> StartAsync(string workDirectory, CancellationToken cancellationToken)
    {
        if (!File.Exists(Binary))
        {
            throw new InvalidOperationException($"{Binary} is missing: apt-get install postfix (./test.sh does)");
        }

        var dumps = Path.Combine(workDirectory, "sink");
        Directory.CreateDirectory(dumps);
        var args = new List<string>();
        if (Environment.IsPrivilegedProcess)
        {
            // smtp-sink refuses to run as root: it drops to -u after binding, and that user writes the dumps.
            File.SetUnixFileMode(dumps, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
                | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
                | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute);
            args.AddRange(["-u", "nobody"]);
        }

        for (var attempt = 0; ; attempt++)
        {
            var port = FreePort.Next();
            // -d: one file per transaction, named <template><8 hex digits>; -t: command timeout (s); -m: max sessions.
            var process = ChildProcess.Start("smtp-sink", Binary,
                [.. args, "-h", "sink.test", "-t", "30", "-m", "512", "-d", Path.Combine(dumps, "msg."), $"127.0.0.1:{port}", "512"],
                workDirectory);
            var sink = new SmtpSink(process, port, dumps);
            try
            {
                await sink.WaitForBannerAsync(cancellationToken).ConfigureAwait(false);
                return sink;
            }
            catch (Exception) when (attempt < 3 && process.HasExited)
            {
                // Lost a race for the port; take another.
                sink.Dispose();
            }
        }
    }

    /// <summary>
    /// The MX variant: smtp-sink on <paramref name="address"/>:<paramref name="port"/> (a fixed port shared by every MX of a
    /// test, each on its own 127.0.0.x), dumping into its own directory, with extra options to inject replies, e.g.
    /// <c>-r RCPT</c> (450 to every RCPT), <c>-f RCPT -B "550 5.1.1 No such user"</c>, <c>-Q MAIL</c> (421 and disconnect).
    /// </summary>
    public static async Task<SmtpSink> StartAtAsync(string workDirectory, string address, int port, IReadOnlyList<string> options, CancellationToken cancellationToken)
    {
        if (!File.Exists(Binary))
        {
            throw new InvalidOperationException($"{Binary} is missing: apt-get install postfix (./test.sh does)");
        }

        var dumps = Path.Combine(workDirectory, $"sink-{address}-{Guid.NewGuid():N}"[..32]);
        Directory.CreateDirectory(dumps);
        var args = new List<string>();
        if (Environment.IsPrivilegedProcess)
        {
            File.SetUnixFileMode(dumps, (UnixFileMode)Convert.ToInt32("777", 8));
            args.AddRange(["-u", "nobody"]);
        }

        var process = ChildProcess.Start($"smtp-sink@{address}", Binary,
            [.. args, .. options, "-h", $"sink-{address}.test", "-t", "30", "-m", "512", "-d", Path.Combine(dumps, "msg."), $"{address}:{port}", "512"],
            workDirectory);
        var sink = new SmtpSink(process, port, dumps, address);
        try
        {
            await sink.WaitForBannerAsync(cancellationToken).ConfigureAwait(false);
            return sink;
        }
        catch
        {
            sink.Dispose();
            throw;
        }
    }

    async Task WaitForBannerAsync(CancellationToken cancellationToken)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"smtp-sink exited:\n{_process.Output}");
            }

            try
            {
                using var client = await RawSmtpClient.ConnectAsync(Address, Port, TimeSpan.FromSeconds(5), cancellationToken).ConfigureAwait(false);
                if (client.Banner.Code is 220 or 421)
                {
                    return;
                }
            }
            catch (Exception e) when (e is SocketException or IOException && deadline.Elapsed < TimeSpan.FromSeconds(20))
            {
                await Task.Delay(50, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Every transaction smtp-sink has completed (its dump file closed) so far.</summary>
    public IReadOnlyList<SinkMessage> Messages()
    {
        lock (_complete)
        {
            // List first, then ask the kernel which dumps smtp-sink still has open: a listed file that is not open
            // afterwards has been closed, i.e. its transaction completed (aborted ones are unlinked).
            var listed = Directory.GetFiles(DumpDirectory);
            var open = OpenFiles();
            foreach (var path in listed)
            {
                if (_complete.ContainsKey(path) || open.Contains(path))
                {
                    continue;
                }

                byte[] bytes;
                try
                {
                    bytes = File.ReadAllBytes(path);
                }
                catch (FileNotFoundException)
                {
                    continue;
                }

                var message = SinkMessage.TryParse(path, bytes);
                if (message is not null)
                {
                    _complete[path] = message;
                }
            }

            return [.. _complete.Values.OrderBy(m => File.GetLastWriteTimeUtc(m.Path))];
        }
    }

    /// <summary>Polls until <paramref name="done"/> holds for the completed messages, or throws TimeoutException.</summary>
    public async Task<IReadOnlyList<SinkMessage>> WaitAsync(Func<IReadOnlyList<SinkMessage>, bool> done, TimeSpan timeout,
        CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var messages = Messages();
            if (done(messages))
            {
                return messages;
            }

            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"smtp-sink: condition not met within {timeout}; {messages.Count} message(s) received");
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }
    }

    HashSet<string> OpenFiles()
    {
        var open = new HashSet<string>(StringComparer.Ordinal);
        try
        {
            foreach (var fd in Directory.EnumerateFileSystemEntries($"/proc/{_process.Id}/fd"))
            {
                try
                {
                    if (new FileInfo(fd).LinkTarget is { } target)
                    {
                        open.Add(target);
                    }
                }
                catch (IOException)
                {
                    // fd closed while we looked
                }
            }
        }
        catch (DirectoryNotFoundException)
        {
            // smtp-sink is gone: nothing is open
        }

        return open;
    }

    public void Dispose() => _process.Dispose();
}
