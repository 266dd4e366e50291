using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Admin;
using SmtpGateway.Configuration;

namespace SmtpGateway.Tests.Admin;

public sealed class HealthTests : IDisposable
{
    readonly string _data = Directory.CreateTempSubdirectory("smtpgw-health-").FullName;

    public void Dispose() => Directory.Delete(_data, recursive: true);

    [Fact]
    public async Task A_probe_answer_is_reused_for_two_seconds_and_shared_by_concurrent_callers()
    {
        var time = new FakeTimeProvider();
        var runs = 0;
        var release = new TaskCompletionSource();
        var probe = new HealthProbe(time, async _ =>
        {
            Interlocked.Increment(ref runs);
            await release.Task;
            return HealthCheckResult.Healthy();
        });

        // A flood while the first probe is in flight: one probe.
        var callers = Enumerable.Range(0, 50).Select(_ => probe.GetAsync(CancellationToken.None)).ToList();
        release.SetResult();
        await Task.WhenAll(callers);
        Assert.Equal(1, runs);

        time.Advance(TimeSpan.FromSeconds(1.9));
        await probe.GetAsync(CancellationToken.None);
        Assert.Equal(1, runs);

        time.Advance(TimeSpan.FromSeconds(0.2));
        await probe.GetAsync(CancellationToken.None);
        Assert.Equal(2, runs);
    }

    [Fact]
    public async Task A_slow_probe_is_aged_from_its_end()
    {
        var time = new FakeTimeProvider();
        var runs = 0;
        var probe = new HealthProbe(time, _ =>
        {
            Interlocked.Increment(ref runs);
            time.Advance(TimeSpan.FromSeconds(3)); // a resolver timing out
            return Task.FromResult(HealthCheckResult.Unhealthy());
        });

        await probe.GetAsync(CancellationToken.None);
        await probe.GetAsync(CancellationToken.None);
        Assert.Equal(1, runs);
        time.Advance(HealthProbe.Ttl);
        await probe.GetAsync(CancellationToken.None);
        Assert.Equal(2, runs);
    }

    [Fact]
    public async Task The_spool_probe_writes_and_removes_its_file_and_fails_when_the_directory_is_gone()
    {
        var spool = Path.Combine(_data, "spool");
        Directory.CreateDirectory(spool);
        var config = Options.Create(new GatewayConfig { DataDirectory = _data });
        var time = new FakeTimeProvider();
        var check = new SpoolHealthCheck(config, time, NullLoggerFactory.Instance);

        var ok = await check.CheckHealthAsync(new HealthCheckContext());
        Assert.Equal(HealthStatus.Healthy, ok.Status);
        Assert.Empty(Directory.EnumerateFileSystemEntries(spool));

        // Root ignores file modes, so "unwritable" is made by taking the directory away (the functional test remounts read-only).
        Directory.Delete(spool);
        time.Advance(HealthProbe.Ttl);
        var failed = await check.CheckHealthAsync(new HealthCheckContext());
        Assert.Equal(HealthStatus.Unhealthy, failed.Status);
        Assert.DoesNotContain(_data, failed.Description, StringComparison.Ordinal); // no path for anonymous callers

        Directory.CreateDirectory(spool);
        time.Advance(HealthProbe.Ttl);
        Assert.Equal(HealthStatus.Healthy, (await check.CheckHealthAsync(new HealthCheckContext())).Status);
    }

    [Fact]
    public async Task The_dns_check_passes_without_a_query_when_delivery_is_not_mx()
    {
        var config = Options.Create(new GatewayConfig { Delivery = { Mode = DeliveryMode.Smarthost }, Dns = { Servers = ["192.0.2.1"] } });
        var check = new DnsHealthCheck(config, new FakeTimeProvider(), NullLoggerFactory.Instance);
        Assert.Equal(HealthStatus.Healthy, (await check.CheckHealthAsync(new HealthCheckContext())).Status);
    }

    [Fact]
    public async Task The_dns_check_fails_when_the_resolver_does_not_answer()
    {
        // A UDP socket that never replies stands for a resolver that is down.
        using var silent = new System.Net.Sockets.UdpClient(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        var port = ((System.Net.IPEndPoint)silent.Client.LocalEndPoint!).Port;
        var config = Options.Create(new GatewayConfig
        {
            Delivery = { Mode = DeliveryMode.Mx },
            Dns = { Servers = [$"127.0.0.1:{port}"], Timeout = TimeSpan.FromMilliseconds(300) },
        });
        var check = new DnsHealthCheck(config, TimeProvider.System, NullLoggerFactory.Instance);
        var result = await check.CheckHealthAsync(new HealthCheckContext());
        Assert.Equal(HealthStatus.Unhealthy, result.Status);
    }

    [Fact]
    public async Task The_report_lists_each_check_without_exception_text()
    {
        var report = new HealthReport(
            new Dictionary<string, HealthReportEntry>
            {
                ["spool"] = new(HealthStatus.Healthy, "spool directory writable", TimeSpan.FromMilliseconds(1.26), null, null),
                ["hsm"] = new(HealthStatus.Unhealthy, "C_Login failed with PIN 1234", TimeSpan.Zero, new InvalidOperationException("PIN 1234"), null),
            },
            TimeSpan.FromMilliseconds(2));
        var context = new DefaultHttpContext();
        context.Response.Body = new MemoryStream();
        await HealthEndpoints.WriteAsync(context, report);

        var text = System.Text.Encoding.UTF8.GetString(((MemoryStream)context.Response.Body).ToArray());
        Assert.DoesNotContain("1234", text, StringComparison.Ordinal);
        using var json = JsonDocument.Parse(text);
        Assert.Equal("Unhealthy", json.RootElement.GetProperty("status").GetString());
        var checks = json.RootElement.GetProperty("checks");
        Assert.Equal("Healthy", checks.GetProperty("spool").GetProperty("status").GetString());
        Assert.Equal("spool directory writable", checks.GetProperty("spool").GetProperty("description").GetString());
        Assert.Equal("the check failed (InvalidOperationException)", checks.GetProperty("hsm").GetProperty("description").GetString());
        Assert.StartsWith("application/json", context.Response.ContentType, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(null, true)]
    [InlineData("simple", true)]
    [InlineData("JSON", true)]
    [InlineData("xml", false)]
    public void Logging_format_is_validated(string? format, bool valid)
    {
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(format is null ? [] : [new KeyValuePair<string, string?>(Hosting.GatewayLogging.FormatKey, format)]).Build();
        Assert.Equal(valid, Hosting.GatewayLogging.Validate(configuration) is null);
    }

    [Fact]
    public void A_log_scope_prints_its_values_and_enumerates_them()
    {
        var scope = new Diagnostics.LogScope(Diagnostics.LogScope.Of("QueueId", "q1"), Diagnostics.LogScope.Of("TenantId", "tenant-a"));
        Assert.Equal("QueueId=q1, TenantId=tenant-a", scope.ToString());
        Assert.Equal(["QueueId", "TenantId"], scope.Select(v => v.Key));
    }
}
