using System.Diagnostics;
using System.Net;
using System.Text;
using DnsClient;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>
/// A real DNS server for MX routing tests: Debian's unbound on a free loopback port, answering for the zones it is
/// given from local-data only (no recursion, no root hints needed), config written into a private directory and run in
/// the foreground as a child process (<c>unbound -d -c conf</c>). Names in a static local zone that have no data get
/// NXDOMAIN, exactly as from a real authoritative server.
/// </summary>
internal sealed class Unbound : IDisposable
{
    public const string Binary = "/usr/sbin/unbound";

    ChildProcess _process;
    readonly List<ChildProcess> _stopped = [];

    Unbound(ChildProcess process, int port, string configPath)
    {
        _process = process;
        Port = port;
        ConfigPath = configPath;
    }

    public int Port { get; }

    public string ConfigPath { get; }

    /// <summary>"127.0.0.1:port", as Gateway:Dns:Servers takes it.</summary>
    public string Endpoint => $"127.0.0.1:{Port}";

    public string Output => string.Concat(_stopped.Select(p => p.Output + "\n----- (stopped; restarted) -----\n")) + _process.Output;

    /// <summary>Kills the server (a DNS outage for the fault tests); <see cref="RestartAsync"/> brings it back on the same port.</summary>
    public async Task StopAsync()
    {
        await _process.KillAndWaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
    }

    /// <summary>Starts unbound again with the same config and port, and waits until it answers for <paramref name="probe"/>.</summary>
    public async Task RestartAsync(string probe, CancellationToken cancellationToken)
    {
        _stopped.Add(_process);
        _process = ChildProcess.Start("unbound", Binary, ["-d", "-c", ConfigPath], Path.GetDirectoryName(ConfigPath)!);
        await WaitUntilAnsweringAsync(probe, cancellationToken).ConfigureAwait(false);
    }

    /// <param name="workDirectory">Where the config goes (a subdirectory "unbound" is made).</param>
    /// <param name="zones">Static local zones, e.g. "test.".</param>
    /// <param name="records">local-data records in zone-file syntax, e.g. "a.test. 300 IN MX 10 mx.a.test.".</param>
    /// <param name="probe">A name that has an A record, asked until unbound answers.</param>
    /// <param name="cancellationToken">Bounds the start.</param>
    public static async Task<Unbound> StartAsync(string workDirectory, IEnumerable<string> zones, IEnumerable<string> records, string probe,
        CancellationToken cancellationToken)
    {
        if (!File.Exists(Binary))
        {
            throw new InvalidOperationException($"{Binary} is missing: apt-get install unbound (./test.sh does)");
        }

        var directory = Path.Combine(workDirectory, "unbound");
        Directory.CreateDirectory(directory);
        for (var attempt = 0; ; attempt++)
        {
            var port = FreePort.Next();
            var config = new StringBuilder()
                .AppendLine("server:")
                .AppendLine($"  interface: 127.0.0.1@{port}")
                .AppendLine($"  port: {port}")
                .AppendLine("  do-daemonize: no")
                .AppendLine("  username: \"\"")
                .AppendLine("  chroot: \"\"")
                .AppendLine($"  directory: \"{directory}\"")
                .AppendLine("  pidfile: \"\"")
                .AppendLine("  use-syslog: no")
                .AppendLine("  logfile: \"\"")
                .AppendLine("  verbosity: 1")
                .AppendLine("  num-threads: 1")
                .AppendLine("  do-ip6: no")
                .AppendLine("  so-reuseport: no")
                .AppendLine("  access-control: 127.0.0.0/8 allow")
                .AppendLine("  do-not-query-localhost: no")
                .AppendLine("  module-config: \"iterator\"")
                .AppendLine("  auto-trust-anchor-file: \"\"");
            foreach (var zone in zones)
            {
                config.AppendLine($"  local-zone: \"{zone}\" static");
            }

            foreach (var record in records)
            {
                config.AppendLine($"  local-data: \"{record}\"");
            }

            config.AppendLine("remote-control:").AppendLine("  control-enable: no");
            var path = Path.Combine(directory, "unbound.conf");
            await File.WriteAllTextAsync(path, config.ToString(), cancellationToken).ConfigureAwait(false);

            var process = ChildProcess.Start("unbound", Binary, ["-d", "-c", path], directory);
            var unbound = new Unbound(process, port, path);
            try
            {
                await unbound.WaitUntilAnsweringAsync(probe, cancellationToken).ConfigureAwait(false);
                return unbound;
            }
            catch (Exception) when (attempt < 3 && process.HasExited)
            {
                // Lost a race for the port; take another.
                unbound.Dispose();
            }
        }
    }

    async Task WaitUntilAnsweringAsync(string probe, CancellationToken cancellationToken)
    {
        var client = new LookupClient(new LookupClientOptions(new IPEndPoint(IPAddress.Loopback, Port))
        {
            UseCache = false, Timeout = TimeSpan.FromMilliseconds(500), Retries = 0, ThrowDnsErrors = false,
        });
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"unbound exited:\n{_process.Output}");
            }

            try
            {
                var response = await client.QueryAsync(probe, QueryType.A, cancellationToken: cancellationToken).ConfigureAwait(false);
                if (response.Answers.ARecords().Any())
                {
                    return;
                }
            }
            catch (DnsResponseException) when (clock.Elapsed < TimeSpan.FromSeconds(20))
            {
            }

            if (clock.Elapsed > TimeSpan.FromSeconds(20))
            {
                throw new TimeoutException($"unbound did not answer for {probe}:\n{_process.Output}");
            }

            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }
    }

    public void Dispose()
    {
        _process.Dispose();
        foreach (var stopped in _stopped)
        {
            stopped.Dispose();
        }
    }
}
