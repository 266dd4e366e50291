using System.Text;
using System.Text.RegularExpressions;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 15: the spool's two ways of making a commit durable (Gateway:Spool:Sync), each proved on the running gateway
/// with strace: the message's data is on disk before its name goes into queue/, and the 250 after DATA is sent only after
/// a sync that began once the name was there has returned. With Auto, a spool whose data directory is a file system of its
/// own (here ext4 on a loop device) is synced by syncfs(2), shared by the commits of a batch, and no message file is synced
/// on its own; a spool on a shared file system (the test machine's root) syncs each file, then queue/.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class SpoolSyncTests(ITestOutputHelper output)
{
    static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    [Fact]
    public Task A_data_directory_with_its_own_file_system_is_synced_by_syncfs_before_the_rename_and_before_the_250() => FaultGatewayHarness.RunAsync(output,
        (harness, _, _) => MountOwnFileSystemAsync(harness),
        async harness =>
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            Assert.Contains($"Spool sync FileSystem: the spool's file system (ext4) is mounted at {harness.DataDirectory} for the gateway alone", harness.GatewayOutput, StringComparison.Ordinal);

            var (trace, id, subject) = await TraceOneMessageAsync(harness, "syncfs,fsync", cts.Token);
            var queued = trace.Renamed($"/spool/queue/{id}");
            var reply = trace.Sent($"queued as {id}");
            var file = trace.FileBefore(queued);
            trace.Show(output, file.Opened, reply);

            // The message file itself was never synced; a syncfs that began after it was written and closed returned
            // before the rename, and an fsync of queue/ that began after the rename returned before the 250.
            Assert.DoesNotContain(trace.Calls, c => c.Name is "fsync" or "fdatasync" && c.Fd == file.Opened.Result && c.Start > file.Opened.End && c.End < file.Closed.Start);
            Assert.Contains(trace.Calls, c => c.Name == "syncfs" && c.Start > file.Closed.End && c.End < queued.Start && c.Result == "0");
            Assert.Contains(trace.Calls, c => trace.IsQueueFsync(c) && c.Start > queued.End && c.End < reply.Start);

            await harness.Sink.WaitAsync(ms => ms.Any(m => m.Header("Subject") == subject), Wait, cts.Token);
        });

    [Fact]
    public Task A_file_system_shut_down_between_the_rename_and_its_sync_answers_4xx_never_250() => FaultGatewayHarness.RunAsync(output,
        (harness, _, _) => MountOwnFileSystemAsync(harness),
        async harness =>
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            Assert.Contains("Spool sync FileSystem:", harness.GatewayOutput, StringComparison.Ordinal);
            var pid = harness.GatewayPid ?? throw new InvalidOperationException("the gateway is not running");

            // Every fsync starts 5 s late, so the commit waits in the fsync of queue/ after its rename; meanwhile the file
            // system is shut down as ext4 does after an error (EXT4_IOC_SHUTDOWN, no log flush): the rename may be lost.
            var strace = await AttachStraceAsync(harness, "trace=renameat2,fsync,sendto,sendmsg", "inject=fsync:delay_enter=5000000", cts.Token);
            SmtpGateway.FunctionalTests.Infrastructure.SmtpReply reply;
            try
            {
                using var smtp = await RawSmtpClient.ConnectAsync("127.0.0.1", harness.RelayPort, TimeSpan.FromSeconds(30), cts.Token);
                Assert.Equal(250, (await smtp.CommandAsync("EHLO shutdown.functional.test", cts.Token)).Code);
                Assert.Equal(250, (await smtp.CommandAsync("MAIL FROM:<sync@tenant-a.example>", cts.Token)).Code);
                Assert.Equal(250, (await smtp.CommandAsync("RCPT TO:<sink@example.net>", cts.Token)).Code);
                Assert.Equal(354, (await smtp.CommandAsync("DATA", cts.Token)).Code);
                await smtp.WriteAsync(RawSmtpClient.DotStuff("From: sync@tenant-a.example\r\nTo: sink@example.net\r\nSubject: shut down\r\n\r\nNot on disk.\r\n"u8), cts.Token);

                await EventPoll.UntilAsync<string>(
                    () => [strace.StandardError],
                    // The call's start: with -f strace may print its end on a later line ("<... renameat2 resumed>").
                    seen => Regex.IsMatch(seen[0], @"renameat2\([^\n]*/spool/queue/[0-9A-F]+"""),
                    () => strace.HasExited,
                    _ => $"no rename into queue/ while the fsync was held back: {strace.Output}",
                    Wait,
                    cts.Token);
                ShutDown(harness.DataDirectory);

                reply = await smtp.ReadReplyAsync(cts.Token);
            }
            finally
            {
                await FaultTests.RunToolAsync("/usr/bin/kill", "-TERM", strace.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
                await strace.Exited.WaitAsync(Wait, cts.Token);
            }

            output.WriteLine($"reply after the shutdown: {reply}");
            Assert.InRange(reply.Code, 400, 499);
            Assert.NotNull(harness.GatewayPid); // still running, still answering
            using var again = await RawSmtpClient.ConnectAsync("127.0.0.1", harness.RelayPort, TimeSpan.FromSeconds(30), cts.Token);
            Assert.Equal(220, again.Banner.Code);
        });

    [Fact]
    public Task A_spool_on_a_shared_file_system_syncs_the_file_then_queue_before_the_250() => FaultGatewayHarness.RunAsync(output,
        (_, _, _) =>
        {
            FaultTests.RequireRoot("strace attaches to the gateway with ptrace");
            return Task.CompletedTask;
        },
        async harness =>
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            Assert.Contains("Spool sync File: the spool shares the file system mounted at /", harness.GatewayOutput, StringComparison.Ordinal);

            var (trace, id, subject) = await TraceOneMessageAsync(harness, "fsync", cts.Token);
            var queued = trace.Renamed($"/spool/queue/{id}");
            var reply = trace.Sent($"queued as {id}");
            var file = trace.FileBefore(queued);
            trace.Show(output, file.Opened, reply);

            // fdatasync (or fsync) of the message file, after its last write and before its close (its descriptor number
            // is its own only while it is open), returned before the rename published it...
            Assert.Contains(trace.Calls, c => c.Name is "fsync" or "fdatasync" && c.Fd == file.Opened.Result && c.Start > file.LastWrite.End && c.End < file.Closed.Start && c.Result == "0");

            // ...and an fsync of queue/ that began after the rename returned before the 250.
            Assert.Contains(trace.Calls, c => trace.IsQueueFsync(c) && c.Start > queued.End && c.End < reply.Start);
            Assert.DoesNotContain(trace.Calls, c => c.Name == "syncfs");

            await harness.Sink.WaitAsync(ms => ms.Any(m => m.Header("Subject") == subject), Wait, cts.Token);
        });

    /// <summary>
    /// strace -f attached to the gateway with <paramref name="trace"/> and <paramref name="inject"/>, once it is attached to
    /// every thread: strace attaches to all of them before it prints any event, so the banner of a new connection in its
    /// output is the barrier (<paramref name="trace"/> must include sendto).
    /// </summary>
    static async Task<ChildProcess> AttachStraceAsync(GatewayHarness harness, string trace, string inject, CancellationToken cancellationToken)
    {
        var pid = harness.GatewayPid ?? throw new InvalidOperationException("the gateway is not running");
        var strace = ChildProcess.Start("strace", "/usr/bin/strace",
            ["-f", "-qq", "-s", "300", "-e", trace, "-e", inject, "-p", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)],
            harness.WorkDirectory);
        await EventPoll.UntilAsync<string>(
            () =>
            {
                using var probe = RawSmtpClient.ConnectAsync("127.0.0.1", harness.RelayPort, TimeSpan.FromSeconds(10), cancellationToken).GetAwaiter().GetResult();
                return [strace.StandardError];
            },
            seen => seen[0].Contains("\"220 ", StringComparison.Ordinal),
            () => strace.HasExited,
            _ => $"strace never showed a banner: {strace.Output}",
            Wait,
            cancellationToken);
        return strace;
    }

    /// <summary>An ext4 file system of its own (on a loop device) at the harness's data directory: Auto then syncs with syncfs.</summary>
    static async Task MountOwnFileSystemAsync(FaultGatewayHarness harness)
    {
        FaultTests.RequireRoot("it mounts an ext4 file system on a loop device at the data directory");
        var image = Path.Combine(harness.WorkDirectory, "data.ext4");
        await using (var file = new FileStream(image, FileMode.CreateNew))
        {
            file.SetLength(128L * 1024 * 1024);
        }

        await FaultTests.RunToolAsync("/usr/sbin/mkfs.ext4", "-q", "-F", image);
        Directory.CreateDirectory(harness.DataDirectory);
        await FaultTests.RunToolAsync("/usr/bin/mount", "-o", "loop", image, harness.DataDirectory);
        harness.OnDispose(async () =>
        {
            // The harness could not delete the mount point while mounted: unmount, then remove what is left.
            await FaultTests.RunToolAsync("/usr/bin/umount", "-l", harness.DataDirectory);
            if (!harness.Failed && Directory.Exists(harness.WorkDirectory))
            {
                Directory.Delete(harness.WorkDirectory, recursive: true);
            }
        });
    }

    /// <summary>
    /// Shuts the file system down as ext4 does after an error, without flushing its journal (EXT4_IOC_SHUTDOWN,
    /// _IOR('X', 125, __u32), flag EXT4_GOING_FLAGS_NOLOGFLUSH): every later write or sync on it fails.
    /// </summary>
    static void ShutDown(string directory)
    {
        var fd = Native.open(directory, 0);
        Assert.True(fd >= 0, $"open({directory}) failed: errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}");
        try
        {
            const ulong shutdown = 0x8004587D;
            var flag = 2u;
            Assert.True(Native.ioctl(fd, shutdown, ref flag) == 0, $"EXT4_IOC_SHUTDOWN failed: errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}");
        }
        finally
        {
            _ = Native.close(fd);
        }
    }

    static class Native
    {
#pragma warning disable SYSLIB1054, CA5392 // a test's direct libc calls
        [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
        public static extern int open([System.Runtime.InteropServices.MarshalAs(System.Runtime.InteropServices.UnmanagedType.LPUTF8Str)] string path, int flags);

        [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
        public static extern int ioctl(int fd, ulong request, ref uint argument);

        [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
        public static extern int close(int fd);
#pragma warning restore SYSLIB1054, CA5392
    }

    /// <summary>Attaches strace to the gateway, sends one message on the relay listener, detaches; the trace, the queue id and the subject.</summary>
    async Task<(Trace Trace, string Id, string Subject)> TraceOneMessageAsync(GatewayHarness harness, string delayed, CancellationToken cancellationToken)
    {
        // Each call of the spool's group sync starts 0.3 s late (strace fault injection, delay_enter; strace prints a
        // delay_exit call's end before the delay, so that would prove nothing): a 250 that did not wait for its sync
        // would show in the trace before that sync's end, however fast the disk. Only that call: a delayed fsync of
        // another file on the way to the 250 (the audit log's) could otherwise hide the fault.
        var strace = await AttachStraceAsync(harness, "trace=openat,pwrite64,write,close,renameat2,rename,fsync,fdatasync,syncfs,sendto,sendmsg",
            $"inject={delayed}:delay_enter=300000", cancellationToken);
        string id, subject;
        try
        {
            using var smtp = await RawSmtpClient.ConnectAsync("127.0.0.1", harness.RelayPort, TimeSpan.FromSeconds(10), cancellationToken);
            Assert.Equal(250, (await smtp.CommandAsync("EHLO sync.functional.test", cancellationToken)).Code);
            subject = $"sync {Guid.NewGuid():N}";
            var content = Encoding.ASCII.GetBytes($"From: sync@tenant-a.example\r\nTo: sink@example.net\r\nSubject: {subject}\r\n\r\nDurable before 250.\r\n");
            var reply = await smtp.SendMailAsync("sync@tenant-a.example", ["sink@example.net"], content, cancellationToken);
            Assert.True(reply.Code == 250, $"DATA: {reply}");
            id = Regex.Match(reply.Text, "queued as ([0-9A-F]+)").Groups[1].Value;
            Assert.NotEmpty(id);
        }
        finally
        {
            await FaultTests.RunToolAsync("/usr/bin/kill", "-TERM", strace.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
            await strace.Exited.WaitAsync(Wait, cancellationToken);
        }

        var trace = Trace.Parse(strace.StandardError);
        output.WriteLine($"{trace.Calls.Count} system calls traced; message {id}");
        return (trace, id, subject);
    }

    /// <summary>One traced system call: its first and last line in the trace (the same line unless another thread's call came between).</summary>
    sealed record Call(int Pid, string Name, string Args, string Result, int Start, int End)
    {
        /// <summary>The first argument as a descriptor (fsync, fdatasync, syncfs, sendto).</summary>
        public string Fd => Args.Split(',', 2)[0].Trim();

        /// <summary>The old name of a rename.</summary>
        public string? SourcePath => Paths.ElementAtOrDefault(0);

        /// <summary>The new name of a rename.</summary>
        public string? DestinationPath => Paths.ElementAtOrDefault(1);

        IEnumerable<string> Paths => Regex.Matches(Args, "\"([^\"]+)\"").Select(m => m.Groups[1].Value);
    }

    /// <summary>strace -f output ("[pid PID] name(args) = result", split into "&lt;unfinished ...&gt;" and "&lt;... name resumed&gt;" lines).</summary>
    sealed class Trace
    {
        public List<Call> Calls { get; } = [];

        public static Trace Parse(string text)
        {
            var trace = new Trace();
            var open = new Dictionary<int, (string Name, string Args, int Start)>();
            var lines = text.Split('\n');
            for (var i = 0; i < lines.Length; i++)
            {
                // "[pid 123] call(...)" on strace's standard error once it traces several threads.
                var m = Regex.Match(lines[i], @"^\[pid\s+(\d+)\]\s+(.*)$");
                if (!m.Success)
                {
                    continue;
                }

                var pid = int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                var rest = m.Groups[2].Value;
                if (Regex.Match(rest, @"^<\.\.\. (\w+) resumed>(.*)\)\s+= (-?\w+)") is { Success: true } resumed)
                {
                    if (open.Remove(pid, out var begun))
                    {
                        trace.Calls.Add(new Call(pid, begun.Name, begun.Args + resumed.Groups[2].Value, resumed.Groups[3].Value, begun.Start, i));
                    }
                }
                else if (Regex.Match(rest, @"^(\w+)\((.*) <unfinished \.\.\.>$") is { Success: true } unfinished)
                {
                    open[pid] = (unfinished.Groups[1].Value, unfinished.Groups[2].Value, i);
                }
                else if (Regex.Match(rest, @"^(\w+)\((.*)\)\s+= (-?\w+)") is { Success: true } whole)
                {
                    trace.Calls.Add(new Call(pid, whole.Groups[1].Value, whole.Groups[2].Value, whole.Groups[3].Value, i, i));
                }
            }

            return trace;
        }

        /// <summary>Writes the calls from <paramref name="from"/>'s start to <paramref name="to"/>'s end to the test output.</summary>
        public void Show(ITestOutputHelper output, Call from, Call to)
        {
            foreach (var c in Calls.Where(c => c.End >= from.Start && c.Start <= to.End).OrderBy(c => c.Start))
            {
                output.WriteLine($"[{c.Start}-{c.End}] {c.Pid} {c.Name}({(c.Args.Length > 120 ? c.Args[..120] + "..." : c.Args)}) = {c.Result}");
            }
        }

        /// <summary>The rename whose new name (not its old one: delivery renames queue/ID away) ends with <paramref name="destinationSuffix"/>.</summary>
        public Call Renamed(string destinationSuffix) =>
            Assert.Single(Calls, c => c.Name is "renameat2" or "rename" && c.Result == "0" && c.DestinationPath is { } to && to.EndsWith(destinationSuffix, StringComparison.Ordinal));

        public Call Sent(string text) =>
            Calls.Where(c => c.Name is "sendto" or "sendmsg" && c.Args.Contains(text, StringComparison.Ordinal)).MinBy(c => c.Start)
            ?? throw new Xunit.Sdk.XunitException($"no send of \"{text}\" in the trace");

        /// <summary>The renamed file's last open before the rename, its last write and its close (all before the rename).</summary>
        public (Call Opened, Call LastWrite, Call Closed) FileBefore(Call rename)
        {
            var path = rename.SourcePath!;
            var opened = Calls.Where(c => c.Name == "openat" && c.End < rename.Start && c.Args.Contains($"\"{path}\"", StringComparison.Ordinal) && !c.Result.StartsWith('-'))
                .MaxBy(c => c.End) ?? throw new Xunit.Sdk.XunitException($"no open of {path} before the rename");
            var closed = Calls.Where(c => c.Name == "close" && c.Fd == opened.Result && c.Start > opened.End).MinBy(c => c.Start)
                ?? throw new Xunit.Sdk.XunitException($"no close of descriptor {opened.Result} ({path})");
            Assert.True(closed.End < rename.Start, $"{path} was still open at the rename");
            var lastWrite = Calls.Where(c => c.Name is "pwrite64" or "write" && c.Fd == opened.Result && c.Start > opened.End && c.End < closed.Start).MaxBy(c => c.End)
                ?? throw new Xunit.Sdk.XunitException($"no write to descriptor {opened.Result} ({path})");
            return (opened, lastWrite, closed);
        }

        /// <summary>A successful fsync of a descriptor whose latest open before it was of the spool's queue/ directory.</summary>
        public bool IsQueueFsync(Call call) =>
            call.Name == "fsync" && call.Result == "0"
            && Calls.Where(o => o.Name == "openat" && o.Result == call.Fd && o.End < call.Start).MaxBy(o => o.End) is { } opened
            && opened.Args.Contains("/spool/queue\"", StringComparison.Ordinal);
    }
}
