namespace SmtpGateway.Tests.Hsm;

/// <summary>PIN files as the gateway accepts them: mode 0600 in a directory of mode 0700 (File.WriteAllText would make 0644).</summary>
internal static class TestPinFiles
{
    const UnixFileMode Directory0700 = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    public static string Write(string path, string pin, UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(directory, Directory0700);
        File.SetUnixFileMode(directory, Directory0700);
        File.WriteAllText(path, pin);
        File.SetUnixFileMode(path, mode);
        return path;
    }
}
