using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>
/// A real child process whose stdout and stderr are kept (for the test output on failure).
/// Every child is killed when the test host exits, even if a test forgot to.
/// </summary>
internal sealed class ChildProcess : IDisposable
{
    static readonly ConcurrentDictionary<ChildProcess, byte> s_live = new();

    static ChildProcess()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var child in s_live.Keys)
            {
                child.Kill();
            }
        };
    }

    readonly Process _process;
    readonly StringBuilder _output = new();
    readonly StringBuilder _stdout = new();
    readonly StringBuilder _stderr = new();
    readonly Stopwatch _clock = Stopwatch.StartNew();
    readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    ChildProcess(string name, Process process)
    {
        Name = name;
        _process = process;
    }

    public string Name { get; }

    public int Id => _process.Id;

    public bool HasExited => _exited.Task.IsCompleted;

    public int? ExitCode => HasExited ? _process.ExitCode : null;

    /// <summary>Completes when the process has exited and its output has been read to the end.</summary>
    public Task Exited => _exited.Task;

    /// <param name="standardInput">Written to the process's stdin, which is then closed (null: closed at once). How secrets reach a CLI: never argv.</param>
    /// <param name="keepStandardInputOpen">Leave stdin open after <paramref name="standardInput"/> for <see cref="WriteLineAsync"/> (a conversation over stdio); <see cref="CloseStandardInput"/> ends it.</param>
    public static ChildProcess Start(string name, string fileName, IEnumerable<string> args, string workingDirectory,
        IReadOnlyDictionary<string, string?>? environment = null, Func<string, bool>? keepVariable = null, string? standardInput = null,
        bool keepStandardInputOpen = false)
    {
        var psi = new ProcessStartInfo(fileName)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
        {
            psi.ArgumentList.Add(arg);
        }

        if (keepVariable is not null)
        {
            foreach (var key in psi.Environment.Keys.ToList())
            {
                if (!keepVariable(key))
                {
                    psi.Environment.Remove(key);
                }
            }
        }

        foreach (var (key, value) in environment ?? new Dictionary<string, string?>())
        {
            psi.Environment[key] = value;
        }

        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        var child = new ChildProcess(name, process);
        var streamsOpen = 2;
        void OnLine(string? line, string stream)
        {
            if (line is null)
            {
                if (Interlocked.Decrement(ref streamsOpen) == 0)
                {
                    // Both pipes are at EOF: the process is gone (or closed them); wait for its status.
                    _ = Task.Run(() =>
                    {
                        process.WaitForExit();
                        s_live.TryRemove(child, out _);
                        child.Append($"[{child.Name} exited with status {process.ExitCode}]", "*");
                        child._exited.TrySetResult();
                    });
                }

                return;
            }

            child.Append(line, stream);
            var bare = stream == "out" ? child._stdout : child._stderr;
            lock (bare)
            {
                bare.Append(line).Append('\n');
            }
        }

        process.OutputDataReceived += (_, e) => OnLine(e.Data, "out");
        process.ErrorDataReceived += (_, e) => OnLine(e.Data, "err");
        if (!process.Start())
        {
            throw new InvalidOperationException($"could not start {fileName}");
        }

        s_live[child] = 0;
        if (standardInput is not null)
        {
            try
            {
                process.StandardInput.Write(standardInput);
            }
            catch (IOException)
            {
                // The process exited (or closed stdin) before reading it: its exit status and output say why.
            }
        }

        if (!keepStandardInputOpen)
        {
            process.StandardInput.Close();
        }

        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return child;
    }

    void Append(string line, string stream)
    {
        lock (_output)
        {
            _output.Append(FormattableString.Invariant($"{_clock.Elapsed.TotalSeconds,8:F3} {stream} | ")).AppendLine(line);
        }
    }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>Standard output alone, as lines ending in '\n', without timestamps.</summary>
    public string StandardOutput
    {
        get
        {
            lock (_stdout)
            {
                return _stdout.ToString();
            }
        }
    }

    /// <summary>Standard error alone, as lines ending in '\n', without timestamps.</summary>
    public string StandardError
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    /// <summary>Writes one line to stdin (started with keepStandardInputOpen) and flushes it.</summary>
    public async Task WriteLineAsync(string line)
    {
        await _process.StandardInput.WriteAsync(line + "\n").ConfigureAwait(false);
        await _process.StandardInput.FlushAsync().ConfigureAwait(false);
    }

    /// <summary>Closes stdin (end of input for the process).</summary>
    public void CloseStandardInput() => _process.StandardInput.Close();

    /// <summary>SIGKILL to the process (and its children). No-op when it has already exited.</summary>
    public void Kill()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
            // already gone
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // raced with its exit
        }
    }

    /// <summary>SIGKILL, then wait until it has really exited (so its ports and files are released).</summary>
    public async Task KillAndWaitAsync(TimeSpan timeout)
    {
        Kill();
        await Exited.WaitAsync(timeout).ConfigureAwait(false);
    }

    public void Dispose()
    {
        Kill();
        try
        {
            _exited.Task.Wait(TimeSpan.FromSeconds(10));
        }
        catch (AggregateException)
        {
        }

        s_live.TryRemove(this, out _);
        _process.Dispose();
    }

    /// <summary>Runs a short-lived command to completion.</summary>
    public static async Task<(int ExitCode, string Output)> RunAsync(string fileName, IEnumerable<string> args, string workingDirectory,
        TimeSpan timeout)
    {
        var (exitCode, output, _) = await RunWithStdoutAsync(fileName, args, workingDirectory, timeout).ConfigureAwait(false);
        return (exitCode, output);
    }

    /// <summary>Runs a short-lived command to completion; also returns its bare standard output.</summary>
    public static async Task<(int ExitCode, string Output, string StandardOutput)> RunWithStdoutAsync(string fileName, IEnumerable<string> args,
        string workingDirectory, TimeSpan timeout)
    {
        var result = await RunCapturedAsync(fileName, args, workingDirectory, timeout).ConfigureAwait(false);
        return (result.ExitCode, result.Output, result.StandardOutput);
    }

    /// <summary>Runs a short-lived command to completion; returns its status and its stdout and stderr, each alone and interleaved.</summary>
    public static async Task<ProcessResult> RunCapturedAsync(string fileName, IEnumerable<string> args, string workingDirectory, TimeSpan timeout,
        IReadOnlyDictionary<string, string?>? environment = null, Func<string, bool>? keepVariable = null, string? standardInput = null)
    {
        var argList = args.ToList();
        using var child = Start(Path.GetFileName(fileName), fileName, argList, workingDirectory, environment, keepVariable, standardInput);
        try
        {
            await child.Exited.WaitAsync(timeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            child.Kill();
            throw new TimeoutException($"{fileName} {string.Join(' ', argList)} did not finish within {timeout}:\n{child.Output}");
        }

        return new ProcessResult(child.ExitCode ?? -1, child.Output, child.StandardOutput, child.StandardError);
    }
}

/// <summary>A finished command: exit status, timestamped interleaved output (for logs), bare stdout and bare stderr.</summary>
internal sealed record ProcessResult(int ExitCode, string Output, string StandardOutput, string StandardError)
{
    public override string ToString() => $"exit status {ExitCode}\n{Output}";
}
