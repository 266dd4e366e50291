using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Primitives;
using SmtpGateway.Hosting;
using SmtpGateway.Tests.Fakes;

namespace SmtpGateway.Tests.Configuration;

/// <summary>
/// Reload on change watches the config file alone: edits and atomic replaces reload, while the data directory below the
/// config directory (spool writes, renames, deletes: several per message) neither reloads nor is watched at all.
/// </summary>
public sealed class ConfigFileReloadTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("smtpgw-config-watch");

    string ConfigPath => Path.Combine(_dir.FullName, "gateway.json");

    static string Json(string marker) => $$"""{ "Marker": "{{marker}}" }""";

    /// <summary>As editors and config management save: a temp file in the same directory renamed over the config.</summary>
    void ReplaceAtomically(string marker)
    {
        var temp = Path.Combine(_dir.FullName, ".gateway.json.tmp");
        File.WriteAllText(temp, Json(marker));
        File.Move(temp, ConfigPath, overwrite: true);
    }

    [Fact]
    public async Task The_gateway_sources_reload_on_an_edit_in_place_and_on_an_atomic_replace()
    {
        File.WriteAllText(ConfigPath, Json("1"));
        var configuration = new ConfigurationBuilder().AddGatewaySources(ConfigPath, reloadOnChange: true).Build();
        var reloads = 0;
        using var subscription = ChangeToken.OnChange(configuration.GetReloadToken, () => Interlocked.Increment(ref reloads));
        Assert.Equal("1", configuration["Marker"]);

        File.WriteAllText(ConfigPath, Json("2"));
        await Poll.UntilAsync(() => configuration["Marker"] == "2");

        ReplaceAtomically("3");
        // The provider loads the new value before the reload token's callbacks run: wait for the count itself.
        await Poll.UntilAsync(() => configuration["Marker"] == "3" && Volatile.Read(ref reloads) >= 2);
    }

    [Fact]
    public async Task Files_below_the_config_directory_neither_reload_nor_are_watched()
    {
        var data = Directory.CreateDirectory(Path.Combine(_dir.FullName, "data", "spool"));
        File.WriteAllText(ConfigPath, Json("1"));
        // No debounce: every event that fires the token is a reload of its own, so the count below is exact.
        using var provider = new ConfigFileProvider(ConfigPath, TimeSpan.Zero);
        var configuration = new ConfigurationBuilder().AddJsonFile(source =>
        {
            source.FileProvider = provider;
            source.Path = provider.FileName;
            source.ReloadOnChange = true;
            source.ReloadDelay = 0;
        }).Build();
        var reloads = 0;
        using var subscription = ChangeToken.OnChange(configuration.GetReloadToken, () => Interlocked.Increment(ref reloads));

        // What a spool does, and near misses of a name filter: a file named like the config in a subdirectory, created
        // and renamed to; a new subdirectory and a file in it; a sibling of the config file in its own directory.
        for (var i = 0; i < 20; i++)
        {
            var temp = Path.Combine(data.FullName, $"m{i}.tmp");
            File.WriteAllText(temp, "message");
            File.Move(temp, Path.Combine(data.FullName, $"m{i}"));
            File.Delete(Path.Combine(data.FullName, $"m{i}"));
        }

        File.WriteAllText(Path.Combine(data.FullName, "gateway.json"), Json("x"));
        File.WriteAllText(Path.Combine(data.FullName, "other"), Json("y"));
        File.Move(Path.Combine(data.FullName, "other"), Path.Combine(data.FullName, "gateway.json"), overwrite: true);
        var fresh = Directory.CreateDirectory(Path.Combine(_dir.FullName, "data", "fresh"));
        File.WriteAllText(Path.Combine(fresh.FullName, "gateway.json"), Json("z"));
        File.WriteAllText(Path.Combine(_dir.FullName, "gateway.json.bak"), Json("w"));

        // Events are read in order on one thread and each reload runs there: once the replace below is loaded, every
        // event before it was seen, and any that fired the token was a reload of its own.
        // The provider loads the new value before the reload token's callbacks run, so the count is awaited, not the value.
        ReplaceAtomically("2");
        await Poll.UntilAsync(() => Volatile.Read(ref reloads) >= 1);
        Assert.Equal("2", configuration["Marker"]);
        Assert.Equal(1, Volatile.Read(ref reloads));

        // And the kernel is not even asked: this process has an inotify watch on the config directory, none below it.
        var watched = InotifyWatchedInodes();
        Assert.Contains(Inode(_dir.FullName), watched);
        Assert.DoesNotContain(Inode(Path.Combine(_dir.FullName, "data")), watched);
        Assert.DoesNotContain(Inode(data.FullName), watched);
        Assert.DoesNotContain(Inode(fresh.FullName), watched);
    }

    /// <summary>The inodes every inotify instance of this process watches (/proc/self/fdinfo: "inotify wd:1 ino:hex ...").</summary>
    static HashSet<ulong> InotifyWatchedInodes()
    {
        var inodes = new HashSet<ulong>();
        foreach (var fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget != "anon_inode:inotify")
                {
                    continue;
                }

                foreach (var line in File.ReadLines(Path.Combine("/proc/self/fdinfo", Path.GetFileName(fd))))
                {
                    var at = line.IndexOf(" ino:", StringComparison.Ordinal);
                    if (line.StartsWith("inotify ", StringComparison.Ordinal) && at >= 0)
                    {
                        var hex = line[(at + " ino:".Length)..].Split(' ')[0];
                        inodes.Add(ulong.Parse(hex, NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                    }
                }
            }
            catch (IOException)
            {
                // Another test closed that descriptor meanwhile: not ours.
            }
        }

        return inodes;
    }

    /// <summary>A directory's inode number (.NET has no API for it; coreutils' stat has).</summary>
    static ulong Inode(string path)
    {
        using var stat = Process.Start(new ProcessStartInfo("stat", ["-c", "%i", path]) { RedirectStandardOutput = true })!;
        var output = stat.StandardOutput.ReadToEnd();
        stat.WaitForExit();
        return ulong.Parse(output.Trim(), CultureInfo.InvariantCulture);
    }

    public void Dispose() => _dir.Delete(recursive: true);
}
