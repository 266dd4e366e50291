namespace SmtpGateway.Spool;

/// <summary>
/// Tells a full file system apart from other I/O failures, so that the client hears RFC 3463 4.3.1 "mail system full"
/// (452, RFC 5321 section 4.2.2 "insufficient system storage") rather than a generic 451: both are transient, but
/// an operator (and a client's log) should see that the disk, not the gateway, is the problem.
/// </summary>
public static class StorageErrors
{
    // On Unix, .NET puts the raw errno in IOException.HResult (Interop.GetExceptionForIoErrno); Linux values.
    const int Enospc = 28;
    const int Edquot = 122;

    // On Windows, HRESULT_FROM_WIN32(ERROR_DISK_FULL / ERROR_HANDLE_DISK_FULL).
    const int WindowsDiskFull = unchecked((int)0x80070070);
    const int WindowsHandleDiskFull = unchecked((int)0x80070027);

    /// <summary>True when <paramref name="exception"/> or one of its inner exceptions is ENOSPC or EDQUOT.</summary>
    public static bool IsFull(Exception? exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is IOException { HResult: Enospc or Edquot or WindowsDiskFull or WindowsHandleDiskFull })
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The IOException .NET would make for <paramref name="errno"/> (errno in HResult), for libc calls made directly.</summary>
    internal static IOException FromErrno(string message, int errno) => new(message, errno);
}
