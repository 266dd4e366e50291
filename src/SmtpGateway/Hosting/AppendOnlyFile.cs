namespace SmtpGateway.Hosting;

/// <summary>
/// Appends one line durably to a log shared by several processes (gateway and CLI): a single write() with O_APPEND
/// keeps lines whole when writers interleave, and the fsync makes the line survive a crash. Owner-only mode.
/// </summary>
internal static class AppendOnlyFile
{
    public static void AppendLine(string path, ReadOnlySpan<byte> json)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var line = new byte[json.Length + 1];
        json.CopyTo(line);
        line[^1] = (byte)'\n';
        using var file = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.Append,
            Access = FileAccess.Write,
            Share = FileShare.ReadWrite,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        });
        file.Write(line);
        file.Flush(flushToDisk: true);
    }
}
