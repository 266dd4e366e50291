using System.Net;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;

namespace SmtpGateway.Configuration;

/// <summary>
/// Validates the whole configuration and reports every error with its path (as YARP does), so an operator
/// fixes a broken file in one pass. Runs at start (ValidateOnStart) and from `smtpgw check-config`.
/// </summary>
public sealed partial class GatewayConfigValidator : IValidateOptions<GatewayConfig>
{
    public ValidateOptionsResult Validate(string? name, GatewayConfig options)
    {
        var errors = Collect(options);
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    public static List<string> Collect(GatewayConfig c)
    {
        var e = new List<string>();
        const string G = "Gateway";

        if (string.IsNullOrWhiteSpace(c.ServerName) || !Smtp.SmtpGrammar.IsDomain(c.ServerName))
        {
            e.Add($"{G}:ServerName: '{c.ServerName}' is not a host name (it is sent in the banner and Received headers).");
        }

        if (string.IsNullOrWhiteSpace(c.DataDirectory))
        {
            e.Add($"{G}:DataDirectory: required.");
        }

        if (c.Listeners.Count == 0)
        {
            e.Add($"{G}:Listeners: at least one listener is required.");
        }

        var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var endpoints = new HashSet<string>();
        var needsTls = false;
        for (var i = 0; i < c.Listeners.Count; i++)
        {
            var l = c.Listeners[i];
            var p = $"{G}:Listeners:{i}";
            if (string.IsNullOrWhiteSpace(l.Name))
            {
                e.Add($"{p}:Name: required.");
            }
            else if (!names.Add(l.Name))
            {
                e.Add($"{p}:Name: '{l.Name}' is used by another listener.");
            }

            if (!Enum.IsDefined(l.Kind))
            {
                e.Add($"{p}:Kind: must be one of {string.Join(", ", Enum.GetNames<ListenerKind>())}.");
            }

            if (!IPAddress.TryParse(l.Address, out _))
            {
                e.Add($"{p}:Address: '{l.Address}' is not an IP address.");
            }

            if (l.Port is < 0 or > 65535)
            {
                e.Add($"{p}:Port: {l.Port} is out of range 0-65535.");
            }
            else if (l.Port != 0 && !endpoints.Add($"{l.Address}:{l.Port}"))
            {
                e.Add($"{p}:Port: {l.Address}:{l.Port} is used by another listener.");
            }

            needsTls |= l.Kind is ListenerKind.Submission or ListenerKind.ImplicitTls;
        }

        if (needsTls)
        {
            CheckFile(e, $"{G}:Tls:CertificatePath", c.Tls.CertificatePath, "a PEM certificate (./run.sh makes a dev one with certs/gen-dev-cert.sh)");
            CheckFile(e, $"{G}:Tls:KeyPath", c.Tls.KeyPath, "a PEM private key");
        }

        var id = c.Identity;
        if (string.IsNullOrWhiteSpace(id.Audience))
        {
            e.Add($"{G}:Identity:Audience: required (tokens name the deployment they are for).");
        }

        Positive(e, $"{G}:Identity:DefaultTokenTtl", id.DefaultTokenTtl);
        Positive(e, $"{G}:Identity:MaxTokenTtl", id.MaxTokenTtl);
        if (id.DefaultTokenTtl > id.MaxTokenTtl)
        {
            e.Add($"{G}:Identity:DefaultTokenTtl: must not exceed MaxTokenTtl.");
        }

        Positive(e, $"{G}:Identity:KeyRotationGrace", id.KeyRotationGrace);
        Positive(e, $"{G}:Identity:AuthFailureWindow", id.AuthFailureWindow);
        if (id.RefreshInterval <= TimeSpan.Zero || id.RefreshInterval > TimeSpan.FromSeconds(1))
        {
            e.Add($"{G}:Identity:RefreshInterval: must be between 0 and 1 second (revocations must bite within a second).");
        }

        if (id.AuthFailuresBeforeDelay < 1 || id.AuthFailuresBeforeDisconnect < id.AuthFailuresBeforeDelay)
        {
            e.Add($"{G}:Identity:AuthFailuresBeforeDisconnect: must be at least AuthFailuresBeforeDelay, which must be at least 1.");
        }

        if (string.IsNullOrWhiteSpace(c.Hsm.ModulePath))
        {
            e.Add($"{G}:Hsm:ModulePath: required (the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so).");
        }

        if (c.Hsm.MaxSessionsPerToken is < 1 or > 256)
        {
            e.Add($"{G}:Hsm:MaxSessionsPerToken: {c.Hsm.MaxSessionsPerToken} is out of range 1-256.");
        }

        if (c.Hsm.MaxConcurrentSigning is < 1 or > 4096 || c.Hsm.SigningWaitTimeout <= TimeSpan.Zero || c.Hsm.SigningWaitTimeout > TimeSpan.FromMinutes(5)
            || c.Hsm.MaxSigningWaitersPerTenant is < 0 or > 100_000)
        {
            // 5 minutes: well inside the 10 minutes a client waits for the reply to end of DATA (RFC 5321 section 4.5.3.2.6).
            e.Add($"{G}:Hsm: MaxConcurrentSigning must be 1-4096 when set, SigningWaitTimeout above 0 and at most 5 minutes, MaxSigningWaitersPerTenant 0-100000.");
        }

        if (c.Hsm.KeyCopyRecheckInterval is { } recheck && (recheck < TimeSpan.Zero || recheck > TimeSpan.FromMinutes(5)))
        {
            // 5 minutes: a deleted key (a compromise response) must stop signing well inside a DNS TTL.
            e.Add($"{G}:Hsm:KeyCopyRecheckInterval: {c.Hsm.KeyCopyRecheckInterval} is out of range 0 to 5 minutes (0 signs without session copies).");
        }

        if (c.Dkim.SignatureLifetime is { } lifetime && lifetime <= TimeSpan.Zero)
        {
            e.Add($"{G}:Dkim:SignatureLifetime: must be positive when set.");
        }

        if (c.Audit.MaxFileSize < 4096 || c.Audit.MaxFiles < 1)
        {
            e.Add($"{G}:Audit: MaxFileSize must be at least 4096 and MaxFiles at least 1.");
        }

        if (c.Audit.SyncInterval < TimeSpan.Zero || c.Audit.SyncInterval > TimeSpan.FromSeconds(10))
        {
            e.Add($"{G}:Audit:SyncInterval: must be between 00:00:00 and 00:00:10.");
        }

        var tl = c.TenantLimits;
        if (tl.MessagesPerMinute < 1 || tl.RecipientsPerMinute < 1 || tl.MaxSessions < 1 || tl.MaxConcurrentSigning < 1 || tl.MaxMessageSize is < 1)
        {
            e.Add($"{G}:TenantLimits: MessagesPerMinute, RecipientsPerMinute, MaxSessions, MaxConcurrentSigning and MaxMessageSize must be at least 1.");
        }

        if (tl.MaxMessageSize > c.Limits.MaxMessageSize)
        {
            e.Add($"{G}:TenantLimits:MaxMessageSize: {tl.MaxMessageSize} is above Gateway:Limits:MaxMessageSize ({c.Limits.MaxMessageSize}).");
        }

        var lim = c.Limits;
        var lp = $"{G}:Limits";
        if (lim.RateLimitReplyDelay < TimeSpan.Zero || lim.RateLimitReplyDelay > TimeSpan.FromSeconds(5))
        {
            e.Add($"{lp}:RateLimitReplyDelay: {lim.RateLimitReplyDelay} is out of range 0-5 seconds.");
        }

        if (lim.MaxMessageSize < 65536)
        {
            e.Add($"{lp}:MaxMessageSize: {lim.MaxMessageSize} is below the 64 KiB minimum of RFC 5321 section 4.5.3.1.7.");
        }

        if (lim.MaxMessageSize > int.MaxValue)
        {
            e.Add($"{lp}:MaxMessageSize: {lim.MaxMessageSize} is above 2 GiB.");
        }

        if (lim.MaxReceivedHeaders < 1)
        {
            e.Add($"{lp}:MaxReceivedHeaders: must be at least 1 (a message always gains our own Received field).");
        }

        if (lim.MaxRecipients < 1)
        {
            e.Add($"{lp}:MaxRecipients: must be at least 1 (RFC 5321 section 4.5.3.1.8 recommends 100).");
        }

        if (lim.MaxCommandLineLength < 512)
        {
            e.Add($"{lp}:MaxCommandLineLength: must be at least 512 (RFC 5321 section 4.5.3.1.4).");
        }

        if (lim.MaxTextLineLength < 1000)
        {
            e.Add($"{lp}:MaxTextLineLength: must be at least 1000 (RFC 5321 section 4.5.3.1.6).");
        }

        Positive(e, $"{lp}:CommandTimeout", lim.CommandTimeout);
        Positive(e, $"{lp}:DataTimeout", lim.DataTimeout);
        if (lim.MinDataRate < 0)
        {
            e.Add($"{lp}:MinDataRate: must be 0 (off) or a positive number of octets per second.");
        }

        Positive(e, $"{lp}:SessionTimeout", lim.SessionTimeout);
        if (lim.MaxConnections < 1)
        {
            e.Add($"{lp}:MaxConnections: must be at least 1.");
        }

        if (lim.MaxConnectionsPerIp < 1)
        {
            e.Add($"{lp}:MaxConnectionsPerIp: must be at least 1.");
        }

        if (lim.MaxErrors < 1)
        {
            e.Add($"{lp}:MaxErrors: must be at least 1.");
        }

        if (lim.MaxJunkCommands < 1)
        {
            e.Add($"{lp}:MaxJunkCommands: must be at least 1.");
        }

        if (lim.MessageMemoryThreshold < 4096)
        {
            e.Add($"{lp}:MessageMemoryThreshold: must be at least 4096.");
        }

        if (lim.MaxHeaderSectionSize < 16 * 1024)
        {
            e.Add($"{lp}:MaxHeaderSectionSize: must be at least 16384 (RFC 5322 allows long header sections; Postfix's floor is 100 KiB).");
        }

        if (lim.MaxInFlightMemory < lim.MaxHeaderSectionSize)
        {
            e.Add($"{lp}:MaxInFlightMemory: must be at least MaxHeaderSectionSize ({lim.MaxHeaderSectionSize}), or no header section would fit.");
        }

        if (string.IsNullOrWhiteSpace(c.Spool.Directory))
        {
            e.Add($"{G}:Spool:Directory: required.");
        }

        if (!Enum.IsDefined(c.Spool.Sync))
        {
            e.Add($"{G}:Spool:Sync: must be one of {string.Join(", ", Enum.GetNames<SpoolSync>())}.");
        }
        else if (c.Spool.Sync == SpoolSync.FileSystem && !SpoolSyncSupport.FileSystemReportsErrors)
        {
            e.Add($"{G}:Spool:Sync: FileSystem needs Linux 5.17 or later, where syncfs(2) reports every error fsync(2) would; this is {Environment.OSVersion}. Use File or Auto.");
        }

        var d = c.Delivery;
        var dp = $"{G}:Delivery";
        if (!Enum.IsDefined(d.Mode))
        {
            e.Add($"{dp}:Mode: must be one of {string.Join(", ", Enum.GetNames<DeliveryMode>())}.");
        }

        if (d.Workers is < 1 or > 1024)
        {
            e.Add($"{dp}:Workers: {d.Workers} is out of range 1-1024.");
        }

        if (d.MaxWorkersPerTenant < 0 || d.MaxWorkersPerTenant > d.Workers)
        {
            e.Add($"{dp}:MaxWorkersPerTenant: {d.MaxWorkersPerTenant} is out of range 0-{d.Workers} (0: half of Workers).");
        }

        if (d.Mode == DeliveryMode.Smarthost)
        {
            var s = d.Smarthost;
            if (string.IsNullOrWhiteSpace(s.Host))
            {
                e.Add($"{dp}:Smarthost:Host: required when Mode is Smarthost.");
            }

            if (s.Port is < 1 or > 65535)
            {
                e.Add($"{dp}:Smarthost:Port: {s.Port} is out of range 1-65535.");
            }

            if (s.MaxConnections < 1)
            {
                e.Add($"{dp}:Smarthost:MaxConnections: must be at least 1.");
            }

            if (s.MaxMessagesPerConnection < 1)
            {
                e.Add($"{dp}:Smarthost:MaxMessagesPerConnection: must be at least 1.");
            }

            Positive(e, $"{dp}:Smarthost:IdleTimeout", s.IdleTimeout);
            Positive(e, $"{dp}:Smarthost:ConnectTimeout", s.ConnectTimeout);
            DestinationRanges.CheckLiteral($"{dp}:Smarthost:Host", s.Host, d.AllowPrivateDestinations || s.AllowPrivateDestinations,
                $"{dp}:Smarthost:AllowPrivateDestinations", e);
        }

        if (d.Retry.Schedule.Count == 0)
        {
            e.Add($"{dp}:Retry:Schedule: at least one delay is required.");
        }

        for (var i = 0; i < d.Retry.Schedule.Count; i++)
        {
            Positive(e, $"{dp}:Retry:Schedule:{i}", d.Retry.Schedule[i]);
        }

        if (d.Retry.Jitter is < 0 or > 1)
        {
            e.Add($"{dp}:Retry:Jitter: {d.Retry.Jitter} is out of range 0-1.");
        }

        Positive(e, $"{dp}:Retry:MaxAge", d.Retry.MaxAge);

        var mx = d.Mx;
        if (mx.Port is < 1 or > 65535)
        {
            e.Add($"{dp}:Mx:Port: {mx.Port} is out of range 1-65535.");
        }

        if (mx.MaxConnectionsPerHost < 1 || mx.MaxMessagesPerConnection < 1 || mx.MaxHosts < 1 || mx.MaxAddressesPerHost < 1)
        {
            e.Add($"{dp}:Mx: MaxConnectionsPerHost, MaxMessagesPerConnection, MaxHosts and MaxAddressesPerHost must be at least 1.");
        }

        Positive(e, $"{dp}:Mx:IdleTimeout", mx.IdleTimeout);
        Positive(e, $"{dp}:Mx:ConnectTimeout", mx.ConnectTimeout);
        Positive(e, $"{dp}:CommandTimeout", d.CommandTimeout);
        if (d.MaxConnectionsPerTenant < 1)
        {
            e.Add($"{dp}:MaxConnectionsPerTenant: must be at least 1.");
        }

        CheckTlsPolicy(e, $"{dp}:Tls", d.Tls);
        if (d.Backoff.FailuresBeforeBackoff < 1)
        {
            e.Add($"{dp}:Backoff:FailuresBeforeBackoff: must be at least 1.");
        }

        Positive(e, $"{dp}:Backoff:InitialDelay", d.Backoff.InitialDelay);
        if (d.Backoff.MaxDelay < d.Backoff.InitialDelay)
        {
            e.Add($"{dp}:Backoff:MaxDelay: must be at least InitialDelay.");
        }

        if (d.Backoff.MaxEntries < 1)
        {
            e.Add($"{dp}:Backoff:MaxEntries: must be at least 1.");
        }

        if (d.Dsn.MaxReturnedHeaderBytes < 0)
        {
            e.Add($"{dp}:Dsn:MaxReturnedHeaderBytes: must not be negative.");
        }

        // Header hygiene compiles its strip list once; a bad entry must stop the start, not the first message.
        foreach (var entry in c.Envelope.StripHeaders ?? [])
        {
            if (EnvelopeConfig.StripHeaderError(entry, EnvelopeConfig.MaxStripHeaderLength) is { } error)
            {
                e.Add($"{G}:Envelope:StripHeaders: {error}");
            }
        }

        Positive(e, $"{G}:Envelope:ReturnPathKeyGrace", c.Envelope.ReturnPathKeyGrace);
        Positive(e, $"{G}:Envelope:ReturnPathFailureWindow", c.Envelope.ReturnPathFailureWindow);
        if (c.Envelope.ReturnPathFailuresPerClient < 1)
        {
            e.Add($"{G}:Envelope:ReturnPathFailuresPerClient: must be at least 1.");
        }
        CheckVault(e, $"{G}:Vault", c.Vault);
        CheckAdmin(e, c.Admin);
        CheckMcp(e, c.Mcp, c.Limits);

        for (var i = 0; i < c.Dns.Servers.Count; i++)
        {
            if (!TryParseEndpoint(c.Dns.Servers[i], 53, out _))
            {
                e.Add($"{G}:Dns:Servers:{i}: '{c.Dns.Servers[i]}' is not an IP address or ip:port.");
            }
        }

        Positive(e, $"{G}:Dns:Timeout", c.Dns.Timeout);
        if (c.Dns.Retries is < 0 or > 10)
        {
            e.Add($"{G}:Dns:Retries: {c.Dns.Retries} is out of range 0-10.");
        }

        if (c.ShutdownTimeout < TimeSpan.Zero)
        {
            e.Add($"{G}:ShutdownTimeout: must not be negative.");
        }

        return e;
    }

    /// <summary>Checks every tenant's Egress section (EHLO name, source address, smarthost, TLS policy); paths as in the file.</summary>
    public static List<string> CollectTenantEgress(IReadOnlyDictionary<string, TenantConfig> tenants)
    {
        var e = new List<string>();
        foreach (var (id, tenant) in tenants)
        {
            CheckTenantEgress($"Tenants:{id}:Egress", tenant.Egress, e);
        }

        return e;
    }

    /// <summary>Checks one tenant's Egress section at <paramref name="p"/> ("Tenants:&lt;id&gt;:Egress"); the tenant snapshot calls it while it compiles.</summary>
    public static void CheckTenantEgress(string p, EgressConfig? egress, List<string> e)
    {
        if (egress is null)
        {
            return;
        }

        if (!string.IsNullOrEmpty(egress.HeloName) && !Smtp.SmtpGrammar.IsDomain(egress.HeloName))
        {
            e.Add($"{p}:HeloName: '{egress.HeloName}' is not a host name (RFC 5321 section 4.1.1.1).");
        }

        if (!string.IsNullOrEmpty(egress.SourceAddress) && !IPAddress.TryParse(egress.SourceAddress, out _))
        {
            e.Add($"{p}:SourceAddress: '{egress.SourceAddress}' is not an IP address.");
        }

        if (egress.Smarthost is { } smarthost)
        {
            if (string.IsNullOrWhiteSpace(smarthost.Host))
            {
                e.Add($"{p}:Smarthost:Host: required when Smarthost is set.");
            }

            if (smarthost.Port is < 1 or > 65535)
            {
                e.Add($"{p}:Smarthost:Port: {smarthost.Port} is out of range 1-65535.");
            }

            if (smarthost.Tls is { } policy && !Enum.IsDefined(policy))
            {
                e.Add($"{p}:Smarthost:Tls: must be one of {string.Join(", ", Enum.GetNames<TlsPolicy>())}.");
            }

            CheckSmarthostAuth($"{p}:Smarthost", smarthost, e);
        }

        if (egress.Tls is { } tls)
        {
            CheckTlsPolicy(e, $"{p}:Tls", tls);
        }
    }

    /// <summary>The names the vault accepts for a credential (letters, digits, dot, underscore, hyphen; at most 64).</summary>
    [GeneratedRegex("^[A-Za-z0-9._-]{1,64}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex CredentialName();

    /// <summary>True when <paramref name="name"/> is a well-formed vault credential name.</summary>
    public static bool IsCredentialName(string? name) => name is not null && CredentialName().IsMatch(name);

    /// <summary>"PLAIN", "LOGIN" or "XOAUTH2" (SASL names are case-insensitive, RFC 4422 section 3.1); null for unset or unknown.</summary>
    public static SmarthostAuthMechanism? ParseAuthMechanism(string? name) => name?.Trim().ToUpperInvariant() switch
    {
        "PLAIN" => SmarthostAuthMechanism.Plain,
        "LOGIN" => SmarthostAuthMechanism.Login,
        "XOAUTH2" => SmarthostAuthMechanism.XOAuth2,
        _ => null,
    };

    /// <summary>
    /// A smarthost that gets a credential must be reached over TLS: implicit TLS, or STARTTLS Required or Verify (Verify
    /// when unset). Opportunistic would hand the password to anyone who strips STARTTLS from the EHLO reply (RFC 3207
    /// section 6), and RFC 4954 section 4 leaves plaintext mechanisms to protected sessions.
    /// </summary>
    static void CheckSmarthostAuth(string p, TenantSmarthostConfig smarthost, List<string> e)
    {
        var hasCredential = !string.IsNullOrEmpty(smarthost.Credential);
        if (hasCredential && !IsCredentialName(smarthost.Credential))
        {
            e.Add($"{p}:Credential: '{smarthost.Credential}' is not a credential name (1-64 of A-Z a-z 0-9 . _ -).");
        }

        if (hasCredential && !smarthost.ImplicitTls && smarthost.Tls is { } tls && tls is not (TlsPolicy.Required or TlsPolicy.Verify))
        {
            e.Add($"{p}:Tls: {tls} would send the credential without TLS; with Credential set use ImplicitTls, or Tls Required or Verify.");
        }

        if (!string.IsNullOrEmpty(smarthost.AuthMechanism))
        {
            if (ParseAuthMechanism(smarthost.AuthMechanism) is null)
            {
                e.Add($"{p}:AuthMechanism: '{smarthost.AuthMechanism}' is not one of PLAIN, LOGIN, XOAUTH2.");
            }

            if (!hasCredential)
            {
                e.Add($"{p}:AuthMechanism: needs Credential (nothing to authenticate with).");
            }
        }
    }

    static void CheckTlsPolicy(List<string> e, string path, TlsPolicyConfig tls)
    {
        if (tls.Default is { } policy && !Enum.IsDefined(policy))
        {
            e.Add($"{path}:Default: must be one of {string.Join(", ", Enum.GetNames<TlsPolicy>())}.");
        }

        foreach (var (domain, value) in tls.Domains)
        {
            var name = domain.StartsWith('.') ? domain[1..] : domain;
            if (!Smtp.SmtpGrammar.IsDomain(name))
            {
                e.Add($"{path}:Domains:{domain}: not a domain name.");
            }

            if (!Enum.IsDefined(value))
            {
                e.Add($"{path}:Domains:{domain}: must be one of {string.Join(", ", Enum.GetNames<TlsPolicy>())}.");
            }
        }

        if (!string.IsNullOrWhiteSpace(tls.TrustAnchorsPath) && !File.Exists(tls.TrustAnchorsPath))
        {
            e.Add($"{path}:TrustAnchorsPath: '{tls.TrustAnchorsPath}' does not exist.");
        }
    }

    /// <summary>"ip", "ip:port" or "[v6]:port".</summary>
    public static bool TryParseEndpoint(string text, int defaultPort, out IPEndPoint? endpoint)
    {
        endpoint = null;
        if (!IPEndPoint.TryParse(text, out var parsed))
        {
            return false;
        }

        endpoint = parsed.Port == 0 ? new IPEndPoint(parsed.Address, defaultPort) : parsed;
        return true;
    }

    static void CheckVault(List<string> e, string path, VaultConfig? vault)
    {
        if (vault is null)
        {
            return;
        }

        Positive(e, $"{path}:RotationGrace", vault.RotationGrace);
        Positive(e, $"{path}:TokenEndpointTimeout", vault.TokenEndpointTimeout);
        // Zero is allowed (refresh only once expired), a negative lead time would use tokens after they expire.
        if (vault.RefreshBefore < TimeSpan.Zero)
        {
            e.Add($"{path}:RefreshBefore: must not be negative.");
        }
    }

    static void CheckAdmin(List<string> e, AdminConfig a)
    {
        const string p = "Gateway:Admin";
        if (!a.Enabled)
        {
            return;
        }

        if (!IPAddress.TryParse(a.Address, out var address))
        {
            e.Add($"{p}:Address: '{a.Address}' is not an IP address.");
        }
        else if (!IPAddress.IsLoopback(address) && (a.Tls.CertificatePath is null || a.Tls.KeyPath is null) && !a.AllowPlaintext)
        {
            e.Add($"{p}:Address: {a.Address} is not loopback and {p}:Tls is not set: admin keys and vault secrets would cross the network in clear text (set Tls, or AllowPlaintext behind a TLS proxy).");
        }

        // 0: an ephemeral port (benchmarks and parallel test runs that scrape nothing over TCP).
        if (a.Port is < 0 or > 65535)
        {
            e.Add($"{p}:Port: must be 0-65535.");
        }

        if (a.Tls.CertificatePath is not null || a.Tls.KeyPath is not null)
        {
            CheckFile(e, $"{p}:Tls:CertificatePath", a.Tls.CertificatePath, "the admin endpoint's certificate (PEM)");
            CheckFile(e, $"{p}:Tls:KeyPath", a.Tls.KeyPath, "the admin endpoint's private key (PEM)");
        }

        if (a.MaxRequestBodySize is < 1024 or > 64 * 1024 * 1024)
        {
            e.Add($"{p}:MaxRequestBodySize: must be between 1024 and 67108864 bytes.");
        }

        if (a.BadKeyFailuresBeforeDelay < 1 || a.BadKeyFailuresBeforeBlock < a.BadKeyFailuresBeforeDelay)
        {
            e.Add($"{p}:BadKeyFailuresBeforeDelay/BadKeyFailuresBeforeBlock: need 1 <= delay <= block.");
        }

        Positive(e, $"{p}:BadKeyWindow", a.BadKeyWindow);
    }

    static void CheckMcp(List<string> e, McpConfig m, LimitsConfig limits)
    {
        const string p = "Gateway:Mcp";
        if (m.MaxAttachmentSize < 1 || m.MaxAttachmentSize > limits.MaxMessageSize)
        {
            e.Add($"{p}:MaxAttachmentSize: must be between 1 and Gateway:Limits:MaxMessageSize ({limits.MaxMessageSize}).");
        }

        // Base64 is 4/3 of the bytes; the rest of a call (addresses, text, JSON) gets at least 1 MiB.
        var needed = (m.MaxAttachmentSize + 2) / 3 * 4 + 1024 * 1024;
        if (m.MaxRequestBodySize < needed || m.MaxRequestBodySize > 1024L * 1024 * 1024)
        {
            e.Add($"{p}:MaxRequestBodySize: must be between {needed} (MaxAttachmentSize as base64, plus 1 MiB) and 1073741824 bytes.");
        }

        if (m.MaxAttachments < 0 || m.MaxConcurrentRequests < 1 || m.MaxConcurrentRequestsPerTenant < 1 || m.MaxConcurrentRequestsPerTenant > m.MaxConcurrentRequests)
        {
            e.Add($"{p}: MaxAttachments must be at least 0, and 1 <= MaxConcurrentRequestsPerTenant <= MaxConcurrentRequests.");
        }

        if (m.MinRequestBodyDataRate < 1)
        {
            e.Add($"{p}:MinRequestBodyDataRate: must be at least 1 byte per second.");
        }

        foreach (var name in m.EffectiveAllowedHeaders)
        {
            if (string.IsNullOrEmpty(name) || !name.All(c => c is > ' ' and < (char)127 and not ':'))
            {
                e.Add($"{p}:AllowedHeaders: '{name}' is not a header field name (RFC 5322 section 3.6.8).");
            }
            else if (McpConfig.IsForbiddenHeader(name))
            {
                e.Add($"{p}:AllowedHeaders: '{name}' is set by the gateway itself and cannot be allowed.");
            }
        }
    }

    static void Positive(List<string> e, string path, TimeSpan value)
    {
        if (value <= TimeSpan.Zero)
        {
            e.Add($"{path}: must be a positive duration (hh:mm:ss).");
        }
    }

    static void CheckFile(List<string> e, string path, string? file, string what)
    {
        if (string.IsNullOrWhiteSpace(file))
        {
            e.Add($"{path}: required: {what}.");
        }
        else if (!File.Exists(file))
        {
            e.Add($"{path}: '{file}' does not exist: {what}.");
        }
    }
}
