namespace SmtpGateway.Configuration;

/// <summary>One tenant as config/gateway.json states it, under "Tenants:&lt;tenant-id&gt;".</summary>
public sealed class TenantConfig
{
    /// <summary>Sending domains. MAIL FROM and header From of this tenant's sessions must be in one of them.</summary>
    public List<string> Domains { get; set; } = [];

    /// <summary>Domain for per-tenant return paths (VERP); the tenant's own domain or a subdomain of it.</summary>
    public string? BounceDomain { get; set; }

    /// <summary>Client networks (CIDR) of this tenant's legacy apps on the relay listener.</summary>
    public List<string> Networks { get; set; } = [];

    /// <summary>
    /// Accept a network wider than /16 (IPv4) or /48 (IPv6) in <see cref="Networks"/>. Off by default: 0.0.0.0/0 would let
    /// every client send as this tenant, and a typo in a prefix length should not do that silently.
    /// </summary>
    public bool AllowWideNetworks { get; set; }

    /// <summary>This tenant's own HSM token (blast radius one: its keys and PIN are nobody else's).</summary>
    public TenantHsmConfig Hsm { get; set; } = new();

    /// <summary>DKIM signing of this tenant's outbound mail; required unless <see cref="TenantDkimConfig.Unsigned"/> says otherwise.</summary>
    public TenantDkimConfig Dkim { get; set; } = new();

    public EgressConfig Egress { get; set; } = new();

    public TenantLimitsConfig Limits { get; set; } = new();

    /// <summary>Where unauthenticated mail for the tenant's domains goes (replies to its mail; bounces go to Bounces).</summary>
    public InboundRouteConfig Inbound { get; set; } = new();

    /// <summary>Bounce-rate threshold that pauses the tenant's outbound queue.</summary>
    public ReputationConfig Reputation { get; set; } = new();
}

/// <summary>"Tenants:&lt;id&gt;:Dkim".</summary>
public sealed class TenantDkimConfig
{
    /// <summary>
    /// The tenant may send without a DKIM signature. Off by default, so a tenant whose selector file is missing or
    /// broken gets 451 4.3.0 instead of unsigned mail (fail closed); an operator must opt out on purpose. With it on,
    /// mail is still signed when the tenant has an active selector for the From domain, and a failure is still 451.
    /// </summary>
    public bool Unsigned { get; set; }
}

public sealed class EgressConfig
{
    /// <summary>EHLO name for this tenant's outbound connections.</summary>
    public string? HeloName { get; set; }

    /// <summary>Source address to bind for this tenant's outbound connections.</summary>
    public string? SourceAddress { get; set; }

    /// <summary>When set, all of this tenant's mail goes to this smarthost instead of MX (or the gateway's smarthost). Credentials come with the vault.</summary>
    public TenantSmarthostConfig? Smarthost { get; set; }

    /// <summary>This tenant's STARTTLS policy; unset values fall back to Gateway:Delivery:Tls.</summary>
    public TlsPolicyConfig? Tls { get; set; }
}

/// <summary>"Tenants:&lt;id&gt;:Egress:Smarthost".</summary>
public sealed class TenantSmarthostConfig
{
    public string Host { get; set; } = "";

    public int Port { get; set; } = 25;

    /// <summary>
    /// STARTTLS policy towards this smarthost; null means the tenant's default policy, or Verify when
    /// <see cref="Credential"/> is set (a password is never sent over plaintext or unverified TLS by default).
    /// </summary>
    public TlsPolicy? Tls { get; set; }

    /// <summary>TLS from the first byte (RFC 8314 section 3.3, the port 465 style) instead of STARTTLS; the certificate is always verified.</summary>
    public bool ImplicitTls { get; set; }

    /// <summary>Name of the tenant's upstream credential in the vault; the gateway authenticates (RFC 4954 AUTH) only when set.</summary>
    public string? Credential { get; set; }

    /// <summary>
    /// SASL mechanism for AUTH: PLAIN, LOGIN or XOAUTH2. Unset: XOAUTH2 for an OAuth 2.0 credential, else PLAIN when the
    /// server offers it, else LOGIN.
    /// </summary>
    public string? AuthMechanism { get; set; }
}

/// <summary>The SASL mechanisms the gateway can authenticate to an upstream smarthost with.</summary>
public enum SmarthostAuthMechanism
{
    /// <summary>RFC 4616.</summary>
    Plain,

    /// <summary>draft-murchison-sasl-login (user name, then password, each in its own round).</summary>
    Login,

    /// <summary>Google's XOAUTH2 (an OAuth 2.0 bearer token), as Gmail and Microsoft 365 accept it.</summary>
    XOAuth2,
}

/// <summary>"Tenants:&lt;id&gt;:Limits": every value left null takes the gateway-wide default from "Gateway:TenantLimits".</summary>
public sealed class TenantLimitsConfig
{
    /// <summary>Longest lifetime a token of this tenant may be minted with; null means Gateway:Identity:MaxTokenTtl.</summary>
    public TimeSpan? MaxTokenTtl { get; set; }

    /// <summary>Messages (MAIL FROM transactions) per minute; beyond it MAIL gets 450 4.7.1.</summary>
    public int? MessagesPerMinute { get; set; }

    /// <summary>Accepted recipients per minute; beyond it RCPT gets 452 4.5.3.</summary>
    public int? RecipientsPerMinute { get; set; }

    /// <summary>Concurrent SMTP sessions acting for the tenant (authenticated or matched by network).</summary>
    public int? MaxSessions { get; set; }

    /// <summary>Bytes; at most Gateway:Limits:MaxMessageSize (the listener's own cap, announced in EHLO SIZE).</summary>
    public long? MaxMessageSize { get; set; }

    /// <summary>Signatures made at once for the tenant; more wait (asynchronously) for one of its own slots.</summary>
    public int? MaxConcurrentSigning { get; set; }
}

/// <summary>
/// "Gateway:TenantLimits": the per-tenant limits of a tenant whose "Limits" section leaves them unset. Generous on purpose
/// (about 17 dual-signed messages a second per core is what one tenant can take anyway); an operator lowers them per tenant.
/// </summary>
public sealed class TenantLimitDefaults
{
    public int MessagesPerMinute { get; set; } = 60_000;

    public int RecipientsPerMinute { get; set; } = 300_000;

    public int MaxSessions { get; set; } = 1_000;

    /// <summary>Null: Gateway:Limits:MaxMessageSize.</summary>
    public long? MaxMessageSize { get; set; }

    /// <summary>
    /// Below Gateway:Hsm:MaxSessionsPerToken (8), so a tenant's signers never queue for an HSM session on a blocked thread,
    /// and the token keeps sessions free for its token and return-path MACs.
    /// </summary>
    public int MaxConcurrentSigning { get; set; } = 4;
}

/// <summary>"Gateway:Identity": session tokens and AUTH.</summary>
public sealed class IdentityConfig
{
    /// <summary>The deployment a token is valid for (its audience); a token minted for another gateway is refused.</summary>
    public string Audience { get; set; } = "smtpgw";

    /// <summary>Issue #3: tokens are short-lived, 15 minutes unless asked otherwise.</summary>
    public TimeSpan DefaultTokenTtl { get; set; } = TimeSpan.FromMinutes(15);

    public TimeSpan MaxTokenTtl { get; set; } = TimeSpan.FromHours(24);

    /// <summary>After a key rotation, tokens signed with the previous key keep working this long.</summary>
    public TimeSpan KeyRotationGrace { get; set; } = TimeSpan.FromHours(1);

    /// <summary>Development only: allow AUTH without TLS when the client is on loopback.</summary>
    public bool AllowPlaintextAuthOnLoopback { get; set; }

    /// <summary>Failed AUTHs from one address within <see cref="AuthFailureWindow"/> before each reply is delayed.</summary>
    public int AuthFailuresBeforeDelay { get; set; } = 3;

    /// <summary>Failed AUTHs from one address within the window before it gets 421 and is disconnected.</summary>
    public int AuthFailuresBeforeDisconnect { get; set; } = 10;

    public TimeSpan AuthFailureWindow { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>How often the gateway re-reads revocations and token keys written by the CLI (issue #3: within one second).</summary>
    public TimeSpan RefreshInterval { get; set; } = TimeSpan.FromMilliseconds(250);
}

/// <summary>"Gateway:Audit": the audit trail of credential use and refusals.</summary>
public sealed class AuditConfig
{
    /// <summary>Also write each audit event as a JSON line to stdout (for container log collectors).</summary>
    public bool Stdout { get; set; }

    /// <summary>Rotate audit.jsonl when it reaches this size.</summary>
    public long MaxFileSize { get; set; } = 16 * 1024 * 1024;

    /// <summary>Rotated files kept.</summary>
    public int MaxFiles { get; set; } = 10;

    /// <summary>
    /// The writer fsyncs audit.jsonl at most once per this interval, with everything written meanwhile (0: after every
    /// batch, as before issue 15). Events reach the file at once; this only batches the fsync. One legacy-relay session is
    /// one event, so at 1,000 sessions a second a fsync per batch was about a hundred fsyncs a second, 3 % of the gateway's
    /// CPU. An event was never durable before the action it records goes on (the writer is asynchronous); the window a
    /// crash can cost grows from one fsync to this. Between 0 and 10 seconds.
    /// </summary>
    public TimeSpan SyncInterval { get; set; } = TimeSpan.FromMilliseconds(100);
}

/// <summary>
/// "Tenants:&lt;id&gt;:Hsm". DKIM selectors themselves are state, not config: `smtpgw dkim keygen|rotate` records them
/// under DataDirectory/dkim/&lt;tenant&gt;.json so that a rotation step never rewrites the operator's file.
/// </summary>
public sealed class TenantHsmConfig
{
    /// <summary>Label of the tenant's token (at most 32 bytes); default "smtpgw-&lt;tenant&gt;".</summary>
    public string? TokenLabel { get; set; }

    /// <summary>
    /// File holding the user PIN (mode 0600 in a 0700 directory, else the gateway refuses to start); default
    /// Gateway:Hsm:PinDirectory/&lt;tenant&gt;.pin. Used only when neither the environment variable nor the systemd
    /// credential smtpgw-&lt;tenant&gt;.pin supplies the PIN, and only while Gateway:Hsm:AllowPinFiles is true.
    /// </summary>
    public string? PinFile { get; set; }

    /// <summary>Environment variable holding the user PIN; takes precedence over the credential and the file when set.</summary>
    public string? PinEnvironmentVariable { get; set; }
}

/// <summary>"Gateway:Hsm": the PKCS#11 module that holds every tenant's DKIM keys.</summary>
public sealed class HsmConfig
{
    public string ModulePath { get; set; } = "/usr/lib/softhsm/libsofthsm2.so";

    /// <summary>SoftHSM2: keep its config and tokens under DataDirectory/hsm (sets SOFTHSM2_CONF before the module loads).</summary>
    public bool SoftHsm { get; set; } = true;

    public int MaxSessionsPerToken { get; set; } = 8;

    /// <summary>
    /// Signatures in progress at once across all tenants (issue 12); null: two per core, within 4..64. Each tenant takes at
    /// most its Limits:MaxConcurrentSigning of them (and never more than MaxSessionsPerToken); others wait asynchronously.
    /// </summary>
    public int? MaxConcurrentSigning { get; set; }

    /// <summary>How long a message waits for a signing slot before 451 4.3.0 (never sent unsigned).</summary>
    public TimeSpan SigningWaitTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Messages of one tenant waiting for a signing slot; one more is answered 451 4.3.0 at once.</summary>
    public int MaxSigningWaitersPerTenant { get; set; } = 256;

    /// <summary>
    /// DKIM keys sign as session-object copies inside the token; each key's token object is looked up again at most this
    /// often, so a key deleted by another process stops signing within it. Zero: sign with the token objects, no copies.
    /// Unset: 1 s with SoftHSM2, no copies with any other module.
    /// </summary>
    public TimeSpan? KeyCopyRecheckInterval { get; set; }

    /// <summary>
    /// Where default PIN files live (&lt;tenant&gt;.pin); default: the data directory's sibling "&lt;DataDirectory&gt;.pins",
    /// so that neither a copy of the data directory nor of the SoftHSM2 token store carries the PINs. Relative paths
    /// are relative to the working directory, like Tenants:&lt;id&gt;:Hsm:PinFile.
    /// </summary>
    public string? PinDirectory { get; set; }

    /// <summary>
    /// Whether PINs may come from files at all. Production sets false: then a PIN comes only from the tenant's
    /// environment variable or the systemd credential $CREDENTIALS_DIRECTORY/smtpgw-&lt;tenant&gt;.pin.
    /// </summary>
    public bool AllowPinFiles { get; set; } = true;
}

/// <summary>"Gateway:Dkim".</summary>
public sealed class DkimConfig
{
    /// <summary>Signature lifetime for the x= tag; null emits no x=.</summary>
    public TimeSpan? SignatureLifetime { get; set; }
}
