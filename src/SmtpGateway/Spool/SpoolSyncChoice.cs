using SmtpGateway.Configuration;

namespace SmtpGateway.Spool;

/// <summary>
/// Resolves <see cref="SpoolSync.Auto"/>. syncfs(2) writes out every dirty file on the spool's file system, so it is chosen
/// only where the spool looks like it has a file system to itself: the spool directory, or the data directory holding
/// it, is the root of a mount (statx STATX_ATTR_MOUNT_ROOT), that mount shows a whole file system (mountinfo root "/",
/// not a directory within a shared one, as a container volume usually is), and the type is one whose syncfs writes and
/// flushes like fsync (ext4, xfs, btrfs; FUSE before 5.15 and overlayfs forward no syncfs, tmpfs has nothing to sync).
/// The mount is found by its id (statx STATX_MNT_ID), so symbolic links and mounts hidden by later ones do not mislead.
/// </summary>
internal static class SpoolSyncChoice
{
    /// <summary>File system types whose syncfs writes every dirty page and flushes the device, as fsync would.</summary>
    static readonly string[] SyncingTypes = ["ext4", "xfs", "btrfs"];

    /// <summary>The mode and, for the start-up log line, why; <paramref name="Overruled"/> when a configured FileSystem could not be used.</summary>
    public readonly record struct Choice(SpoolSync Sync, string Reason, bool Overruled = false);

    /// <summary>Where a directory is: the id of its mount, and whether it is that mount's root (false when it does not exist yet).</summary>
    public readonly record struct Place(ulong MountId, bool IsMountRoot);

    public static Choice Resolve(SpoolSync configured, string spoolDirectory, string dataDirectory)
    {
        if (configured == SpoolSync.File)
        {
            return new(configured, "configured");
        }

        // A configured FileSystem that cannot work here falls back to File, loudly: never a sync that does not sync.
        var overruled = configured == SpoolSync.FileSystem;
        if (!SpoolSyncSupport.FileSystemReportsErrors)
        {
            return new(SpoolSync.File, $"syncfs(2) does not report every error fsync(2) would on {Environment.OSVersion}", overruled);
        }

        Place spool, data;
        string mountinfo;
        try
        {
            spool = Locate(spoolDirectory);
            data = Locate(dataDirectory);
            mountinfo = File.ReadAllText("/proc/self/mountinfo");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or EntryPointNotFoundException)
        {
            // EntryPointNotFoundException: a C library without statx (glibc before 2.28), e.g. an old image on a new kernel.
            return new(SpoolSync.File, $"could not tell the spool's file system ({ex.GetType().Name})", overruled);
        }

        if (!overruled)
        {
            return Decide(mountinfo, spool, data);
        }

        var mount = Find(mountinfo, spool.MountId);
        return mount is not null && SyncingTypes.Contains(mount.Type, StringComparer.Ordinal)
            ? new(SpoolSync.FileSystem, $"configured; the spool's file system ({mount.Type}) is mounted at {mount.Point}")
            : new(SpoolSync.File, $"configured FileSystem, but the spool's file system is {mount?.Type ?? "not in /proc/self/mountinfo"}, whose syncfs may not write and flush as fsync does (only {string.Join(", ", SyncingTypes)})", true);
    }

    /// <summary>The mount of <paramref name="directory"/>, or of its nearest existing ancestor when it is not made yet.</summary>
    static Place Locate(string directory)
    {
        var path = Path.GetFullPath(directory);
        var exists = true;
        while (true)
        {
            try
            {
                var stat = DurableFile.Stat(null, path);
                return new Place(stat.MountId, exists && stat.IsMountRoot);
            }
            catch (FileNotFoundException) when (Path.GetDirectoryName(path) is { } parent)
            {
                path = parent;
                exists = false;
            }
        }
    }

    /// <summary><see cref="SpoolSync.Auto"/> on a kernel whose syncfs reports errors, given the mount table and where the directories are.</summary>
    public static Choice Decide(string mountinfo, Place spool, Place data)
    {
        var mount = Find(mountinfo, spool.MountId);
        if (mount is null)
        {
            return new(SpoolSync.File, $"mount {spool.MountId} of the spool is not in /proc/self/mountinfo");
        }

        var dedicated = spool.IsMountRoot || (data.IsMountRoot && data.MountId == spool.MountId);
        if (!dedicated)
        {
            return new(SpoolSync.File, $"the spool shares the file system mounted at {mount.Point} with other directories; mount one of its own at the data or spool directory to sync once per batch");
        }

        if (mount.Root != "/")
        {
            return new(SpoolSync.File, $"{mount.Point} mounts the directory {mount.Root} of a file system that holds more (a bind mount or volume)");
        }

        if (!SyncingTypes.Contains(mount.Type, StringComparer.Ordinal))
        {
            return new(SpoolSync.File, $"the spool's file system at {mount.Point} is {mount.Type}, not one of {string.Join(", ", SyncingTypes)}");
        }

        return new(SpoolSync.FileSystem, $"the spool's file system ({mount.Type}) is mounted at {mount.Point} for the gateway alone");
    }

    /// <summary>One line of /proc/self/mountinfo (proc(5)): the directory of the file system mounted (root), where, and its type.</summary>
    public sealed record Mount(ulong Id, string Root, string Point, string Type);

    /// <summary>The mountinfo line of mount <paramref name="id"/> (its first field), or null.</summary>
    public static Mount? Find(string mountinfo, ulong id)
    {
        foreach (var line in mountinfo.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw": optional fields end at " - ".
            var fields = line.Split(' ');
            var dash = Array.IndexOf(fields, "-");
            if (fields.Length < 5 || dash < 6 || dash + 1 >= fields.Length || !ulong.TryParse(fields[0], System.Globalization.CultureInfo.InvariantCulture, out var lineId) || lineId != id)
            {
                continue;
            }

            return new Mount(lineId, Unescape(fields[3]), Unescape(fields[4]), fields[dash + 1]);
        }

        return null;
    }

    /// <summary>mountinfo writes space, tab, newline and backslash as octal escapes (\040, \011, \012, \134).</summary>
    static string Unescape(string field) =>
        field.Contains('\\', StringComparison.Ordinal)
            ? System.Text.RegularExpressions.Regex.Replace(field, @"\\([0-7]{3})", m => ((char)Convert.ToInt32(m.Groups[1].Value, 8)).ToString())
            : field;
}
