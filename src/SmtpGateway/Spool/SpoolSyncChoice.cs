using SmtpGateway.Configuration;

namespace SmtpGateway.Spool;

/// <summary>
/// Resolves <see cref="SpoolSync.Auto"/>. syncfs(2) writes out every dirty file on the spool's file system, so it is chosen
/// only where the spool has a file system to itself: the spool directory, or the gateway's data directory, is the mount
/// point of a whole file system (mountinfo root "/", so not a bind mount of a directory of a shared one, as a container
/// volume usually is). Anywhere else a commit could wait for other programs' writes, and each file is synced on its own.
/// </summary>
internal static class SpoolSyncChoice
{
    /// <summary>The mode and, for the start-up log line, why.</summary>
    public readonly record struct Choice(SpoolSync Sync, string Reason);

    public static Choice Resolve(SpoolSync configured, string spoolDirectory, string dataDirectory)
    {
        if (configured != SpoolSync.Auto)
        {
            return new(configured, "configured");
        }

        if (!SpoolSyncSupport.FileSystemReportsErrors)
        {
            return new(SpoolSync.File, $"syncfs(2) does not report write-back errors on {Environment.OSVersion}");
        }

        string mountinfo;
        try
        {
            mountinfo = File.ReadAllText("/proc/self/mountinfo");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return new(SpoolSync.File, $"/proc/self/mountinfo is unreadable ({ex.GetType().Name}), so it is unknown whether the spool has a file system to itself");
        }

        return Decide(mountinfo, spoolDirectory, dataDirectory);
    }

    /// <summary><see cref="SpoolSync.Auto"/> on a kernel whose syncfs reports errors, given the mount table.</summary>
    public static Choice Decide(string mountinfo, string spoolDirectory, string dataDirectory)
    {
        var mount = SpoolMount(mountinfo, spoolDirectory);
        if (mount is null)
        {
            return new(SpoolSync.File, "the spool's mount is not listed in /proc/self/mountinfo");
        }

        var own = mount.Root == "/" && (SamePath(mount.Point, spoolDirectory) || SamePath(mount.Point, dataDirectory));
        return own
            ? new(SpoolSync.FileSystem, $"the spool's file system ({mount.Type}) is mounted at {mount.Point} for the gateway alone")
            : new(SpoolSync.File, $"the spool shares the file system mounted at {mount.Point} with other directories; give the data or spool directory a file system of its own to sync once per batch");
    }

    /// <summary>One line of /proc/self/mountinfo (proc(5)): the directory of the file system mounted (root), where, and its type.</summary>
    public sealed record Mount(string Root, string Point, string Type);

    /// <summary>
    /// The mount that holds <paramref name="directory"/>: the one with the longest mount point that is the directory or
    /// one of its ancestors; of several at one point, the last listed, which is the one on top.
    /// </summary>
    public static Mount? SpoolMount(string mountinfo, string directory)
    {
        var path = Trim(directory);
        Mount? best = null;
        foreach (var line in mountinfo.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw": optional fields end at " - ".
            var fields = line.Split(' ');
            var dash = Array.IndexOf(fields, "-");
            if (fields.Length < 5 || dash < 6 || dash + 1 >= fields.Length)
            {
                continue;
            }

            var point = Trim(Unescape(fields[4]));
            var under = point == "/" || path == point || path.StartsWith(point + "/", StringComparison.Ordinal);
            if (under && (best is null || point.Length >= best.Point.Length))
            {
                best = new Mount(Unescape(fields[3]), point, fields[dash + 1]);
            }
        }

        return best;
    }

    static bool SamePath(string a, string b) => string.Equals(Trim(a), Trim(b), StringComparison.Ordinal);

    static string Trim(string path) => path.Length > 1 ? path.TrimEnd('/') : path;

    /// <summary>mountinfo writes space, tab, newline and backslash as octal escapes (\040, \011, \012, \134).</summary>
    static string Unescape(string field) =>
        field.Contains('\\', StringComparison.Ordinal)
            ? System.Text.RegularExpressions.Regex.Replace(field, @"\\([0-7]{3})", m => ((char)Convert.ToInt32(m.Groups[1].Value, 8)).ToString())
            : field;
}
