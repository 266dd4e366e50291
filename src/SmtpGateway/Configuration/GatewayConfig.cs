namespace SmtpGateway.Configuration;

/// <summary>Root of the "Gateway" section of config/gateway.json. Bound by the options binder, validated whole by <see cref="GatewayConfigValidator"/>.</summary>
public sealed class GatewayConfig
{
    public const string SectionName = "Gateway";

    /// <summary>Host name used in the greeting, EHLO reply and Received header. Never a version string.</summary>
    public string ServerName { get; set; } = "smtpgw.localhost";

    /// <summary>Root of everything the gateway writes: spool, drop folders, logs. Relative paths resolve against the current directory.</summary>
    public string DataDirectory { get; set; } = "data";

    public TlsConfig Tls { get; set; } = new();

    public List<ListenerConfig> Listeners { get; set; } = [];

    public LimitsConfig Limits { get; set; } = new();

    /// <summary>Per-tenant limits of tenants that do not set their own ("Tenants:&lt;id&gt;:Limits").</summary>
    public TenantLimitDefaults TenantLimits { get; set; } = new();

    public IdentityConfig Identity { get; set; } = new();

    public AuditConfig Audit { get; set; } = new();

    public HsmConfig Hsm { get; set; } = new();

    public DkimConfig Dkim { get; set; } = new();

    public SpoolConfig Spool { get; set; } = new();

    public DeliveryConfig Delivery { get; set; } = new();

    /// <summary>Resolvers the gateway asks (MX routing); empty means the system's resolvers.</summary>
    public DnsConfig Dns { get; set; } = new();

    /// <summary>Return paths and header hygiene (issue #7).</summary>
    public EnvelopeConfig Envelope { get; set; } = new();

    /// <summary>Upstream-credential vault (issue #11).</summary>
    public VaultConfig Vault { get; set; } = new();

    /// <summary>Admin HTTP endpoint: API, metrics, health, dashboard (issue #13).</summary>
    public AdminConfig Admin { get; set; } = new();

    /// <summary>MCP tool server at /mcp on the admin endpoint (issue #14).</summary>
    public McpConfig Mcp { get; set; } = new();

    /// <summary>How long SIGTERM waits for in-flight SMTP sessions before answering 421 to the rest.</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(20);
}

public sealed class TlsConfig
{
    /// <summary>PEM certificate (chain) path.</summary>
    public string? CertificatePath { get; set; }

    /// <summary>PEM private key path. Never committed; ./run.sh generates a dev key under certs/dev/.</summary>
    public string? KeyPath { get; set; }
}

public enum ListenerKind
{
    /// <summary>Message submission (RFC 6409) with STARTTLS offered.</summary>
    Submission,

    /// <summary>Submission over implicit TLS (RFC 8314 section 3.3).</summary>
    ImplicitTls,

    /// <summary>Plain relay endpoint for legacy apps recognised by client network.</summary>
    Relay,
}

public sealed class ListenerConfig
{
    public string Name { get; set; } = "";
    public ListenerKind Kind { get; set; } = ListenerKind.Submission;
    public string Address { get; set; } = "127.0.0.1";
    public int Port { get; set; }
}

/// <summary>Protocol limits. Defaults cite their source.</summary>
public sealed class LimitsConfig
{
    /// <summary>Bytes. RFC 5321 section 4.5.3.1.7 sets a 64K floor; 25 MiB matches common submission services.</summary>
    public long MaxMessageSize { get; set; } = 25 * 1024 * 1024;

    /// <summary>
    /// Received fields a message may carry before it is taken for a mail loop and refused with 554 5.4.6 (RFC 5321
    /// section 6.3 asks for a hop limit of at least 100 on relays; Postfix's hop_count_limit is 50, which we follow).
    /// </summary>
    public int MaxReceivedHeaders { get; set; } = 50;

    /// <summary>
    /// A tenant rate-limit refusal (450 4.7.1 at MAIL, 452 4.5.3 at RCPT) is answered this much later, as Postfix's
    /// smtpd_error_sleep_time (1 s) answers errors: the wait costs the gateway no thread and no CPU, and it turns a client
    /// that retries in a tight loop from thousands of refused commands a second into one per connection per second, so a
    /// tenant flooding far past its limit cannot take the other tenants' CPU with its refusals. Pipelined refusals wait one
    /// delay each, at most 5 delays per batch of replies; each also counts against MaxJunkCommands. 0 turns it off; at most 5 s.
    /// </summary>
    public TimeSpan RateLimitReplyDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>RFC 5321 section 4.5.3.1.8: at least 100 recipients must be buffered; more get 452 4.5.3.</summary>
    public int MaxRecipients { get; set; } = 100;

    /// <summary>RFC 5321 section 4.5.3.1.4: command line 512 octets including CRLF.</summary>
    public int MaxCommandLineLength { get; set; } = 512;

    /// <summary>RFC 5321 section 4.5.3.1.6: text line 1000 octets including CRLF.</summary>
    public int MaxTextLineLength { get; set; } = 1000;

    /// <summary>RFC 5321 section 4.5.3.2.7: server timeout waiting for the next command is at least 5 minutes.</summary>
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>RFC 5321 section 4.5.3.2.6 (client waits 10 minutes after the final dot); we allow 3 minutes between DATA blocks.</summary>
    public TimeSpan DataTimeout { get; set; } = TimeSpan.FromMinutes(3);

    /// <summary>
    /// Octets per second a DATA body must average once DataTimeout has passed since the 354 (0 turns it off): the block
    /// timeout restarts with every octet, so without it one octet every few seconds would hold a session for the whole
    /// SessionTimeout. Kestrel's MinRequestBodyDataRate (240 bytes/s after a 5 s grace) is the model; here the grace is
    /// DataTimeout, so RFC 5321 section 4.5.3.2.5's 3 minutes per block are still honoured for the first block.
    /// </summary>
    public int MinDataRate { get; set; } = 240;

    /// <summary>Whole-session cap: long enough for a client to reuse one connection for thousands of messages.</summary>
    public TimeSpan SessionTimeout { get; set; } = TimeSpan.FromHours(1);

    /// <summary>Concurrent connections across all listeners; beyond this the banner is 421 4.7.0.</summary>
    public int MaxConnections { get; set; } = 20000;

    /// <summary>Concurrent connections from one client IP (Postfix smtpd_client_connection_count_limit defaults to 50).</summary>
    public int MaxConnectionsPerIp { get; set; } = 50;

    /// <summary>Protocol errors tolerated in one session before 421 (Postfix smtpd_hard_error_limit defaults to 20).</summary>
    public int MaxErrors { get; set; } = 20;

    /// <summary>
    /// NOOP, RSET, VRFY, HELP and repeated EHLO/HELO a session may send between accepted messages before it is closed with
    /// 421 4.7.0 (Postfix smtpd_junk_command_limit defaults to 100); MAIL/RCPT refused for a tenant rate limit and AUTH
    /// refused for a temporary reason (MaxSessions, token registry) count too. A message accepted with 250 starts the count afresh, so
    /// a client that keeps one connection open for many messages (RSET between them, NOOP to keep it alive) is never cut off.
    /// </summary>
    public int MaxJunkCommands { get; set; } = 100;

    /// <summary>
    /// Octets of one message kept in memory before the rest streams to a scratch file beside the spool. Small messages (the
    /// common case) never touch the scratch file; a 20 MiB one costs this much memory, not 20 MiB.
    /// </summary>
    public int MessageMemoryThreshold { get; set; } = 256 * 1024;

    /// <summary>
    /// Header section cap (octets). It is held in memory for sender binding, hygiene and DKIM; Postfix's header_size_limit
    /// is 100 KiB, Exim's 1 MiB. Beyond it the message gets 552 5.3.4.
    /// </summary>
    public int MaxHeaderSectionSize { get; set; } = 1024 * 1024;

    /// <summary>
    /// Octets of message data all sessions together may hold in memory. When it is spent, DATA streams to disk from its first
    /// octet; a DATA that cannot get even its header section gets 452 4.3.1, a new connection 421 4.3.2.
    /// </summary>
    public long MaxInFlightMemory { get; set; } = 256L * 1024 * 1024;
}

public sealed class SpoolConfig
{
    /// <summary>Spool directory; relative paths are under DataDirectory.</summary>
    public string Directory { get; set; } = "spool";

    /// <summary>Disable only for benchmarks that measure the cost of durability. Never in production.</summary>
    public bool Fsync { get; set; } = true;

    /// <summary>How a commit is made durable before its 250 (<see cref="SpoolSync"/>); ignored when <see cref="Fsync"/> is off.</summary>
    public SpoolSync Sync { get; set; } = SpoolSync.Auto;
}

/// <summary>Where <see cref="SpoolSync.FileSystem"/> is safe.</summary>
public static class SpoolSyncSupport
{
    /// <summary>
    /// True where one syncfs(2) may stand in for per-file fsyncs: Linux 5.17 and later. syncfs reports write-back errors
    /// since 5.8 (kernel commit 735e4ae5ba28, "vfs: track per-sb writeback errors and report them to syncfs"), and the
    /// file system's own sync failing (a journal commit, a cache flush) since 5.17 (5679897eb104, "vfs: make
    /// sync_filesystem return errors from ->sync_fs"; fstests generic/546). Before, syncfs could return 0 where fsync
    /// fails, which would acknowledge mail that is not on disk.
    /// </summary>
    public static bool FileSystemReportsErrors { get; } = OperatingSystem.IsLinux() && ReportsSyncFsErrors(Environment.OSVersion.Version);

    /// <summary>True for a Linux kernel version whose syncfs(2) reports every error fsync(2) would (5.17 and later).</summary>
    public static bool ReportsSyncFsErrors(Version kernel) => kernel >= new Version(5, 17);
}

/// <summary>
/// How the spool makes a committed message durable. Both end a commit only when the message file's data and its name in
/// queue/ are on disk; they differ in how many system calls and device flushes a batch of commits costs.
/// </summary>
public enum SpoolSync
{
    /// <summary>
    /// <see cref="FileSystem"/> where the spool looks like it has a file system to itself: the spool directory, or the data
    /// directory holding it, is the root of a mount of a whole ext4, xfs or btrfs file system (not of a directory within
    /// one, as a container volume is), on Linux 5.17 or later; else <see cref="File"/>. The gateway cannot see who else
    /// writes there (the same file system mounted elsewhere too): set <see cref="File"/> if others do. Logged at start.
    /// </summary>
    Auto,

    /// <summary>
    /// fdatasync(2) or fsync(2) of each message file by its own session, then one fsync(2) of queue/ shared by the
    /// commits waiting at that moment (group commit). Each commit's flush covers its own file only.
    /// </summary>
    File,

    /// <summary>
    /// After writing its file a commit waits for a syncfs(2) of the spool's file system shared by the commits waiting at
    /// that moment (the syncfs(2) manual: the same guarantees as fsync(2) of every file on that file system), then renames
    /// the file into queue/ and waits for the shared fsync of queue/ as with <see cref="File"/>. So data is on disk before
    /// the name, as with <see cref="File"/>, and a batch of writes costs one sync instead of one per message (issue 15).
    /// syncfs also writes out other files' dirty data on that file system, so a commit waits for that too: choose it for
    /// a file system that only the gateway writes. Needs Linux 5.17 or later (<see cref="SpoolSyncSupport"/>; refused at
    /// start otherwise); on a file system other than ext4, xfs or btrfs, or where the mount cannot be read, the gateway
    /// logs a warning and syncs per file.
    /// </summary>
    FileSystem,
}

public enum DeliveryMode
{
    /// <summary>Writes each message as an .eml file under DataDirectory/drop/&lt;tenant&gt;/.</summary>
    Drop,

    /// <summary>Relays through a configured smarthost over pooled MailKit connections.</summary>
    Smarthost,

    /// <summary>Delivers to each recipient domain's mail exchangers found in DNS (RFC 5321 section 5); tenants with an Egress:Smarthost use theirs.</summary>
    Mx,
}

public sealed class DeliveryConfig
{
    public DeliveryMode Mode { get; set; } = DeliveryMode.Drop;

    /// <summary>Concurrent delivery workers.</summary>
    public int Workers { get; set; } = 16;

    /// <summary>
    /// Workers one tenant's messages may hold at once; 0 means half of <see cref="Workers"/> (at least 1). Ready messages are
    /// served per tenant in turn, and this share keeps one tenant's backlog at a slow host from holding every worker.
    /// </summary>
    public int MaxWorkersPerTenant { get; set; }

    /// <summary>Drop folder; relative paths are under DataDirectory.</summary>
    public string DropDirectory { get; set; } = "drop";

    public SmarthostConfig Smarthost { get; set; } = new();

    public RetryConfig Retry { get; set; } = new();

    /// <summary>MX routing (Mode = Mx).</summary>
    public MxConfig Mx { get; set; } = new();

    /// <summary>
    /// How long an outbound session waits for each reply (and each write) before the attempt is deferred: a next hop that
    /// stalls mid-transaction (after the final dot, say) must not hold a worker and a connection for ever. RFC 5321
    /// section 4.5.3.2 gives MAIL and RCPT 5 minutes and the end of DATA 10; MailKit applies one value to every read, so
    /// the default is the 10 minutes the final dot may take.
    /// </summary>
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Outbound connections open at once for one tenant, across all destinations (isolation: one tenant cannot take every socket).</summary>
    public int MaxConnectionsPerTenant { get; set; } = 64;

    /// <summary>STARTTLS policy for outbound connections; tenants may override it under Tenants:&lt;id&gt;:Egress:Tls.</summary>
    public TlsPolicyConfig Tls { get; set; } = new();

    /// <summary>Per-destination backoff: a host that keeps failing is not tried again for a while, so one dead domain does not hold the workers.</summary>
    public DestinationBackoffConfig Backoff { get; set; } = new();

    /// <summary>Delivery status notifications (RFC 3464) for permanent failures and expiry.</summary>
    public DsnConfig Dsn { get; set; } = new();

    /// <summary>Delivery events as JSON lines in DataDirectory/&lt;EventsDirectory&gt;/&lt;tenant&gt;.jsonl; empty disables them.</summary>
    public string EventsDirectory { get; set; } = "events";

    /// <summary>
    /// Let every outbound path (MX, the gateway's and tenants' smarthosts, inbound Forward and Webhook) connect to
    /// loopback, private, link-local, metadata and other special-purpose addresses (the destination guard's table).
    /// Off by default: a tenant's route or a published DNS record must not steer the gateway at internal services.
    /// Development setups and closed networks turn it on.
    /// </summary>
    public bool AllowPrivateDestinations { get; set; }
}

/// <summary>"Gateway:Delivery:Mx": delivery to the recipient domains' mail exchangers.</summary>
public sealed class MxConfig
{
    /// <summary>Port of every MX connection. 25 (RFC 5321 section 4.5.4); any other value is for tests only.</summary>
    public int Port { get; set; } = 25;

    /// <summary>Cap on concurrent connections to one MX host per egress identity (tenant, source address): one tenant cannot take another's.</summary>
    public int MaxConnectionsPerHost { get; set; } = 4;

    /// <summary>Messages sent over one connection before it is recycled.</summary>
    public int MaxMessagesPerConnection { get; set; } = 100;

    /// <summary>Pooled idle connections are closed after this long.</summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>TCP connect plus greeting, per address. RFC 5321 section 4.5.3.2.1 allows the greeting 5 minutes; we give up sooner and try the next address.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>MX hosts tried per attempt (in preference order), and addresses per host.</summary>
    public int MaxHosts { get; set; } = 5;

    public int MaxAddressesPerHost { get; set; } = 4;

    /// <summary>Also connect over IPv6 (AAAA records, tried after the IPv4 addresses of the same host).</summary>
    public bool UseIPv6 { get; set; } = true;

    /// <summary>
    /// Deliver to MX/A answers that are loopback, private (RFC 1918, RFC 4193), shared (RFC 6598), link-local or
    /// unspecified. Off by default: a sender must not be able to steer the gateway at internal services (or at its
    /// own relay listener) by publishing such records. Tests and closed networks turn it on.
    /// </summary>
    public bool AllowPrivateDestinations { get; set; }
}

/// <summary>"Gateway:Dns": the resolvers DnsClient asks. Answers are cached for their TTL.</summary>
public sealed class DnsConfig
{
    /// <summary>Resolver addresses, "ip" or "ip:port" ("[v6]:port"); empty means the system's resolvers (/etc/resolv.conf).</summary>
    public List<string> Servers { get; set; } = [];

    /// <summary>Per query and try; a query that times out on every try is a transient failure (4.4.3).</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(5);

    public int Retries { get; set; } = 2;

    /// <summary>Cache answers for their TTL (DnsClient's cache).</summary>
    public bool UseCache { get; set; } = true;

    /// <summary>The resolvers as endpoints (port 53 unless given); the validator has refused anything else at start.</summary>
    public System.Net.IPEndPoint[] Endpoints() =>
        [.. Servers.Select(s => GatewayConfigValidator.TryParseEndpoint(s, 53, out var ep) ? ep! : throw new FormatException($"DNS server '{s}' is not ip[:port]."))];
}

/// <summary>STARTTLS policy for outbound delivery.</summary>
public enum TlsPolicy
{
    /// <summary>STARTTLS when offered; an unverifiable certificate is accepted (RFC 7435); a failed handshake falls back to plaintext.</summary>
    Opportunistic,

    /// <summary>STARTTLS must succeed (any certificate); otherwise the attempt is deferred with 4.7.x, never sent in plaintext.</summary>
    Required,

    /// <summary>Required, and the certificate must chain to a trusted root and match the MX host name (as RFC 7672 / 8461 do for DANE / MTA-STS).</summary>
    Verify,
}

/// <summary>"Gateway:Delivery:Tls" (and Tenants:&lt;id&gt;:Egress:Tls): a default policy and per destination domain overrides.</summary>
public sealed class TlsPolicyConfig
{
    /// <summary>Policy for domains not listed; null in a tenant's section means the gateway's.</summary>
    public TlsPolicy? Default { get; set; }

    /// <summary>Recipient domain → policy. A leading "." matches every subdomain (".example.com").</summary>
    public Dictionary<string, TlsPolicy> Domains { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>PEM file of extra trust anchors for Verify (a private CA); the system roots are used as well.</summary>
    public string? TrustAnchorsPath { get; set; }
}

/// <summary>"Gateway:Delivery:Backoff": per egress identity (tenant, source address, host, port), after consecutive connection failures.</summary>
public sealed class DestinationBackoffConfig
{
    /// <summary>Consecutive failures (connect, greeting, TLS, dropped session) before the host is skipped.</summary>
    public int FailuresBeforeBackoff { get; set; } = 3;

    /// <summary>First skip period; doubles with each further failure up to <see cref="MaxDelay"/>.</summary>
    public TimeSpan InitialDelay { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Longest skip period; also how long an entry is remembered after its backoff ended without a new failure.</summary>
    public TimeSpan MaxDelay { get; set; } = TimeSpan.FromMinutes(30);

    /// <summary>Egress identities (tenant, source address, host, port) remembered at most; a new one evicts the one whose last failure is oldest.</summary>
    public int MaxEntries { get; set; } = 10_000;
}

/// <summary>"Gateway:Delivery:Dsn": RFC 3464 reports to the envelope sender.</summary>
public sealed class DsnConfig
{
    /// <summary>Send a DSN on permanent failure and on expiry. Never for a message with the null sender (RFC 5321 section 4.5.5).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Header lines of the original message returned (text/rfc822-headers); the body is never returned.</summary>
    public int MaxReturnedHeaderBytes { get; set; } = 64 * 1024;
}

public enum StartTlsMode
{
    /// <summary>STARTTLS when the server offers it; certificate not validated (RFC 7435 opportunistic security).</summary>
    WhenAvailable,
    None,
    Required,
}

public sealed class SmarthostConfig
{
    public string Host { get; set; } = "";
    public int Port { get; set; } = 25;
    public StartTlsMode StartTls { get; set; } = StartTlsMode.WhenAvailable;

    /// <summary>Cap on concurrent connections to this destination per egress identity (tenant, source address): one tenant cannot take another's.</summary>
    public int MaxConnections { get; set; } = 8;

    /// <summary>Messages sent over one connection before it is recycled.</summary>
    public int MaxMessagesPerConnection { get; set; } = 1000;

    /// <summary>Pooled idle connections are closed after this long.</summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromSeconds(30);

    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>EHLO name we announce; defaults to Gateway.ServerName.</summary>
    public string? HeloName { get; set; }

    /// <summary>
    /// This smarthost (Host and Port) may be a private or loopback address even when Delivery:AllowPrivateDestinations
    /// is off: the operator's own relay often sits on the internal network, tenants' routes should not.
    /// </summary>
    public bool AllowPrivateDestinations { get; set; }
}

public sealed class RetryConfig
{
    /// <summary>Delay before each retry; the last entry repeats. Exponential, like Postfix's 5 min doubling to 4000 s.</summary>
    public List<TimeSpan> Schedule { get; set; } = [TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(15), TimeSpan.FromMinutes(30), TimeSpan.FromHours(1), TimeSpan.FromHours(2), TimeSpan.FromHours(4)];

    /// <summary>Random spread added to each delay, as a fraction of it, so that retries after an outage do not arrive in lockstep.</summary>
    public double Jitter { get; set; } = 0.2;

    /// <summary>Messages still undelivered after this age fail (RFC 5321 section 4.5.4.1 suggests 4-5 days).</summary>
    public TimeSpan MaxAge { get; set; } = TimeSpan.FromDays(5);
}

/// <summary>"Gateway:Envelope".</summary>
public sealed class EnvelopeConfig
{
    /// <summary>Header fields removed from every message besides the built-in ones (Return-Path, X-Tenant*, X-Smtpgw*); "X-Foo-*" is a prefix.</summary>
    public List<string> StripHeaders { get; set; } = [];

    /// <summary>
    /// After `smtpgw verp rotate-key`, tags made with the previous key are still accepted this long: DSNs come back within
    /// the sender's retry period (RFC 5321 section 4.5.4.1 suggests 4-5 days), complaints later; 30 days covers both.
    /// </summary>
    public TimeSpan ReturnPathKeyGrace { get; set; } = TimeSpan.FromDays(30);

    /// <summary>
    /// Failed return-path checks (RCPT to a bounce-domain address whose tag does not verify) one client address may cause
    /// within <see cref="ReturnPathFailureWindow"/>; past it, its RCPTs to return paths get 450 4.7.1 without any HSM MAC
    /// (each check of a forged tag otherwise costs one). An IPv6 client counts per /64, as for AUTH failures.
    /// </summary>
    public int ReturnPathFailuresPerClient { get; set; } = 10;

    public TimeSpan ReturnPathFailureWindow { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Longest StripHeaders name (real field names are far shorter; hygiene matches names up to this length).</summary>
    public const int MaxStripHeaderLength = 128;

    /// <summary>
    /// Why a StripHeaders entry is not usable, or null when it is. RFC 5322 section 3.6.8: a field name is 1*ftext (printable
    /// US-ASCII except ':'), optionally followed by '*' for a prefix; a bare "*" would strip every field. The one rule, read
    /// by the validator at start and by header hygiene when it compiles the list.
    /// </summary>
    public static string? StripHeaderError(string? raw, int maxLength)
    {
        var entry = raw?.Trim() ?? "";
        var name = entry.EndsWith('*') ? entry[..^1] : entry;
        return name.Length == 0 || name.Length > maxLength || !name.All(c => c is >= '!' and <= '~' and not ':' and not '*')
            ? $"StripHeaders entry \"{entry}\" is not a header field name (optionally ending in '*')."
            : null;
    }
}
