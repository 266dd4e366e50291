using System.Runtime.InteropServices;

namespace SmtpGateway.Diagnostics;

/// <summary>
/// The calling thread's CPU time, for work a native library does on our thread (a software token's C_Sign): wall time
/// would count the pool wait and the preemptions, process CPU every other thread's work. Public for the benchmarks
/// (perf/SmtpGateway.SignBench times its cases with it).
/// </summary>
public static class ThreadCpuTime
{
    /// <summary>CLOCK_THREAD_CPUTIME_ID in Linux's &lt;linux/time.h&gt;.</summary>
    const int ClockThreadCpuTimeId = 3;

    /// <summary>False once the call failed to bind (a libc without it): never tried again.</summary>
    static bool _available = OperatingSystem.IsLinux();

    /// <summary>Nanoseconds of CPU this thread has used, or -1 where it cannot be read (not Linux). Never throws.</summary>
    public static long Nanoseconds()
    {
        if (!Volatile.Read(ref _available))
        {
            return -1;
        }

        try
        {
            // clock_gettime(2): a thread's CPU clock is not in the vDSO, so this is one system call (a few hundred ns).
            return Native.clock_gettime(ClockThreadCpuTimeId, out var now) == 0 ? ((long)now.Seconds * 1_000_000_000) + now.Nanoseconds : -1;
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            Volatile.Write(ref _available, false);
            return -1;
        }
    }

    /// <summary>Seconds of CPU between two readings of <see cref="Nanoseconds"/> on one thread; null when either was not read.</summary>
    public static double? SecondsBetween(long start, long end) => start < 0 || end < start ? null : (end - start) / 1e9;

    /// <summary>struct timespec: time_t and long, both the size of a pointer in glibc's default ABI (32-bit too).</summary>
    [StructLayout(LayoutKind.Sequential)]
    struct Timespec
    {
        public nint Seconds;
        public nint Nanoseconds;
    }

    static class Native
    {
#pragma warning disable SYSLIB1054 // LibraryImport needs AllowUnsafeBlocks; a blittable out struct marshals without it.
        [DllImport("libc")]
        public static extern int clock_gettime(int clockId, out Timespec time);
#pragma warning restore SYSLIB1054
    }
}
