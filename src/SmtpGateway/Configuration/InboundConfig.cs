namespace SmtpGateway.Configuration;

/// <summary>Where a tenant's inbound mail (unauthenticated mail for its own domains: replies, bounces to it) goes.</summary>
public enum InboundRouteKind
{
    /// <summary>Written as .eml files into a directory (development default).</summary>
    Drop,

    /// <summary>Relayed over SMTP to the tenant's own mail server.</summary>
    Forward,

    /// <summary>POSTed to the tenant's HTTPS endpoint, signed with HMAC-SHA256.</summary>
    Webhook,
}

/// <summary>"Tenants:&lt;id&gt;:Inbound": the route of this tenant's inbound mail.</summary>
public sealed class InboundRouteConfig
{
    /// <summary>Route kind; Drop by default so that a development setup loses nothing.</summary>
    public InboundRouteKind Route { get; set; } = InboundRouteKind.Drop;

    /// <summary>Drop folder; default DataDirectory/inbound/&lt;tenant&gt;. Relative paths are under DataDirectory.</summary>
    public string? DropDirectory { get; set; }

    /// <summary>Used when <see cref="Route"/> is Forward.</summary>
    public InboundForwardConfig Forward { get; set; } = new();

    /// <summary>Used when <see cref="Route"/> is Webhook.</summary>
    public InboundWebhookConfig Webhook { get; set; } = new();

    /// <summary>
    /// Adds one error per problem to <paramref name="errors"/>, each prefixed with its configuration path
    /// (<paramref name="path"/> is this section, e.g. "Tenants:tenant-a:Inbound"). Only the section of the selected
    /// route is checked: a dormant Forward or Webhook section may be half filled while it is being prepared.
    /// With <paramref name="checkFiles"/> the secret file must exist (and a named environment variable must be set
    /// when there is no file), i.e. the check is made against the machine the gateway runs on.
    /// </summary>
    public void Validate(string path, List<string> errors, bool checkFiles)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(errors);

        if (!Enum.IsDefined(Route))
        {
            errors.Add($"{path}:Route: must be one of {string.Join(", ", Enum.GetNames<InboundRouteKind>())}.");
            return;
        }

        if (DropDirectory is not null && string.IsNullOrWhiteSpace(DropDirectory))
        {
            errors.Add($"{path}:DropDirectory: must not be blank (omit it for the default DataDirectory/inbound/<tenant>).");
        }

        switch (Route)
        {
            case InboundRouteKind.Forward:
                (Forward ?? new()).Validate($"{path}:Forward", errors);
                break;
            case InboundRouteKind.Webhook:
                (Webhook ?? new()).Validate($"{path}:Webhook", errors, checkFiles);
                break;
        }
    }
}

/// <summary>"Tenants:&lt;id&gt;:Inbound:Forward": the tenant's SMTP server. One connection per attempt, never AUTH.</summary>
public sealed class InboundForwardConfig
{
    public string Host { get; set; } = "";

    public int Port { get; set; } = 25;

    /// <summary>
    /// STARTTLS towards the tenant's server (RFC 3207). Verify (the default) requires STARTTLS and checks the certificate
    /// against the system roots and <see cref="Host"/> (RFC 6125): inbound mail is the tenant's private correspondence, and
    /// the destination is known in advance, unlike an MX. A configuration opts down explicitly with Required (any
    /// certificate) or Opportunistic (RFC 7435: plaintext when STARTTLS is missing or fails).
    /// </summary>
    public TlsPolicy StartTls { get; set; } = TlsPolicy.Verify;

    /// <summary>EHLO name; default the machine's host name.</summary>
    public string? HeloName { get; set; }

    /// <summary>Bound on TCP connect plus greeting plus STARTTLS; the attempt is deferred (4.4.1) when exceeded.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(30);

    internal void Validate(string path, List<string> errors)
    {
        if (string.IsNullOrWhiteSpace(Host))
        {
            errors.Add($"{path}:Host: required when Route is Forward.");
        }

        if (Port is < 1 or > 65535)
        {
            errors.Add($"{path}:Port: {Port} is out of range 1-65535.");
        }

        if (!Enum.IsDefined(StartTls))
        {
            errors.Add($"{path}:StartTls: must be one of {string.Join(", ", Enum.GetNames<TlsPolicy>())}.");
        }

        if (!string.IsNullOrEmpty(HeloName) && !Smtp.SmtpGrammar.IsDomain(HeloName))
        {
            errors.Add($"{path}:HeloName: '{HeloName}' is not a host name (RFC 5321 section 4.1.1.1).");
        }

        if (ConnectTimeout <= TimeSpan.Zero)
        {
            errors.Add($"{path}:ConnectTimeout: must be positive.");
        }
    }
}

/// <summary>
/// "Tenants:&lt;id&gt;:Inbound:Webhook": the tenant's HTTP endpoint. The shared secret is never in this file:
/// it comes from <see cref="SecretEnvironmentVariable"/> (when set and non-empty) or else <see cref="SecretFile"/>.
/// </summary>
public sealed class InboundWebhookConfig
{
    /// <summary>Absolute http or https URL. Not logged beyond scheme, host and port (paths and queries often carry tokens).</summary>
    public string? Url { get; set; }

    /// <summary>File holding the secret (UTF-8, surrounding white space ignored), readable only by the gateway user. Relative paths are relative to the working directory, like Hsm:PinFile.</summary>
    public string? SecretFile { get; set; }

    /// <summary>Environment variable holding the secret; takes precedence over <see cref="SecretFile"/> when set.</summary>
    public string? SecretEnvironmentVariable { get; set; }

    /// <summary>Bound on one request until the response headers arrive.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(30);

    internal void Validate(string path, List<string> errors, bool checkFiles)
    {
        if (string.IsNullOrWhiteSpace(Url))
        {
            errors.Add($"{path}:Url: required when Route is Webhook.");
        }
        else if (!Uri.TryCreate(Url, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            // Only the shape is reported, not the value: a webhook URL may embed a token.
            errors.Add($"{path}:Url: must be an absolute http or https URL.");
        }
        else if (uri.UserInfo.Length > 0)
        {
            // Credentials in a URL end up in proxies' and servers' logs; the signature authenticates the gateway instead.
            errors.Add($"{path}:Url: must not contain user information (credentials).");
        }
        else if (uri.Scheme == Uri.UriSchemeHttp && !uri.IsLoopback)
        {
            // The signature covers timestamp, queue id and body, not the envelope headers (tenant, sender, recipients):
            // over plain HTTP anyone on the path could read the mail and rewrite those. Plain HTTP only to this host.
            errors.Add($"{path}:Url: must be https (plain http is allowed only to a loopback address).");
        }

        var hasFile = !string.IsNullOrWhiteSpace(SecretFile);
        var hasVariable = !string.IsNullOrWhiteSpace(SecretEnvironmentVariable);
        if (!hasFile && !hasVariable)
        {
            errors.Add($"{path}:SecretFile: a secret is required (SecretFile or SecretEnvironmentVariable).");
        }

        if (checkFiles && hasFile && !File.Exists(SecretFile))
        {
            errors.Add($"{path}:SecretFile: '{SecretFile}' does not exist.");
        }

        if (checkFiles && hasVariable && !hasFile && string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(SecretEnvironmentVariable!)))
        {
            errors.Add($"{path}:SecretEnvironmentVariable: '{SecretEnvironmentVariable}' is not set and there is no SecretFile.");
        }

        if (Timeout <= TimeSpan.Zero)
        {
            errors.Add($"{path}:Timeout: must be positive.");
        }
    }
}
