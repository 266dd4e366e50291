using System.Globalization;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>
/// A core file of a live process, made with <c>gcore</c> (Debian package gdb): gdb attaches with ptrace, writes every
/// readable mapping, and detaches; the process goes on. Needs ptrace permission over the process (same user, or root /
/// CAP_SYS_PTRACE; Yama's kernel.yama.ptrace_scope 0 or 1 for a descendant, 2 only with CAP_SYS_PTRACE, 3 never).
/// The file holds everything the process has in memory: delete it (<see cref="IDisposable.Dispose"/>) as soon as it has
/// been searched.
/// </summary>
internal sealed class CoreDump : IDisposable
{
    public const string GcoreBinary = "/usr/bin/gcore";

    CoreDump(string path) => FilePath = path;

    public string FilePath { get; }

    public long Length => new FileInfo(FilePath).Length;

    /// <summary>Dumps process <paramref name="pid"/> to a file in <paramref name="directory"/>; throws with the reason when gcore cannot.</summary>
    public static async Task<CoreDump> CaptureAsync(int pid, string directory, TimeSpan timeout)
    {
        if (!File.Exists(GcoreBinary))
        {
            throw new InvalidOperationException($"{GcoreBinary} is missing: apt-get install gdb (./test.sh does)");
        }

        var prefix = Path.Combine(directory, "gateway.core");
        var path = $"{prefix}.{pid.ToString(CultureInfo.InvariantCulture)}";
        var result = await ChildProcess.RunCapturedAsync(GcoreBinary, ["-o", prefix, pid.ToString(CultureInfo.InvariantCulture)], directory, timeout)
            .ConfigureAwait(false);
        if (result.ExitCode != 0 || !File.Exists(path) || new FileInfo(path).Length == 0)
        {
            if (File.Exists(path))
            {
                File.Delete(path);
            }

            throw new InvalidOperationException(
                $"gcore -o {prefix} {pid} made no core (exit status {result.ExitCode}; {PtraceDiagnostics()}):\n{result.Output}");
        }

        return new CoreDump(path);
    }

    /// <summary>What decides whether ptrace (and so gcore) may attach: who we are, our capability, Yama's scope.</summary>
    public static string PtraceDiagnostics()
    {
        const string yama = "/proc/sys/kernel/yama/ptrace_scope";
        var scope = File.Exists(yama) ? File.ReadAllText(yama).Trim() : "absent (no Yama: classic ptrace rules)";
        var capabilities = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("CapEff:", StringComparison.Ordinal))?[7..].Trim();
        var hasPtrace = capabilities is not null && ulong.TryParse(capabilities, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var mask)
            && (mask & (1UL << 19)) != 0;
        return $"uid {(Environment.IsPrivilegedProcess ? "0 (root)" : "non-root")}, CAP_SYS_PTRACE {(hasPtrace ? "yes" : "no")}, {yama} {scope}";
    }

    public void Dispose()
    {
        try
        {
            File.Delete(FilePath);
        }
        catch (IOException)
        {
        }
    }
}
