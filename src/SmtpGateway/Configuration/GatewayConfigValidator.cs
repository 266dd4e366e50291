using System.Net;
using Microsoft.Extensions.Options;

namespace SmtpGateway.Configuration;

/// <summary>
/// Validates the whole configuration and reports every error with its path (as YARP does), so an operator
/// fixes a broken file in one pass. Runs at start (ValidateOnStart) and from `smtpgw check-config`.
/// </summary>
public sealed class GatewayConfigValidator : IValidateOptions<GatewayConfig>
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

        if (string.IsNullOrWhiteSpace(c.ServerName) || !Listener.SmtpGrammar.IsDomain(c.ServerName))
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

        if (c.Dkim.SignatureLifetime is { } lifetime && lifetime <= TimeSpan.Zero)
        {
            e.Add($"{G}:Dkim:SignatureLifetime: must be positive when set.");
        }

        if (c.Audit.MaxFileSize < 4096 || c.Audit.MaxFiles < 1)
        {
            e.Add($"{G}:Audit: MaxFileSize must be at least 4096 and MaxFiles at least 1.");
        }

        var lim = c.Limits;
        var lp = $"{G}:Limits";
        if (lim.MaxMessageSize < 65536)
        {
            e.Add($"{lp}:MaxMessageSize: {lim.MaxMessageSize} is below the 64 KiB minimum of RFC 5321 section 4.5.3.1.7.");
        }

        if (lim.MaxMessageSize > int.MaxValue)
        {
            e.Add($"{lp}:MaxMessageSize: {lim.MaxMessageSize} is above 2 GiB.");
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

        if (string.IsNullOrWhiteSpace(c.Spool.Directory))
        {
            e.Add($"{G}:Spool:Directory: required.");
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

        if (c.ShutdownTimeout < TimeSpan.Zero)
        {
            e.Add($"{G}:ShutdownTimeout: must not be negative.");
        }

        return e;
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
