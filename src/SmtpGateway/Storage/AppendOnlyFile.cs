using System.ComponentModel;
using System.Runtime.InteropServices;

namespace SmtpGateway.Storage;

/// <summary>
/// A log file shared by several processes (the gateway and the CLI), appended to with O_APPEND. .NET's
/// FileMode.Append does NOT open with O_APPEND: it seeks to the end once and then writes at its own remembered
/// offset, so a long-lived writer overwrites what another process appended meanwhile. With O_APPEND the kernel
/// positions every write(2) at the current end, so whole lines from several writers interleave and none is lost.
/// </summary>
internal sealed class AppendOnlyFile : IDisposable
{
    int _fd;

    AppendOnlyFile(int fd) => _fd = fd;

    public static AppendOnlyFile Open(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var fd = Native.open(path, Native.O_WRONLY | Native.O_CREAT | Native.O_APPEND | Native.O_CLOEXEC, Convert.ToInt32("600", 8));
        if (fd < 0)
        {
            throw new IOException($"cannot open '{path}' for appending", new Win32Exception(Marshal.GetLastPInvokeError()));
        }

        return new AppendOnlyFile(fd);
    }

    /// <summary>One line, one write(2) (looping only on a short write), so the line lands whole at the end.</summary>
    public void Write(ReadOnlySpan<byte> line)
    {
        while (!line.IsEmpty)
        {
            var n = Native.write(_fd, ref MemoryMarshal.GetReference(line), (nint)line.Length);
            if (n < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == 4)
                {
                    continue; // EINTR
                }

                throw new IOException("append failed", new Win32Exception(errno));
            }

            line = line[(int)n..];
        }
    }

    public void Flush()
    {
        if (Native.fsync(_fd) != 0)
        {
            throw new IOException("fsync failed", new Win32Exception(Marshal.GetLastPInvokeError()));
        }
    }

    /// <summary>The file's current size (the end, where the next write lands).</summary>
    public long Length => Native.lseek(_fd, 0, 2 /* SEEK_END */);

    public void Dispose()
    {
        if (_fd >= 0)
        {
            Native.close(_fd);
            _fd = -1;
        }
    }

    /// <summary>Appends one JSON line durably (open, write, fsync, close): for short-lived processes.</summary>
    public static void AppendLine(string path, ReadOnlySpan<byte> json)
    {
        var line = new byte[json.Length + 1];
        json.CopyTo(line);
        line[^1] = (byte)'\n';
        using var file = Open(path);
        file.Write(line);
        file.Flush();
    }

    static class Native
    {
        public const int O_WRONLY = 0x1;
        public const int O_CREAT = 0x40;
        public const int O_APPEND = 0x400;
        public const int O_CLOEXEC = 0x80000;

#pragma warning disable SYSLIB1054 // LibraryImport needs AllowUnsafeBlocks; these signatures marshal without it.
        [DllImport("libc", SetLastError = true)]
        public static extern int open(string path, int flags, int mode);

        [DllImport("libc", SetLastError = true)]
        public static extern nint write(int fd, ref byte buffer, nint count);

        [DllImport("libc", SetLastError = true)]
        public static extern int fsync(int fd);

        [DllImport("libc", SetLastError = true)]
        public static extern long lseek(int fd, long offset, int whence);

        [DllImport("libc", SetLastError = true)]
        public static extern int close(int fd);
#pragma warning restore SYSLIB1054
    }
}
