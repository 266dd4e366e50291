using DnsClient;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Listener;
using SmtpGateway.Signing;

namespace SmtpGateway.Admin;

/// <summary>Every configured SMTP listener is bound and accepting (not yet started, or draining for a stop: not ready).</summary>
internal sealed class ListenerHealthCheck(SmtpListenerService listeners) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        // Two integer reads: no cache needed.
        var (accepting, configured) = (listeners.AcceptingCount, listeners.ConfiguredCount);
        var text = $"{accepting} of {configured} listener(s) accepting";
        return Task.FromResult(accepting == configured ? HealthCheckResult.Healthy(text) : HealthCheckResult.Unhealthy(text));
    }
}

/// <summary>Base of the probing checks: the cached probe and a log line when the state changes (not on every probe).</summary>
internal abstract class ProbingHealthCheck : IHealthCheck
{
    readonly HealthProbe _probe;
    int _wasHealthy = 1;

    protected ProbingHealthCheck(TimeProvider time, ILoggerFactory loggers)
    {
        Logger = loggers.CreateLogger("SmtpGateway.Admin.Health");
        _probe = new HealthProbe(time, async ct =>
        {
            var result = await ProbeAsync(ct).ConfigureAwait(false);
            var healthy = result.Status == HealthStatus.Healthy ? 1 : 0;
            if (Interlocked.Exchange(ref _wasHealthy, healthy) == 0 && healthy == 1)
            {
                HealthLog.Recovered(Logger, Name);
            }

            return result;
        });
    }

    protected ILogger Logger { get; }

    protected abstract string Name { get; }

    /// <summary>Whether the last probe failed too: a failure is logged only on the change.</summary>
    protected bool WasFailing => Volatile.Read(ref _wasHealthy) == 0;

    protected abstract Task<HealthCheckResult> ProbeAsync(CancellationToken cancellationToken);

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        _probe.GetAsync(cancellationToken);
}

/// <summary>
/// The spool takes a write: a small file is created, written, fsynced and deleted in the spool directory, as a message's
/// commit would (a read-only remount, a full or failed disk, lost permissions all show here before a client sees 451).
/// </summary>
internal sealed class SpoolHealthCheck(IOptions<GatewayConfig> config, TimeProvider time, ILoggerFactory loggers) : ProbingHealthCheck(time, loggers)
{
    readonly string _directory = GatewayPaths.SpoolDirectory(config.Value);

    protected override string Name => "spool";

    protected override Task<HealthCheckResult> ProbeAsync(CancellationToken cancellationToken)
    {
        // In the spool's root, where recovery and the queue scans look at no file (they read tmp/, queue/, state/, …).
        var probe = Path.Combine(_directory, $".readyz.{Environment.ProcessId}.probe");
        try
        {
            using (var file = new FileStream(probe, FileMode.Create, FileAccess.Write, FileShare.None, 1, FileOptions.None))
            {
                file.Write("readyz\n"u8);
                file.Flush(flushToDisk: true);
            }

            File.Delete(probe);
            return Task.FromResult(HealthCheckResult.Healthy("spool directory writable"));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            if (!WasFailing)
            {
                HealthLog.SpoolNotWritable(Logger, _directory, ex.Message);
            }

            return Task.FromResult(HealthCheckResult.Unhealthy($"spool directory not writable ({ex.GetType().Name})"));
        }
    }
}

/// <summary>
/// Every tenant's HSM token is logged in and gives a session: <see cref="IHsm.Connect"/> with the tenant's configured
/// token and PIN. While the login stands this is a fingerprint comparison and a pooled session, no PKCS#11 call; when the
/// configured PIN changed it logs in again, and a refused PIN is not offered again before the HSM layer's hold-off (the
/// probe spends no PIN tries). The body says how many tenants fail, not which (the log names them).
/// </summary>
internal sealed class HsmHealthCheck(IHsm hsm, TenantHsmTokens tokens, TenantDirectoryService tenants, TimeProvider time, ILoggerFactory loggers)
    : ProbingHealthCheck(time, loggers)
{
    readonly HashSet<string> _failing = new(StringComparer.Ordinal);

    protected override string Name => "hsm";

    protected override Task<HealthCheckResult> ProbeAsync(CancellationToken cancellationToken)
    {
        var all = tenants.Current.Tenants.Keys.ToList();
        var failed = 0;
        foreach (var tenant in all)
        {
            string? reason = null;
            try
            {
                hsm.Connect(tokens.Resolve(tenant));
            }
            catch (HsmException ex)
            {
                reason = ex.ReturnValue is null ? ex.Kind.ToString() : $"{ex.Kind}, {ex.ReturnValue}";
            }
            catch (SigningException)
            {
                reason = "no readable PIN";
            }

            // One log line per tenant and change; the probe result is shared by every caller, so this runs alone.
            if (reason is null)
            {
                _failing.Remove(tenant);
                continue;
            }

            failed++;
            if (_failing.Add(tenant))
            {
                HealthLog.TokenNotUsable(Logger, tenant, reason);
            }
        }

        return Task.FromResult(failed == 0
            ? HealthCheckResult.Healthy($"{all.Count} tenant token(s) logged in")
            : HealthCheckResult.Unhealthy($"{failed} of {all.Count} tenant token(s) not usable"));
    }
}

/// <summary>
/// In MX mode, the configured resolver answers: one uncached query for "localhost." (RFC 6761 §6.3: resolvers answer it
/// themselves, so the probe needs neither the Internet nor any zone of ours). NOERROR or NXDOMAIN is an answer; a
/// timeout, SERVFAIL or REFUSED is not. In other delivery modes the gateway asks no DNS and the check passes.
/// </summary>
internal sealed class DnsHealthCheck : ProbingHealthCheck
{
    readonly LookupClient? _dns;

    public DnsHealthCheck(IOptions<GatewayConfig> config, TimeProvider time, ILoggerFactory loggers)
        : base(time, loggers)
    {
        var gateway = config.Value;
        if (gateway.Delivery.Mode != DeliveryMode.Mx)
        {
            return;
        }

        var servers = gateway.Dns.Endpoints();
        var options = servers.Length > 0 ? new LookupClientOptions(servers) : new LookupClientOptions();
        options.UseCache = false;
        options.Timeout = gateway.Dns.Timeout < HealthProbe.Timeout ? gateway.Dns.Timeout : HealthProbe.Timeout - TimeSpan.FromSeconds(1);
        options.Retries = 0;
        options.ThrowDnsErrors = false;
        options.ContinueOnDnsError = false;
        options.ContinueOnEmptyResponse = false;
        _dns = new LookupClient(options);
    }

    protected override string Name => "dns";

    protected override async Task<HealthCheckResult> ProbeAsync(CancellationToken cancellationToken)
    {
        if (_dns is null)
        {
            return HealthCheckResult.Healthy("not used (delivery mode is not Mx)");
        }

        string reason;
        try
        {
            var response = await _dns.QueryAsync("localhost.", QueryType.A, QueryClass.IN, cancellationToken).ConfigureAwait(false);
            var code = response.Header.ResponseCode;
            if (code is DnsHeaderResponseCode.NoError or DnsHeaderResponseCode.NotExistentDomain)
            {
                return HealthCheckResult.Healthy("resolver answering");
            }

            reason = code.ToString();
        }
        catch (DnsResponseException ex)
        {
            reason = ex.Code.ToString();
        }
        catch (Exception ex) when (ex is System.Net.Sockets.SocketException or IOException or OperationCanceledException)
        {
            reason = ex.GetType().Name;
        }

        if (!WasFailing)
        {
            HealthLog.DnsNotAnswering(Logger, reason);
        }

        return HealthCheckResult.Unhealthy($"resolver not answering ({reason})");
    }
}
