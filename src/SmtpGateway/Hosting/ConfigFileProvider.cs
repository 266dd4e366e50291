using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.Primitives;

namespace SmtpGateway.Hosting;

/// <summary>
/// The file provider of the JSON configuration source when it reloads on change: reads through a
/// <see cref="PhysicalFileProvider"/> of the config file's directory, but watches that one file only.
/// </summary>
/// <remarks>
/// Why not the default: <see cref="PhysicalFileProvider"/> watches its root directory recursively
/// (<see cref="FileSystemWatcher.IncludeSubdirectories"/> is always on), and operators commonly keep the data directory
/// below the config directory. Then every spool write, rename and delete (several per message) is an inotify event the
/// watcher thread reads and matches against the config file name, only to throw it away: 1.33 CPU ms per message
/// became 1.7. Here one non-recursive <see cref="FileSystemWatcher"/> with <see cref="FileSystemWatcher.Filter"/> set
/// to the file name: the kernel reports no event of a subdirectory's contents at all. An edit in place (write) and an
/// atomic replace (rename over the file, as editors and config management do) both fire the token.
/// <para>
/// Events are debounced: the token fires once the file has been quiet for <see cref="DefaultDebounce"/>, so one save
/// (truncate, several writes, or create + rename) is one reload, read after the writer finished. This replaces the JSON
/// source's <c>ReloadDelay</c> (a sleep after the first event, which lets the events of the same save trigger a second
/// reload), so the source is given a delay of 0.
/// </para>
/// </remarks>
public sealed class ConfigFileProvider : IFileProvider, IDisposable
{
    /// <summary>The JSON source's own default <c>ReloadDelay</c>, measured from the last event instead of the first.</summary>
    public static readonly TimeSpan DefaultDebounce = TimeSpan.FromMilliseconds(250);

    readonly PhysicalFileProvider _files;
    readonly string _fileName;
    readonly TimeSpan _debounce;
    readonly Lock _lock = new();
    FileSystemWatcher? _watcher;
    ITimer? _timer;
    CancellationTokenSource _changed = new();
    bool _disposed;

    /// <param name="path">The config file's full path.</param>
    public ConfigFileProvider(string path)
        : this(path, DefaultDebounce)
    {
    }

    /// <param name="path">The config file's full path.</param>
    /// <param name="debounce">
    /// Quiet time before the token fires. <see cref="TimeSpan.Zero"/>: no debounce, the token fires on the watcher's
    /// thread as each event is read, so one event is one reload (tests count reloads exactly with it).
    /// </param>
    internal ConfigFileProvider(string path, TimeSpan debounce)
    {
        var full = Path.GetFullPath(path);
        _files = new PhysicalFileProvider(Path.GetDirectoryName(full) ?? throw new ArgumentException($"'{path}' has no directory.", nameof(path)));
        _fileName = Path.GetFileName(full);
        _debounce = debounce;
    }

    /// <summary>The file name inside the provider's root: the JSON source's <c>Path</c>.</summary>
    public string FileName => _fileName;

    public IFileInfo GetFileInfo(string subpath) => _files.GetFileInfo(subpath);

    public IDirectoryContents GetDirectoryContents(string subpath) => _files.GetDirectoryContents(subpath);

    /// <summary>A token for the config file itself; any other filter is never watched (nothing here asks for one).</summary>
    public IChangeToken Watch(string filter)
    {
        if (!string.Equals(filter.TrimStart('/'), _fileName, StringComparison.Ordinal))
        {
            return NullChangeToken.Singleton;
        }

        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            // Started on the first Watch: CLI commands read the same file without reloadOnChange and never get a watcher.
            _watcher ??= StartWatcher();
            if (_changed.IsCancellationRequested)
            {
                // The fired source is not disposed: registrations on its token may still be running or being disposed.
                _changed = new CancellationTokenSource();
            }

            return new CancellationChangeToken(_changed.Token);
        }
    }

    FileSystemWatcher StartWatcher()
    {
        // The provider's root ends with a separator; "/" itself (a config file in the root directory) must stay "/".
        var root = _files.Root.Length > 1 ? _files.Root.TrimEnd('/') : _files.Root;
        var watcher = new FileSystemWatcher(root, _fileName)
        {
            IncludeSubdirectories = false,
            NotifyFilter = NotifyFilters.FileName | NotifyFilters.LastWrite | NotifyFilters.Size,
        };
        watcher.Changed += (_, _) => OnEvent();
        watcher.Created += (_, _) => OnEvent();
        watcher.Deleted += (_, _) => OnEvent();
        // Raised when the old or the new name matches the filter: a temp file renamed over the config is one.
        watcher.Renamed += (_, _) => OnEvent();
        // The kernel queue overflowed: an event of the file may be among those lost, so reload to be sure.
        watcher.Error += (_, _) => OnEvent();
        watcher.EnableRaisingEvents = true;
        return watcher;
    }

    void OnEvent()
    {
        if (_debounce == TimeSpan.Zero)
        {
            Fire();
            return;
        }

        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            // Each event pushes the deadline back: the token fires once the writer is done.
            _timer ??= TimeProvider.System.CreateTimer(_ => Fire(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            _timer.Change(_debounce, Timeout.InfiniteTimeSpan);
        }
    }

    void Fire()
    {
        CancellationTokenSource changed;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            changed = _changed;
        }

        try
        {
            // Outside the lock: the JSON provider's callback reloads the file and calls Watch again on this thread.
            changed.Cancel();
        }
        catch (AggregateException)
        {
            // A reload that throws (a half-valid edit) must not take the watcher's or the timer's thread down, as with
            // PhysicalFilesWatcher, which swallows the same; the consumer validates the reloaded configuration and keeps
            // its last good state (TenantDirectoryService).
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _watcher?.Dispose();
            _timer?.Dispose();
        }

        _files.Dispose();
    }
}
