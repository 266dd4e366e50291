using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using SmtpGateway.FunctionalTests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Issue 13: /readyz turns 503 when the spool stops taking writes and when a tenant's HSM token cannot log in, and 200
/// again once the fault is gone, without a restart; /healthz (alive) stays 200 throughout. Each fault is a real one: a
/// read-only remount of the spool's file system, a PIN the SoftHSM2 token refuses.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class HealthTests(ITestOutputHelper output)
{
    static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);
    const string WrongPin = "0000-not-the-pin-0000";

    /// <summary>One GET, synchronously (EventPoll reads with a plain function): status and body.</summary>
    static Probe Get(GatewayProcessHarness harness, string path)
    {
        using var client = harness.AdminClient(null);
        using var response = client.Send(new HttpRequestMessage(HttpMethod.Get, path));
        using var reader = new StreamReader(response.Content.ReadAsStream());
        return new Probe(path, response.StatusCode, reader.ReadToEnd());
    }

    /// <summary>Polls /readyz until it answers <paramref name="status"/> (with /healthz 200 at every poll) and returns that answer.</summary>
    static async Task<Probe> ReadyzBecomesAsync(GatewayProcessHarness harness, HttpStatusCode status, CancellationToken cancellationToken)
    {
        var seen = await EventPoll.UntilAsync<Probe>(
            () =>
            {
                var alive = Get(harness, "/healthz");
                Assert.True(alive.Status == HttpStatusCode.OK, $"/healthz must stay 200: {alive}");
                return [Get(harness, "/readyz")];
            },
            probes => probes[0].Status == status,
            () => harness.GatewayPid is null,
            probes => $"/readyz did not turn {(int)status}; last answer: {probes[0]}",
            Wait,
            cancellationToken);
        return seen[0];
    }

    static string CheckStatus(Probe probe, string check) =>
        JsonDocument.Parse(probe.Body).RootElement.GetProperty("checks").GetProperty(check).GetProperty("status").GetString()!;

    [Fact]
    public Task Readyz_is_503_while_the_spool_directory_is_read_only_and_200_after() => FaultGatewayHarness.RunAsync(output,
        (_, _, _) => Task.CompletedTask,
        async harness =>
        {
            // Root ignores file modes (chmod 500 would not stop the probe), and remounting the spool's own file system
            // read-only is refused while the gateway holds spool files open for writing (EBUSY). So a read-only tmpfs is
            // mounted over the spool directory: every new lookup of that path lands on it and a create fails with EROFS,
            // which stops root as it stops everyone; unmounting it uncovers the spool as it was.
            if (!string.Equals(Environment.UserName, "root", StringComparison.Ordinal))
            {
                Assert.Fail("this test must run as root (it mounts a read-only tmpfs over the spool directory); ./test.sh runs as root in CI");
            }

            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            var spool = Path.Combine(harness.DataDirectory, "spool");
            var ready = await ReadyzBecomesAsync(harness, HttpStatusCode.OK, cts.Token);
            output.WriteLine(ready.ToString());
            Assert.Equal("Healthy", CheckStatus(ready, "spool"));
            Assert.Equal("Healthy", CheckStatus(ready, "listeners"));
            Assert.Equal("Healthy", CheckStatus(ready, "hsm"));

            await FaultTests.RunToolAsync("/usr/bin/mount", "-t", "tmpfs", "-o", "ro,size=1m,mode=0700", "tmpfs", spool);
            var mounted = true;
            harness.OnDispose(() => mounted ? FaultTests.RunToolAsync("/usr/bin/umount", "-l", spool) : Task.CompletedTask);
            var notReady = await ReadyzBecomesAsync(harness, HttpStatusCode.ServiceUnavailable, cts.Token);
            output.WriteLine(notReady.ToString());
            Assert.Equal("Unhealthy", CheckStatus(notReady, "spool"));
            Assert.Equal("Healthy", CheckStatus(notReady, "hsm")); // only the spool is at fault
            Assert.DoesNotContain(harness.DataDirectory, notReady.Body, StringComparison.Ordinal); // no path for anonymous callers

            await FaultTests.RunToolAsync("/usr/bin/umount", spool);
            mounted = false;
            var again = await ReadyzBecomesAsync(harness, HttpStatusCode.OK, cts.Token);
            Assert.Equal("Healthy", CheckStatus(again, "spool"));
            Assert.Empty(Directory.EnumerateFiles(spool, ".readyz*")); // the probe removes its file each time
            Assert.Contains("Not ready: spool directory", harness.GatewayOutput, StringComparison.Ordinal);
            await LogShowsAsync(harness, "Ready again: spool", cts.Token); // the console logger writes from its own queue
        });

    [Fact]
    public Task Readyz_is_503_while_a_tenant_token_refuses_its_pin_and_200_after() => FaultGatewayHarness.RunAsync(output,
        (_, _, _) => Task.CompletedTask,
        async harness =>
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            const string Tenant = "tenant-b";
            var ready = await ReadyzBecomesAsync(harness, HttpStatusCode.OK, cts.Token);
            Assert.Equal("Healthy", CheckStatus(ready, "hsm")); // the probe has logged in to every tenant's token

            var restore = await BreakPinAsync(harness, Tenant, cts.Token);

            var notReady = await ReadyzBecomesAsync(harness, HttpStatusCode.ServiceUnavailable, cts.Token);
            output.WriteLine(notReady.ToString());
            Assert.Equal("Unhealthy", CheckStatus(notReady, "hsm"));
            Assert.Equal("Healthy", CheckStatus(notReady, "spool"));
            Assert.DoesNotContain(Tenant, notReady.Body, StringComparison.Ordinal); // counts only; the log names the tenant
            Assert.DoesNotContain(WrongPin, notReady.Body, StringComparison.Ordinal);

            await restore();
            var again = await ReadyzBecomesAsync(harness, HttpStatusCode.OK, cts.Token);
            Assert.Equal("Healthy", CheckStatus(again, "hsm"));
            await LogShowsAsync(harness, "Ready again: hsm", cts.Token);
            // Logged once, on the change, however many times /readyz was asked meanwhile (the probe is cached and keeps its state).
            Assert.Single(harness.GatewayOutput.Split('\n'), l => l.Contains($"Not ready: tenant {Tenant}'s HSM token is not usable (LoginFailed", StringComparison.Ordinal));
            Assert.DoesNotContain(WrongPin, harness.GatewayOutput, StringComparison.Ordinal);
        });

    static Task LogShowsAsync(GatewayProcessHarness harness, string text, CancellationToken cancellationToken) =>
        EventPoll.UntilAsync<string>(
            () => [harness.GatewayOutput],
            output => output[0].Contains(text, StringComparison.Ordinal),
            () => harness.GatewayPid is null,
            _ => $"the gateway did not log '{text}'",
            Wait,
            cancellationToken);

    [Fact]
    public async Task In_mx_mode_readyz_is_503_while_the_resolver_is_down_and_200_after()
    {
        var harness = new MxHarness();
        try
        {
            await harness.InitializeAsync();
            await harness.RunAsync(output, async () =>
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
                var ready = await ReadyzBecomesAsync(harness, HttpStatusCode.OK, cts.Token);
                output.WriteLine(ready.ToString());
                Assert.Equal("Healthy", CheckStatus(ready, "dns"));

                // The harness's unbound is the configured resolver (Gateway:Dns:Servers); killed, nothing answers on its port.
                await harness.Dns.StopAsync();
                var notReady = await ReadyzBecomesAsync(harness, HttpStatusCode.ServiceUnavailable, cts.Token);
                output.WriteLine(notReady.ToString());
                Assert.Equal("Unhealthy", CheckStatus(notReady, "dns"));
                Assert.Equal("Healthy", CheckStatus(notReady, "spool"));

                await harness.Dns.RestartAsync("probe.test", cts.Token);
                var again = await ReadyzBecomesAsync(harness, HttpStatusCode.OK, cts.Token);
                Assert.Equal("Healthy", CheckStatus(again, "dns"));
            });
        }
        finally
        {
            await harness.DisposeAsync();
        }
    }

    [Fact]
    public Task HAProxy_with_the_example_config_stops_sending_sessions_to_a_gateway_that_is_not_ready_and_resumes_after() => FaultGatewayHarness.RunAsync(output,
        (_, _, _) => Task.CompletedTask,
        async harness =>
        {
            const string HAProxy = "/usr/sbin/haproxy";
            if (!File.Exists(HAProxy))
            {
                Assert.Fail("haproxy is missing (Debian package haproxy; ./test.sh installs it)");
            }

            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            await ReadyzBecomesAsync(harness, HttpStatusCode.OK, cts.Token);

            // config/examples/haproxy-health.cfg as it is, pointed at this gateway: one server, loopback ports.
            var front = FreePort.Next();
            var frontTls = FreePort.Next();
            var example = await File.ReadAllTextAsync(Path.Combine(RepoPaths.Root, "config", "examples", "haproxy-health.cfg"), cts.Token);
            var config = string.Join('\n', example.Split('\n')
                .Where(line => !line.TrimStart().StartsWith("server gw2 ", StringComparison.Ordinal))
                .Select(line => line
                    .Replace("bind :587", $"bind 127.0.0.1:{front}", StringComparison.Ordinal)
                    .Replace("bind :465", $"bind 127.0.0.1:{frontTls}", StringComparison.Ordinal)
                    .Replace("10.0.0.11:2525", $"127.0.0.1:{harness.SubmissionPort}", StringComparison.Ordinal)
                    .Replace("10.0.0.11:2465", $"127.0.0.1:{harness.SubmissionsPort}", StringComparison.Ordinal)
                    .Replace("port 8025", $"port {harness.AdminPort}", StringComparison.Ordinal)));
            Assert.DoesNotContain("10.0.0.", config, StringComparison.Ordinal);
            var path = Path.Combine(harness.WorkDirectory, "haproxy.cfg");
            await File.WriteAllTextAsync(path, config, cts.Token);
            using var haproxy = ChildProcess.Start("haproxy", HAProxy, ["-db", "-f", path], harness.WorkDirectory);
            harness.OnDispose(() => haproxy.KillAndWaitAsync(TimeSpan.FromSeconds(10)));

            // Through HAProxy: the gateway's banner while ready, no session while /readyz is 503, the banner again after.
            await BannerThroughAsync(front, expected: true, haproxy, cts.Token);
            var restore = await BreakPinAsync(harness, "tenant-b", cts.Token);
            await ReadyzBecomesAsync(harness, HttpStatusCode.ServiceUnavailable, cts.Token);
            await BannerThroughAsync(front, expected: false, haproxy, cts.Token);
            await restore();
            await ReadyzBecomesAsync(harness, HttpStatusCode.OK, cts.Token);
            await BannerThroughAsync(front, expected: true, haproxy, cts.Token);
            output.WriteLine(haproxy.Output);
        });

    /// <summary>Polls until a connection to HAProxy's <paramref name="port"/> does (or does not) get the gateway's 220 banner.</summary>
    static Task BannerThroughAsync(int port, bool expected, ChildProcess haproxy, CancellationToken cancellationToken) =>
        EventPoll.UntilAsync<string>(
            () => [Banner(port)],
            seen => seen[0].StartsWith("220 ", StringComparison.Ordinal) == expected,
            () => haproxy.HasExited,
            seen => $"through HAProxy expected {(expected ? "the banner" : "no session")}, got: {seen[0]}\n{haproxy.Output}",
            TimeSpan.FromSeconds(30),
            cancellationToken);

    /// <summary>The first line a connection receives, or what went wrong (HAProxy closes it when no server is up).</summary>
    static string Banner(int port)
    {
        try
        {
            using var tcp = new System.Net.Sockets.TcpClient();
            tcp.Connect(IPAddress.Loopback, port);
            tcp.ReceiveTimeout = 5000;
            using var reader = new StreamReader(tcp.GetStream());
            return reader.ReadLine() ?? "(closed without a line)";
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException)
        {
            return $"({e.GetType().Name}: {e.Message})";
        }
    }

    /// <summary>
    /// Makes <paramref name="tenant"/>'s token refuse the gateway's login; the returned function undoes it.
    /// </summary>
    /// <remarks>
    /// How login is broken for real: SoftHSM2 keeps a login for the life of the process, so changing the token's PIN behind
    /// the gateway's back would show only at its next login. The gateway logs in again when the configured PIN changes (a
    /// reload that renews the tenant's PIN source), which is what an operator does when rotating the PIN. So the tenant's
    /// Hsm:PinFile is pointed, by a config reload, at a file holding a PIN the token does not know: the gateway logs out,
    /// C_Login answers CKR_PIN_INCORRECT, and the token is unusable until the PinFile setting is taken out again (the real
    /// PIN file is read afresh and the login succeeds at once: the hold-off after a refused PIN applies to that PIN only).
    /// </remarks>
    static async Task<Func<Task>> BreakPinAsync(GatewayHarness harness, string tenant, CancellationToken cancellationToken)
    {
        var pins = harness.DataDirectory + ".pins"; // the default PIN directory (0700), outside the data directory
        var wrong = Path.Combine(pins, tenant + ".wrong.pin");
        await File.WriteAllTextAsync(wrong, WrongPin + "\n", cancellationToken);
        File.SetUnixFileMode(wrong, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var original = await File.ReadAllTextAsync(harness.ConfigPath, cancellationToken);
        await WriteConfigAsync(harness, original, root => root["Tenants"]![tenant]!["Hsm"] = new JsonObject { ["PinFile"] = wrong }, cancellationToken);
        return () => WriteConfigAsync(harness, original, _ => { }, CancellationToken.None);
    }

    /// <summary>Writes the gateway's config as <paramref name="original"/> changed by <paramref name="change"/> (the gateway reloads it).</summary>
    static async Task WriteConfigAsync(GatewayHarness harness, string original, Action<JsonObject> change, CancellationToken cancellationToken)
    {
        var root = JsonNode.Parse(original)!.AsObject();
        change(root);
        await File.WriteAllTextAsync(harness.ConfigPath, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }), cancellationToken);
    }

    sealed record Probe(string Path, HttpStatusCode Status, string Body)
    {
        public override string ToString() => $"{Path}: {(int)Status} {Body}";
    }
}
