using System.ComponentModel;
using System.Runtime.InteropServices;

namespace SmtpGateway.Spool;

/// <summary>
/// fsync of a directory. A rename is durable only once the directory that holds the new name is synced
/// (POSIX fsync(2); ext4 and xfs document the same); FileStream.Flush(true) covers file data only.
/// .NET cannot open a directory as a file handle, so this calls libc directly.
/// </summary>
internal static partial class DurableFile
{
    // open(2) flags. O_RDONLY is 0 everywhere; O_CLOEXEC differs per OS, so only Linux's value is used
    // (a leaked descriptor in a child process would be harmless anyway: it is closed right after fsync).
    const int ORdOnly = 0;
    const int OCloExecLinux = 0x80000;

    /// <summary>fsyncs the directory <paramref name="path"/>. No-op on Windows, where NTFS journals metadata and directories cannot be fsynced.</summary>
    /// <exception cref="IOException">open or fsync failed.</exception>
    public static void SyncDirectory(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }

        var flags = OperatingSystem.IsLinux() ? ORdOnly | OCloExecLinux : ORdOnly;
        var fd = Native.open(path, flags);
        if (fd < 0)
        {
            var openErrno = Marshal.GetLastPInvokeError();
            throw StorageErrors.FromErrno($"open({path}) for directory fsync failed: {new Win32Exception(openErrno).Message}", openErrno);
        }

        try
        {
            // EINTR is retried: fsync may be interrupted by a signal without having failed.
            const int eintr = 4;
            while (Native.fsync(fd) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno != eintr)
                {
                    // errno kept in HResult: ENOSPC from fsync is "mail system full" (StorageErrors), not a generic failure.
                    throw StorageErrors.FromErrno($"fsync({path}) failed: {new Win32Exception(errno).Message}", errno);
                }
            }
        }
        finally
        {
            _ = Native.close(fd);
        }
    }

    /// <summary>
    /// Plain DllImport with blittable arguments and a UTF-8 string: LibraryImport would need AllowUnsafeBlocks
    /// in the project, which this stage does not own.
    /// </summary>
    static class Native
    {
#pragma warning disable SYSLIB1054 // LibraryImport needs AllowUnsafeBlocks; see above.
#pragma warning disable CA5392 // libc is a system library resolved by the loader.
        [DllImport("libc", SetLastError = true)]
        public static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

        [DllImport("libc", SetLastError = true)]
        public static extern int fsync(int fd);

        [DllImport("libc", SetLastError = true)]
        public static extern int close(int fd);
#pragma warning restore CA5392
#pragma warning restore SYSLIB1054
    }
}
