namespace SmtpGateway.Configuration;

/// <summary>
/// "Gateway:Admin": the operator's HTTP endpoint (API, metrics, health, dashboard). Off unless a config turns it on:
/// an admin door nobody asked for is an attack surface. config/gateway.json (dev) turns it on at 127.0.0.1:8025.
/// </summary>
public sealed class AdminConfig
{
    public bool Enabled { get; set; }

    /// <summary>Loopback by default: put the operator's TLS and network policy in front before widening it.</summary>
    public string Address { get; set; } = "127.0.0.1";

    public int Port { get; set; } = 8025;

    /// <summary>HTTPS on the TCP endpoint when both paths are set (PEM), plain HTTP otherwise.</summary>
    public TlsConfig Tls { get; set; } = new();

    /// <summary>
    /// Unix socket for the local CLI (relative to the data directory), created mode 0600: the file's permission is the
    /// credential, as with Docker's socket or Postfix's maildrop, so no admin key needs to lie on disk for the CLI.
    /// Empty turns it off.
    /// </summary>
    public string SocketPath { get; set; } = "admin/admin.sock";

    /// <summary>
    /// Serve /metrics without a key. Off by default: every series carries a tenant label, so an anonymous scrape would
    /// list every tenant and its volume to anyone who reaches the port (a tenant key's 404s hide exactly that).
    /// Prometheus sends the operator key with <c>authorization: { credentials_file: ... }</c>.
    /// </summary>
    public bool AnonymousMetrics { get; set; }

    /// <summary>
    /// Accept a non-loopback Address without Tls. Off by default: bearer keys and vault secrets would cross the network
    /// in clear text. Turn it on only behind a TLS-terminating proxy on the same host or network namespace.
    /// </summary>
    public bool AllowPlaintext { get; set; }

    /// <summary>Request body cap. Kestrel's default is 30,000,000 bytes; the largest admin body (a vault secret) is tiny.</summary>
    public long MaxRequestBodySize { get; set; } = 1024 * 1024;

    /// <summary>Bad or unknown bearer keys from one client address before each further answer is delayed.</summary>
    public int BadKeyFailuresBeforeDelay { get; set; } = 5;

    /// <summary>Bad keys from one client address in <see cref="BadKeyWindow"/> after which it gets 429 without a key check.</summary>
    public int BadKeyFailuresBeforeBlock { get; set; } = 20;

    public TimeSpan BadKeyWindow { get; set; } = TimeSpan.FromMinutes(5);
}
