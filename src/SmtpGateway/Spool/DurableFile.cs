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
            SyncRetried(fd, Native.fsync, "fsync", path);
        }
        finally
        {
            _ = Native.close(fd);
        }
    }

    /// <summary>
    /// Opens <paramref name="path"/> for writing, owner-only (0600), creating it when absent (exclusively when
    /// <paramref name="mustCreate"/>), never truncating it and taking no lock: FileStream's open costs an flock, an
    /// ftruncate and several stats per file, none of which a spool temp file needs (its name is ours alone; only the
    /// rename publishes it). Null on Windows or a platform without these flags: the caller falls back to FileStream.
    /// </summary>
    /// <exception cref="IOException">open failed.</exception>
    public static Microsoft.Win32.SafeHandles.SafeFileHandle? OpenForOverwrite(string path, bool mustCreate)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        const int oWrOnly = 0x1, oCreat = 0x40, oExcl = 0x80;
        return Open(path, oWrOnly | oCreat | OCloExecLinux | (mustCreate ? oExcl : 0), missingIsFile: false);
    }

    const int OwnerReadWrite = 0x180; // 0600

    /// <summary>
    /// Opens <paramref name="path"/> for reading without the shared flock(2), its unlock and the two extra fstat(2) calls
    /// of a FileStream open: a queue file is immutable once renamed into queue/, so a lock guards nothing, and delivery
    /// reads one per message (issue 15). Null on Windows: the caller falls back to FileStream. A directory opens too;
    /// reading it fails with EISDIR (<see cref="IsDirectoryError"/>).
    /// </summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="UnauthorizedAccessException">Not readable by this user.</exception>
    /// <exception cref="IOException">open failed otherwise.</exception>
    public static Microsoft.Win32.SafeHandles.SafeFileHandle? OpenForRead(string path)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        // ENOENT is FileNotFoundException even when the directory is gone: a load answers "not there" either way.
        return Open(path, OCloExecLinux, missingIsFile: true);
    }

    /// <summary>
    /// open(2), retried on EINTR as FileStream does, failing with the exception types FileStream would throw, which
    /// callers tell apart (a missing file or directory, no permission); other errors keep their errno (StorageErrors).
    /// </summary>
    static Microsoft.Win32.SafeHandles.SafeFileHandle Open(string path, int flags, bool missingIsFile)
    {
        const int eintr = 4;
        int fd, errno = 0;
        do
        {
            fd = Native.open(path, flags, OwnerReadWrite);
        }
        while (fd < 0 && (errno = Marshal.GetLastPInvokeError()) == eintr);

        if (fd < 0)
        {
            const int eperm = 1, enoent = 2, eacces = 13;
            var message = $"open({path}) failed: {new Win32Exception(errno).Message}";
            throw errno switch
            {
                enoent when missingIsFile => new FileNotFoundException(message, path) { HResult = errno },
                enoent => new DirectoryNotFoundException(message) { HResult = errno },
                eperm or eacces => new UnauthorizedAccessException(message) { HResult = errno },
                _ => StorageErrors.FromErrno(message, errno),
            };
        }

        return new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>True for the error a read(2) of a directory gives (EISDIR), which .NET reports as a plain IOException.</summary>
    public static bool IsDirectoryError(IOException exception) => exception.HResult == 21;

    /// <summary>
    /// fsync(2) of an open file, retried on EINTR; with <paramref name="dataOnly"/>, fdatasync(2) on Linux, which skips the
    /// inode when only its timestamps changed. Only for a file overwritten in place at its old length: POSIX promises the
    /// size and block map with fdatasync too, but ext4 without a journal may leave the inode of a file grown by delayed
    /// allocation unwritten (no I_DIRTY_DATASYNC), so a new, grown or cut file takes fsync.
    /// </summary>
    /// <exception cref="IOException">fsync failed (errno kept, see StorageErrors).</exception>
    public static void SyncFile(Microsoft.Win32.SafeHandles.SafeFileHandle handle, string path, bool dataOnly = false)
    {
        dataOnly &= OperatingSystem.IsLinux();
        SyncRetried(handle, dataOnly ? Native.fdatasync : Native.fsync, dataOnly ? "fdatasync" : "fsync", path);
    }

    /// <summary>
    /// A sync call (fsync, fdatasync, syncfs) on <paramref name="fd"/>, made again when a signal interrupted it (EINTR: it did
    /// not fail). Any other error throws with its errno kept in HResult: ENOSPC is "mail system full" (StorageErrors), not a
    /// generic failure. The message is made only on failure: this is on the commit path.
    /// </summary>
    static void SyncRetried(int fd, Func<int, int> call, string name, string path)
    {
        const int eintr = 4;
        while (call(fd) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno != eintr)
            {
                throw StorageErrors.FromErrno($"{name}({path}) failed: {new Win32Exception(errno).Message}", errno);
            }
        }
    }

    /// <summary><see cref="SyncRetried(int, Func{int, int}, string, string)"/> on an open handle, kept from closing meanwhile.</summary>
    static void SyncRetried(Microsoft.Win32.SafeHandles.SafeFileHandle handle, Func<int, int> call, string name, string path)
    {
        var added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            SyncRetried((int)handle.DangerousGetHandle(), call, name, path);
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Cuts an open file to <paramref name="length"/> octets (ftruncate(2)).</summary>
    /// <exception cref="IOException">ftruncate failed.</exception>
    public static void Truncate(Microsoft.Win32.SafeHandles.SafeFileHandle handle, long length, string path)
    {
        var added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            if (Native.ftruncate((int)handle.DangerousGetHandle(), length) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw StorageErrors.FromErrno($"ftruncate({path}) failed: {new Win32Exception(errno).Message}", errno);
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// rename(2) that refuses to replace an existing <paramref name="destination"/> (renameat2 RENAME_NOREPLACE): the
    /// semantics of File.Move(overwrite: false) in one system call instead of a rename preceded by stats. Falls back to
    /// File.Move where renameat2 or the flag is not supported.
    /// </summary>
    /// <exception cref="IOException">The destination exists, or the rename failed.</exception>
    public static void MoveNoReplace(string source, string destination)
    {
        if (OperatingSystem.IsLinux())
        {
            const int atFdCwd = -100, renameNoReplace = 1;
            try
            {
                if (Native.renameat2(atFdCwd, source, atFdCwd, destination, renameNoReplace) == 0)
                {
                    return;
                }
            }
            catch (EntryPointNotFoundException)
            {
                File.Move(source, destination, overwrite: false);
                return;
            }

            var errno = Marshal.GetLastPInvokeError();
            const int einval = 22, enosys = 38;
            if (errno is not (einval or enosys))
            {
                throw StorageErrors.FromErrno($"rename({source}, {destination}) failed: {new Win32Exception(errno).Message}", errno);
            }
        }

        File.Move(source, destination, overwrite: false);
    }

    /// <summary>
    /// syncfs(2) of the file system that holds a directory, through a descriptor held from before the first message is
    /// written until the spool is disposed. The kernel reports to each descriptor the write-back errors since its open or
    /// its last syncfs (errseq on the super block, f_sb_err sampled at open): one descriptor held across all syncs is told
    /// of every error on that file system since the spool started, including one the flusher thread met between syncs.
    /// An error is reported once, to the sync that sees it, which may not be the sync a message that lost pages waits for
    /// (syncfs writes every dirty page, also those of a message written for a later batch): FileSpool therefore fails every
    /// commit whose data was not yet synced when any syncfs failed. syncfs is not trusted alone: ext4 before 6.13 answers it
    /// with 0 once shut down after an error (150c174a6053), so FileSpool still fsyncs queue/ after the rename, which
    /// reports that. Calls are serialised by the caller (GroupCommitter's single loop).
    /// </summary>
    internal sealed class FileSystemSync : IDisposable
    {
        readonly string _path;
        Microsoft.Win32.SafeHandles.SafeFileHandle _directory;
        (uint Major, uint Minor) _device;

        /// <exception cref="IOException">open or statx failed, or <paramref name="directory"/> is no directory.</exception>
        public FileSystemSync(string directory)
        {
            _path = directory;
            (_directory, _device) = OpenDirectory(directory);
        }

        /// <summary>Syncs the whole file system; retried on EINTR.</summary>
        /// <exception cref="IOException">
        /// syncfs failed or reported a write-back error since the last call (errno kept, see StorageErrors), or the directory
        /// is now on another file system (then the descriptor is reopened there, for the commits after this one).
        /// </exception>
        public void Sync()
        {
            // A descriptor syncs the file system it was opened on: if another was mounted over the spool since, files
            // written there would not be covered.
            var now = Stat(null, _path).Device;
            if (now != _device)
            {
                var old = _directory;
                (_directory, _device) = OpenDirectory(_path);
                old.Dispose();
                throw new IOException($"{_path} moved to another file system (device {now.Major}:{now.Minor}) while the spool was in use; commits waiting for this sync are refused, later ones sync the new file system.");
            }

            SyncRetried(_directory, Native.syncfs, "syncfs", _path);
        }

        static (Microsoft.Win32.SafeHandles.SafeFileHandle Handle, (uint Major, uint Minor) Device) OpenDirectory(string path)
        {
            // No O_DIRECTORY: its value differs between architectures (0x10000 on x86-64, O_DIRECT there on arm64).
            var handle = Open(path, ORdOnly | OCloExecLinux, missingIsFile: false);
            try
            {
                var stat = Stat(handle, path);
                const int sIfMt = 0xF000, sIfDir = 0x4000;
                if ((stat.Mode & sIfMt) != sIfDir)
                {
                    throw new IOException($"{path} is not a directory.");
                }

                return (handle, stat.Device);
            }
            catch
            {
                handle.Dispose();
                throw;
            }
        }

        public void Dispose() => _directory.Dispose();
    }

    /// <summary>What the spool needs of statx(2): the file system's device, the mount, and the file type.</summary>
    internal readonly record struct StatxInfo((uint Major, uint Minor) Device, ulong MountId, bool IsMountRoot, int Mode);

    /// <summary>
    /// statx(2) of an open descriptor, or of <paramref name="path"/> (symbolic links followed) when it is null. The layout
    /// of struct statx is the same on every Linux architecture: stx_attributes at octet 8, stx_mode 28, stx_attributes_mask
    /// 56, stx_dev_major 136, stx_dev_minor 140, stx_mnt_id 144 (Linux 5.8, STATX_MNT_ID; STATX_ATTR_MOUNT_ROOT too).
    /// </summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="IOException">statx failed otherwise.</exception>
    internal static StatxInfo Stat(Microsoft.Win32.SafeHandles.SafeFileHandle? handle, string path)
    {
        const int atFdCwd = -100, atEmptyPath = 0x1000, enoent = 2;
        const uint statxBasicStats = 0x7FF, statxMntId = 0x1000;
        const ulong attrMountRoot = 0x2000;
        var buffer = new byte[256];
        var added = false;
        handle?.DangerousAddRef(ref added);
        try
        {
            var rc = handle is null
                ? Native.statx(atFdCwd, path, 0, statxBasicStats | statxMntId, buffer)
                : Native.statx((int)handle.DangerousGetHandle(), "", atEmptyPath, statxBasicStats | statxMntId, buffer);
            if (rc != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                var message = $"statx({path}) failed: {new Win32Exception(errno).Message}";
                throw errno == enoent ? new FileNotFoundException(message, path) { HResult = errno } : StorageErrors.FromErrno(message, errno);
            }
        }
        finally
        {
            if (added)
            {
                handle!.DangerousRelease();
            }
        }

        var mask = BitConverter.ToUInt32(buffer, 0);
        var attributes = BitConverter.ToUInt64(buffer, 8);
        var supported = BitConverter.ToUInt64(buffer, 56);
        return new StatxInfo(
            (BitConverter.ToUInt32(buffer, 136), BitConverter.ToUInt32(buffer, 140)),
            (mask & statxMntId) != 0 ? BitConverter.ToUInt64(buffer, 144) : 0,
            (supported & attrMountRoot) != 0 && (attributes & attrMountRoot) != 0,
            BitConverter.ToUInt16(buffer, 28));
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
        public static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, int mode);

        [DllImport("libc", SetLastError = true)]
        public static extern int ftruncate(int fd, long length);

        [DllImport("libc", SetLastError = true)]
        public static extern int renameat2(int olddirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string oldpath, int newdirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string newpath, uint flags);

        [DllImport("libc", SetLastError = true)]
        public static extern int fsync(int fd);

        [DllImport("libc", SetLastError = true)]
        public static extern int close(int fd);

        [DllImport("libc", SetLastError = true)]
        public static extern int fdatasync(int fd);

        [DllImport("libc", SetLastError = true)]
        public static extern int syncfs(int fd);

        [DllImport("libc", SetLastError = true)]
        public static extern int statx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, [Out] byte[] buffer);
#pragma warning restore CA5392
#pragma warning restore SYSLIB1054
    }
}
