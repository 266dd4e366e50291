using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>What a <see cref="PostfixInstance"/> accepts, bounces and relays.</summary>
internal sealed record PostfixInstanceOptions
{
    /// <summary>The 127.0.0.1 port its smtpd listens on; 0 picks a free one (and retries when another process takes it first).</summary>
    public int SmtpPort { get; init; }

    /// <summary>Where mail for <see cref="RelayDomains"/> (in particular the DSNs Postfix sends to those senders) goes.</summary>
    public string RelayHost { get; init; } = "127.0.0.1";

    /// <summary>Port on <see cref="RelayHost"/>, e.g. the gateway's listener or an smtp-sink.</summary>
    public required int RelayPort { get; init; }

    /// <summary>
    /// Recipient domains relayed to <see cref="RelayHost"/>:<see cref="RelayPort"/>, e.g. "bounces.tenant-a.example": put
    /// the test's sender (envelope from) in one of them, and Postfix's DSN for it goes there.
    /// </summary>
    public required IReadOnlyList<string> RelayDomains { get; init; }

    /// <summary>
    /// Recipient domains bounced right after they are accepted (listed in the transport map as <c>error:</c>). Every other
    /// domain that is not in <see cref="RelayDomains"/> is bounced too (default_transport), so nothing ever leaves the machine.
    /// </summary>
    public IReadOnlyList<string> BouncedDomains { get; init; } = [];

    /// <summary>The DSN Status of bounced recipients (5.x.y).</summary>
    public string BounceStatus { get; init; } = "5.1.1";

    /// <summary>The text of the bounce (the DSN's Diagnostic-Code: "X-Postfix; &lt;text&gt;").</summary>
    public string BounceText { get; init; } = "mailbox unavailable";

    /// <summary>Extra main.cf parameters; they replace the generated value of the same name.</summary>
    public IReadOnlyDictionary<string, string> MainCf { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// STARTTLS on smtpd with this certificate and key (PEM), e.g. <see cref="TestCertificate"/>'s; null: no TLS.
    /// </summary>
    public PostfixTls? Tls { get; init; }

    /// <summary>
    /// The one Cyrus SASL (sasldb2) user of an authenticating smarthost; requires <see cref="Tls"/>. Then AUTH PLAIN and
    /// LOGIN are offered only after STARTTLS (smtpd_tls_auth_only), and only an authenticated client may relay
    /// (smtpd_relay_restrictions = permit_sasl_authenticated, reject): an unauthenticated or wrongly authenticated
    /// client gets no further than RCPT, whatever its address.
    /// </summary>
    public PostfixSaslUser? Sasl { get; init; }
}

/// <summary>smtpd's certificate and key (PEM files; copied into the instance's config directory).</summary>
internal sealed record PostfixTls(string CertificatePath, string KeyPath);

/// <summary>A SASL user in the instance's sasldb2 (realm <see cref="PostfixInstance.Hostname"/>, which smtpd adds to a bare name).</summary>
internal sealed record PostfixSaslUser(string User, string Password)
{
    // Never print the password, whatever formats this record.
    public override string ToString() => $"PostfixSaslUser {{ User = {User} }}";
}

/// <summary>
/// A private, throwaway Postfix (Debian package "postfix"): its own main.cf, master.cf, queue, data directory and log
/// file in a temporary directory, smtpd on 127.0.0.1 only. It accepts mail from 127.0.0.0/8 and bounces every recipient
/// right away with the error(8) transport, so its bounce(8) daemon writes a real Postfix DSN (multipart/report, from
/// MAILER-DAEMON, null sender), which its smtp(8) client relays to the test's host:port. No DNS, no syslog, no chroot;
/// the system's /etc/postfix and /var/spool/postfix are never touched.
/// <para>
/// As a tenant's authenticating smarthost (<see cref="PostfixInstanceOptions.Tls"/> and <see cref="PostfixInstanceOptions.Sasl"/>):
/// STARTTLS with the test certificate, Cyrus SASL over a private sasldb2 with one user, AUTH only after STARTTLS, relay
/// only when authenticated; mail for <see cref="PostfixInstanceOptions.RelayDomains"/> goes on to the test's smtp-sink,
/// and the log names the SASL user of each accepted message (<see cref="WaitForSaslLoginAsync"/>).
/// </para>
/// <para>
/// Runs as <c>postfix -c &lt;dir&gt; start-fg</c>, a child process of the test (its master and daemons are our
/// descendants, killed with the test host if all else fails); <see cref="DisposeAsync"/> runs <c>postfix -c &lt;dir&gt; stop</c>,
/// SIGKILLs whatever is left of the master's session, and deletes the directory. Needs root (the master runs as root,
/// the daemons as user postfix, group postdrop).
/// </para>
/// </summary>
internal sealed partial class PostfixInstance : IAsyncDisposable
{
    public const string PostfixBinary = "/usr/sbin/postfix";
    public const string PostkickBinary = "/usr/sbin/postkick";
    public const string SaslPasswd2Binary = "/usr/sbin/saslpasswd2";
    public const string Hostname = "postfix.functional.test";

    /// <summary>Where Debian puts master and the daemons (postconf daemon_directory).</summary>
    const string DaemonDirectory = "/usr/lib/postfix/sbin";

    static readonly ConcurrentDictionary<PostfixInstance, byte> s_live = new();

    static PostfixInstance()
    {
        // Last resort when a test forgets DisposeAsync: no master or daemon outlives the test host.
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var instance in s_live.Keys)
            {
                instance._process?.Kill();
                KillSession(instance.MasterPid);
            }
        };
    }

    ChildProcess? _process;
    bool _disposed;

    PostfixInstance(string workDirectory, PostfixInstanceOptions options)
    {
        WorkDirectory = workDirectory;
        Options = options;
    }

    public PostfixInstanceOptions Options { get; }

    /// <summary>The temporary directory holding everything below (deleted by <see cref="DisposeAsync"/> unless <see cref="KeepDirectory"/>).</summary>
    public string WorkDirectory { get; }

    /// <summary>main.cf, master.cf and the transport map (<c>postfix -c</c> this).</summary>
    public string ConfigDirectory => Path.Combine(WorkDirectory, "etc");

    public string QueueDirectory => Path.Combine(WorkDirectory, "queue");

    public string DataDirectory => Path.Combine(WorkDirectory, "data");

    /// <summary>Cyrus SASL's smtpd.conf and the sasldb2 (when <see cref="PostfixInstanceOptions.Sasl"/> is set).</summary>
    public string SaslDirectory => Path.Combine(ConfigDirectory, "sasl");

    public string SaslDatabasePath => Path.Combine(SaslDirectory, "sasldb2");

    /// <summary>maillog_file: every line every Postfix program logged.</summary>
    public string LogPath => Path.Combine(WorkDirectory, "maillog");

    /// <summary>The 127.0.0.1 port smtpd listens on.</summary>
    public int Port { get; private set; }

    /// <summary>The master daemon's process id (also its session id: it calls setsid), 0 before it ran.</summary>
    public int MasterPid { get; private set; }

    /// <summary>Keep the directory at dispose (for a failed test's post-mortem).</summary>
    public bool KeepDirectory { get; set; }

    /// <summary>The Postfix log so far ("" before the first line).</summary>
    public string Log
    {
        get
        {
            try
            {
                using var file = new FileStream(LogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                using var reader = new StreamReader(file, Encoding.UTF8);
                return reader.ReadToEnd();
            }
            catch (FileNotFoundException)
            {
                return "";
            }
            catch (DirectoryNotFoundException)
            {
                return "";
            }
        }
    }

    /// <summary>What <c>postfix start-fg</c> (postfix-script and master) printed.</summary>
    public string Output => _process?.Output ?? "";

    /// <summary>For a failed test's output: where it lives, the Postfix log, and the start-fg output.</summary>
    public string Diagnostics() =>
        $"----- postfix instance {WorkDirectory} (smtpd 127.0.0.1:{Port}, master pid {MasterPid}): {LogPath} -----\n{Log}" +
        $"----- postfix -c {ConfigDirectory} start-fg -----\n{Output}";

    /// <summary>Writes the configuration, starts Postfix and waits until its smtpd answers with its own banner.</summary>
    public static async Task<PostfixInstance> StartAsync(PostfixInstanceOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!File.Exists(PostfixBinary))
        {
            throw new InvalidOperationException($"{PostfixBinary} is missing: apt-get install postfix (./test.sh does)");
        }

        if (!Environment.IsPrivilegedProcess)
        {
            throw new InvalidOperationException("a private Postfix instance needs root (its master runs as root, its daemons as user postfix)");
        }

        Validate(options);
        var dir = Directory.CreateTempSubdirectory("smtpgw-ft-postfix-").FullName;
        // Root-owned and not group/other writable, as postfix-script wants for the queue's parents; readable for the
        // daemons (user postfix), which use absolute paths below it.
        File.SetUnixFileMode(dir, (UnixFileMode)Convert.ToInt32("755", 8));
        var instance = new PostfixInstance(dir, options);
        s_live[instance] = 0;
        try
        {
            Directory.CreateDirectory(instance.ConfigDirectory);
            // The queue directory must exist and belong to root; post-install (run by "postfix start") creates its
            // subdirectories and the data directory with the right owners. A pre-made data directory owned by root
            // makes the master fail ("open lock file .../master.lock: Permission denied").
            Directory.CreateDirectory(instance.QueueDirectory);
            File.SetUnixFileMode(instance.QueueDirectory, (UnixFileMode)Convert.ToInt32("755", 8));
            for (var attempt = 0; ; attempt++)
            {
                instance.Port = options.SmtpPort != 0 ? options.SmtpPort : FreePort.Next();
                await instance.WriteConfigurationAsync(cancellationToken).ConfigureAwait(false);
                instance._process = ChildProcess.Start("postfix", PostfixBinary, ["-c", instance.ConfigDirectory, "start-fg"], dir);
                try
                {
                    await instance.WaitUntilReadyAsync(TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
                    return instance;
                }
                catch (InvalidOperationException) when (options.SmtpPort == 0 && attempt < 3 && instance._process.HasExited
                    && instance.Log.Contains("Address already in use", StringComparison.Ordinal))
                {
                    // Lost a race for the port; take another.
                    instance._process.Dispose();
                }
            }
        }
        catch
        {
            await instance.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    static void Validate(PostfixInstanceOptions options)
    {
        if (!BounceStatusPattern().IsMatch(options.BounceStatus))
        {
            throw new ArgumentException($"BounceStatus must be a permanent DSN status (5.x.y), not \"{options.BounceStatus}\"", nameof(options));
        }

        if (options.BounceText.Length == 0 || options.BounceText.Any(char.IsControl))
        {
            throw new ArgumentException("BounceText must be one non-empty line", nameof(options));
        }

        foreach (var domain in options.RelayDomains.Concat(options.BouncedDomains).Append(options.RelayHost))
        {
            if (!DomainPattern().IsMatch(domain))
            {
                throw new ArgumentException($"not a plain domain or address: \"{domain}\"", nameof(options));
            }
        }

        if (options.RelayDomains.Count == 0)
        {
            throw new ArgumentException("RelayDomains is empty: the DSNs would have nowhere to go", nameof(options));
        }

        if (options.Sasl is { } sasl)
        {
            if (options.Tls is null)
            {
                throw new ArgumentException("Sasl needs Tls: AUTH is offered only after STARTTLS (smtpd_tls_auth_only)", nameof(options));
            }

            if (!DomainPattern().IsMatch(sasl.User) || sasl.Password.Length == 0 || sasl.Password.Any(char.IsControl))
            {
                throw new ArgumentException($"Sasl: the user must be a plain name and the password one non-empty line ({sasl})", nameof(options));
            }
        }
    }

    async Task WriteConfigurationAsync(CancellationToken cancellationToken)
    {
        var options = Options;
        var error = $"error:{options.BounceStatus} {options.BounceText}";
        var transport = new StringBuilder();
        foreach (var domain in options.RelayDomains)
        {
            transport.Append(CultureInfo.InvariantCulture, $"{domain} smtp:[{options.RelayHost}]:{options.RelayPort}\n");
        }

        foreach (var domain in options.BouncedDomains)
        {
            transport.Append(CultureInfo.InvariantCulture, $"{domain} {error}\n");
        }

        var transportPath = Path.Combine(ConfigDirectory, "transport");
        await File.WriteAllTextAsync(transportPath, transport.ToString(), cancellationToken).ConfigureAwait(false);

        var main = new OrderedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["compatibility_level"] = "3.6",
            ["queue_directory"] = QueueDirectory,
            ["data_directory"] = DataDirectory,
            ["mail_owner"] = "postfix",
            ["setgid_group"] = "postdrop",
            ["myhostname"] = Hostname,
            ["mydomain"] = "functional.test",
            ["myorigin"] = "$myhostname",
            ["mydestination"] = "",
            ["relay_domains"] = "",
            ["inet_interfaces"] = "127.0.0.1",
            ["inet_protocols"] = "ipv4",
            ["mynetworks"] = "127.0.0.0/8",
            ["smtpd_relay_restrictions"] = "permit_mynetworks, reject",
            // Without this smtpd itself rejects, at RCPT time, every recipient whose transport is "error" (550 5.1.1
            // <u@example.net>: Recipient address rejected), and no DSN is ever made.
            ["smtpd_reject_unlisted_recipient"] = "no",
            ["smtpd_peername_lookup"] = "no",
            ["smtpd_error_sleep_time"] = "0s",
            ["in_flow_delay"] = "0s",
            ["smtp_dns_support_level"] = "disabled",
            ["smtp_host_lookup"] = "native",
            ["smtp_address_preference"] = "ipv4",
            ["smtp_connect_timeout"] = "5s",
            ["smtp_tls_security_level"] = "none",
            ["smtpd_tls_security_level"] = "none",
            // texthash: read as is, no postmap; daemons read it when they start.
            ["transport_maps"] = $"texthash:{transportPath}",
            ["default_transport"] = error,
            ["local_transport"] = error,
            ["alias_maps"] = "",
            ["alias_database"] = "",
            ["local_recipient_maps"] = "",
            ["biff"] = "no",
            // No syslog here: postlogd (master.cf "postlog") writes this file; it must be below a maillog_file_prefixes entry.
            ["maillog_file"] = LogPath,
            ["maillog_file_prefixes"] = WorkDirectory,
            ["queue_run_delay"] = "1s",
            ["minimal_backoff_time"] = "1s",
            ["maximal_backoff_time"] = "2s",
            ["maximal_queue_lifetime"] = "60s",
            ["bounce_queue_lifetime"] = "60s",
            ["delay_warning_time"] = "0",
            ["readme_directory"] = "no",
            ["html_directory"] = "no",
        };
        if (options.Tls is { } tls)
        {
            // Root-owned copies (the key mode 0600): smtpd reads them before it drops privileges.
            var certificate = Path.Combine(ConfigDirectory, "smtpd.crt");
            var key = Path.Combine(ConfigDirectory, "smtpd.key");
            File.Copy(tls.CertificatePath, certificate, overwrite: true);
            File.Copy(tls.KeyPath, key, overwrite: true);
            File.SetUnixFileMode(key, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            main["smtpd_tls_security_level"] = "may";
            main["smtpd_tls_cert_file"] = certificate;
            main["smtpd_tls_key_file"] = key;
            main["smtpd_tls_session_cache_database"] = "";
            main["smtpd_tls_loglevel"] = "1";
        }

        if (options.Sasl is { } sasl)
        {
            await WriteSaslAsync(sasl, cancellationToken).ConfigureAwait(false);
            main["smtpd_sasl_auth_enable"] = "yes";
            main["smtpd_sasl_type"] = "cyrus";
            main["smtpd_sasl_path"] = "smtpd";
            main["cyrus_sasl_config_path"] = SaslDirectory;
            main["smtpd_sasl_security_options"] = "noanonymous";
            main["smtpd_tls_auth_only"] = "yes";
            // Only AUTH opens the relay: mynetworks (127.0.0.0/8, i.e. every local client) does not.
            main["smtpd_relay_restrictions"] = "permit_sasl_authenticated, reject";
        }

        foreach (var (name, value) in options.MainCf)
        {
            main[name] = value;
        }

        var mainCf = new StringBuilder("# Generated by the functional tests (PostfixInstance): a throwaway instance.\n");
        foreach (var (name, value) in main)
        {
            mainCf.Append(CultureInfo.InvariantCulture, $"{name} = {value}\n");
        }

        await File.WriteAllTextAsync(Path.Combine(ConfigDirectory, "main.cf"), mainCf.ToString(), cancellationToken).ConfigureAwait(false);

        // Debian's master.cf minus local delivery and content filters, chroot "n" everywhere (nothing is copied into a jail).
        var masterCf = $"""
            # service type  private unpriv  chroot  wakeup  maxproc command + args
            127.0.0.1:{Port} inet n - n - - smtpd
            pickup    unix  n       -       n       60      1       pickup
            cleanup   unix  n       -       n       -       0       cleanup
            qmgr      unix  n       -       n       300     1       qmgr
            tlsmgr    unix  -       -       n       1000?   1       tlsmgr
            rewrite   unix  -       -       n       -       -       trivial-rewrite
            bounce    unix  -       -       n       -       0       bounce
            defer     unix  -       -       n       -       0       bounce
            trace     unix  -       -       n       -       0       bounce
            verify    unix  -       -       n       -       1       verify
            flush     unix  n       -       n       1000?   0       flush
            proxymap  unix  -       -       n       -       -       proxymap
            proxywrite unix -       -       n       -       1       proxymap
            smtp      unix  -       -       n       -       -       smtp
            relay     unix  -       -       n       -       -       smtp
            showq     unix  n       -       n       -       -       showq
            error     unix  -       -       n       -       -       error
            retry     unix  -       -       n       -       -       error
            discard   unix  -       -       n       -       -       discard
            anvil     unix  -       -       n       -       1       anvil
            scache    unix  -       -       n       -       1       scache
            postlog   unix-dgram n  -       n       -       1       postlogd

            """;
        await File.WriteAllTextAsync(Path.Combine(ConfigDirectory, "master.cf"), masterCf, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Cyrus SASL for smtpd: auxprop over a private sasldb2 holding the one user (as perf/bench.sh builds it). smtpd
    /// runs as user postfix and opens the database for each AUTH, so <see cref="SetSaslPasswordAsync"/> bites at once.
    /// </summary>
    async Task WriteSaslAsync(PostfixSaslUser sasl, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(SaslDirectory);
        await File.WriteAllTextAsync(Path.Combine(SaslDirectory, "smtpd.conf"),
            $"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {SaslDatabasePath}\nmech_list: PLAIN LOGIN\n", cancellationToken)
            .ConfigureAwait(false);
        await SetSaslPasswordAsync(sasl.User, sasl.Password, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Creates <paramref name="user"/> in the sasldb2 or changes its password (<c>saslpasswd2 -p -c</c>, the password on
    /// stdin): a test revokes a credential the gateway holds by changing it here.
    /// </summary>
    public async Task SetSaslPasswordAsync(string user, string password, CancellationToken cancellationToken = default)
    {
        if (!File.Exists(SaslPasswd2Binary))
        {
            throw new InvalidOperationException($"{SaslPasswd2Binary} is missing: apt-get install sasl2-bin libsasl2-modules (./test.sh does)");
        }

        var set = await ChildProcess.RunCapturedAsync(SaslPasswd2Binary, ["-p", "-c", "-f", SaslDatabasePath, "-u", Hostname, user], WorkDirectory,
            TimeSpan.FromSeconds(30), standardInput: password).WaitAsync(cancellationToken).ConfigureAwait(false);
        if (set.ExitCode != 0)
        {
            throw new InvalidOperationException($"saslpasswd2 for {user} failed: {set}");
        }

        // smtpd (user postfix) reads the database, through its group; root keeps ownership (postfix-script warns otherwise).
        var chown = await ChildProcess.RunCapturedAsync("chown", ["-R", "root:postfix", SaslDirectory], WorkDirectory, TimeSpan.FromSeconds(30))
            .WaitAsync(cancellationToken).ConfigureAwait(false);
        if (chown.ExitCode != 0)
        {
            throw new InvalidOperationException($"chown of {SaslDirectory} failed: {chown}");
        }

        File.SetUnixFileMode(SaslDirectory, (UnixFileMode)Convert.ToInt32("750", 8));
        File.SetUnixFileMode(SaslDatabasePath, (UnixFileMode)Convert.ToInt32("640", 8));
    }

    async Task WaitUntilReadyAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        Exception? last = null;
        while (true)
        {
            if (_process!.HasExited)
            {
                throw new InvalidOperationException($"postfix start-fg exited:\n{Diagnostics()}");
            }

            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"Postfix did not answer on 127.0.0.1:{Port} within {timeout} ({last?.Message}):\n{Diagnostics()}");
            }

            try
            {
                using var client = await RawSmtpClient.ConnectAsync("127.0.0.1", Port, TimeSpan.FromSeconds(5), cancellationToken).ConfigureAwait(false);
                // Another server that got the port first would answer too: only our own banner counts.
                if (client.Banner.Code == 220 && client.Banner.Text.StartsWith(Hostname, StringComparison.Ordinal))
                {
                    await client.CommandAsync("QUIT", cancellationToken).ConfigureAwait(false);
                    MasterPid = FindMasterPid();
                    return;
                }
            }
            catch (Exception e) when (e is SocketException or IOException or TimeoutException)
            {
                last = e;
            }

            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The master: start-fg's child running master (its pid file cannot be read here: the master holds a lock on
    /// queue/pid/master.pid, and .NET's FileShare emulation takes a conflicting one).
    /// </summary>
    int FindMasterPid()
    {
        foreach (var pid in ProcessIds())
        {
            if (Stat(pid) is { } stat && stat.ParentId == _process!.Id && stat.State is not ('Z' or 'X')
                && ExecutableOf(pid) == DaemonDirectory + "/master")
            {
                return pid;
            }
        }

        throw new InvalidOperationException($"no master process below postfix start-fg (pid {_process!.Id})");
    }

    /// <summary>Polls the log until a line contains <paramref name="fragment"/>; returns that line, or throws with the whole log.</summary>
    public Task<string> WaitForLogAsync(string fragment, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        WaitForLogAsync(line => line.Contains(fragment, StringComparison.Ordinal), $"containing \"{fragment}\"", timeout, cancellationToken);

    /// <summary>Polls the log until a line matches <paramref name="match"/>; returns that line, or throws with the whole log.</summary>
    public async Task<string> WaitForLogAsync(Func<string, bool> match, string what, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var log = Log;
            var end = log.LastIndexOf('\n');
            var found = end < 0 ? null : log[..end].Split('\n').FirstOrDefault(match);
            if (found is not null)
            {
                return found;
            }

            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"no Postfix log line {what} within {timeout}:\n{Diagnostics()}");
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Waits for smtpd's line of a message accepted from a client authenticated as <paramref name="user"/>
    /// ("QUEUEID: client=..., sasl_method=M, sasl_username=USER"); returns it.
    /// </summary>
    public Task<string> WaitForSaslLoginAsync(string user, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        WaitForLogAsync(line => line.Contains("sasl_method=", StringComparison.Ordinal) && line.EndsWith($", sasl_username={user}", StringComparison.Ordinal),
            $"of a message from SASL user {user}", timeout, cancellationToken);

    /// <summary>Every SASL user smtpd accepted a message from (its "sasl_username=" log lines), in order.</summary>
    public IReadOnlyList<string> SaslLogins() =>
        [.. Log.Split('\n').Where(l => l.Contains("sasl_method=", StringComparison.Ordinal))
            .Select(l => l[(l.IndexOf(", sasl_username=", StringComparison.Ordinal) + ", sasl_username=".Length)..])];

    /// <summary>Makes the queue manager retry deferred mail now (what <c>postqueue -f</c> does; postqueue itself is set-gid and refuses a private config directory).</summary>
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        var result = await ChildProcess.RunCapturedAsync(PostkickBinary, ["-c", ConfigDirectory, "public", "qmgr", "DFAI"], WorkDirectory,
            TimeSpan.FromSeconds(30)).WaitAsync(cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"postkick failed: {result}");
        }
    }

    /// <summary><c>postfix stop</c>, then SIGKILL for anything of this instance still running, then the directory goes.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_process is { HasExited: false })
        {
            try
            {
                await ChildProcess.RunCapturedAsync(PostfixBinary, ["-c", ConfigDirectory, "stop"], WorkDirectory, TimeSpan.FromSeconds(20))
                    .ConfigureAwait(false);
                await _process.Exited.WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // SIGKILL below.
            }
        }

        // SIGKILL to start-fg's process tree (postfix-script, master, daemons), if still there.
        _process?.Dispose();
        // Daemons orphaned by a dead master are no longer in that tree, but still in the master's session.
        var clock = Stopwatch.StartNew();
        while (KillSession(MasterPid) > 0 && clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(50).ConfigureAwait(false);
        }

        s_live.TryRemove(this, out _);
        if (!KeepDirectory)
        {
            for (var attempt = 0; ; attempt++)
            {
                try
                {
                    Directory.Delete(WorkDirectory, recursive: true);
                    break;
                }
                catch (DirectoryNotFoundException)
                {
                    break;
                }
                catch (IOException) when (attempt < 5)
                {
                    // A daemon that was still dying wrote a file (e.g. a log line) while the tree was being removed.
                    await Task.Delay(100).ConfigureAwait(false);
                }
            }
        }
    }

    /// <summary>
    /// SIGKILL to every live (non-zombie) Postfix program in session <paramref name="sessionId"/> (the master's: it
    /// calls setsid, and its daemons stay in it even when orphaned); returns how many there were.
    /// </summary>
    static int KillSession(int sessionId)
    {
        if (sessionId <= 1 || sessionId == Stat(Environment.ProcessId)?.Session)
        {
            return 0;
        }

        var killed = 0;
        foreach (var pid in ProcessIds())
        {
            // A pid reused by anything but a Postfix program is left alone.
            if (pid == Environment.ProcessId || Stat(pid) is not { State: not ('Z' or 'X') } stat || stat.Session != sessionId
                || ExecutableOf(pid)?.StartsWith(DaemonDirectory + "/", StringComparison.Ordinal) != true)
            {
                continue;
            }

            try
            {
                using var process = Process.GetProcessById(pid);
                process.Kill();
                killed++;
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
            {
                // Gone already.
            }
        }

        return killed;
    }

    static IEnumerable<int> ProcessIds()
    {
        foreach (var entry in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                yield return pid;
            }
        }
    }

    /// <summary>Fields of /proc/&lt;pid&gt;/stat ("pid (comm) state ppid pgrp session ..."); null when the process is gone.</summary>
    static (char State, int ParentId, int Session)? Stat(int pid)
    {
        string stat;
        try
        {
            stat = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        // comm may contain spaces and parentheses: the fields start after the last ')'.
        var fields = stat[(stat.LastIndexOf(')') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return fields.Length >= 4 && fields[0].Length == 1
            && int.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out var parent)
            && int.TryParse(fields[3], NumberStyles.None, CultureInfo.InvariantCulture, out var session)
            ? (fields[0][0], parent, session)
            : null;
    }

    /// <summary>The program a process runs (/proc/&lt;pid&gt;/exe), or null.</summary>
    static string? ExecutableOf(int pid)
    {
        try
        {
            return new FileInfo($"/proc/{pid}/exe").LinkTarget;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    [GeneratedRegex(@"^5\.\d{1,3}\.\d{1,3}$")]
    private static partial Regex BounceStatusPattern();

    [GeneratedRegex(@"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")]
    private static partial Regex DomainPattern();
}
