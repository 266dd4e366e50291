namespace SmtpGateway.Storage;

/// <summary>
/// An exclusive lock shared with every other process using the same data directory (the gateway and the CLI): .NET takes
/// flock(2) on the file for FileShare.None on Unix, and the kernel drops it when the holder dies. Held only for a
/// read-modify-write of the file it guards.
/// </summary>
internal static class CrossProcessLock
{
    /// <summary>Real pause between attempts to take the lock.</summary>
    static readonly TimeSpan RetryPause = TimeSpan.FromMilliseconds(20);

    /// <summary>
    /// Opens (creating, mode 0600) and locks <paramref name="path"/>; dispose the stream to release. Throws the last
    /// <see cref="IOException"/> once <paramref name="timeout"/> has passed on <paramref name="time"/>.
    /// </summary>
    public static FileStream Acquire(string path, TimeSpan timeout, TimeProvider time)
    {
        // The holder is another process working in real time and .NET has no flock(2) with a timeout, so the pause is a
        // real Thread.Sleep (a TimeProvider timer would never fire under a test's frozen clock). The deadline is on the
        // injected clock like every other limit, and the attempts are bounded too, so a frozen clock cannot wait forever.
        var start = time.GetTimestamp();
        var attemptsLeft = (int)Math.Max(1, timeout / RetryPause);
        while (true)
        {
            try
            {
                return new FileStream(path, new FileStreamOptions
                {
                    Mode = FileMode.OpenOrCreate,
                    Access = FileAccess.ReadWrite,
                    Share = FileShare.None,
                    UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
                });
            }
            catch (IOException) when (--attemptsLeft > 0 && time.GetElapsedTime(start) < timeout)
            {
                Thread.Sleep(RetryPause);
            }
        }
    }
}
