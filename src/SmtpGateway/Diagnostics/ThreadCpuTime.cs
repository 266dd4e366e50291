using System.Runtime.InteropServices;

namespace SmtpGateway.Diagnostics;

/// <summary>
/// The calling thread's CPU time, for work a native library does on our thread (a software token's C_Sign): wall time
/// would count the pool wait and the preemptions, process CPU every other thread's work.
/// </summary>
internal static class ThreadCpuTime
{
    /// <summary>CLOCK_THREAD_CPUTIME_ID in Linux's &lt;linux/time.h&gt;.</summary>
    const int ClockThreadCpuTimeId = 3;

    /// <summary>Nanoseconds of CPU this thread has used, or -1 where it cannot be read (not Linux).</summary>
    public static long Nanoseconds()
    {
        // clock_gettime(2): a thread's CPU clock is not in the vDSO, so this is one system call (a few hundred ns).
        if (!OperatingSystem.IsLinux() || Native.clock_gettime(ClockThreadCpuTimeId, out var now) != 0)
        {
            return -1;
        }

        return (now.Seconds * 1_000_000_000) + now.Nanoseconds;
    }

    /// <summary>Seconds of CPU between two readings of <see cref="Nanoseconds"/> on one thread; null when either was not read.</summary>
    public static double? SecondsBetween(long start, long end) => start < 0 || end < start ? null : (end - start) / 1e9;

    [StructLayout(LayoutKind.Sequential)]
    struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    static class Native
    {
#pragma warning disable SYSLIB1054 // LibraryImport needs AllowUnsafeBlocks; a blittable out struct marshals without it.
        [DllImport("libc")]
        public static extern int clock_gettime(int clockId, out Timespec time);
#pragma warning restore SYSLIB1054
    }
}
