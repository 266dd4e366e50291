using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Mcp;
using SmtpGateway.Submission;
using SmtpGateway.Tests.Signing;
using SmtpGateway.Tests.Submission;

namespace SmtpGateway.Tests.Mcp;

/// <summary>
/// The /mcp door in process: the bearer is a tenant session token checked by the pipeline's Identity stage with the real
/// TokenService (HMAC keys in the in-memory HSM double, time from a fake clock), so expiry, revocation, forgery and the
/// per-address throttle behave exactly as for SMTP AUTH; the tenant of every tool call is the token's.
/// </summary>
public sealed class McpAuthenticationTests : IDisposable
{
    readonly SubmissionBench _bench = new(new Dictionary<string, TenantConfig>
    {
        ["tenant-a"] = new() { Domains = ["tenant-a.example"], Limits = new TenantLimitsConfig { MaxSessions = 1 } },
        ["tenant-b"] = new() { Domains = ["tenant-b.example"] },
    });

    readonly SubmissionPipeline _pipeline;

    public McpAuthenticationTests() => _pipeline = _bench.Pipeline(new SoftwareKeySigner());

    public void Dispose() => _bench.Dispose();

    string Mint(string tenant, TimeSpan? ttl = null) => _bench.Tokens!.Mint(tenant, ttl ?? TimeSpan.FromMinutes(10), [], "mcp test").Token;

    McpAuthentication Door(RequestDelegate next, McpConfig? mcp = null) =>
        new(next, _pipeline, Options.Create(new GatewayConfig { Mcp = mcp ?? new McpConfig() }), _bench.Clock, NullLoggerFactory.Instance);

    static DefaultHttpContext Request(string? authorization, long? contentLength = null)
    {
        var http = new DefaultHttpContext();
        http.Request.Method = "POST";
        http.Request.Path = "/mcp";
        http.Connection.RemoteIpAddress = IPAddress.Parse("192.0.2.7");
        http.Request.ContentLength = contentLength;
        if (authorization is not null)
        {
            http.Request.Headers.Authorization = authorization;
        }

        http.Response.Body = new MemoryStream();
        return http;
    }

    static string Body(HttpContext http)
    {
        http.Response.Body.Position = 0;
        return new StreamReader(http.Response.Body, Encoding.UTF8).ReadToEnd();
    }

    /// <summary>The next middleware, recording the tenant it ran for (null: it never ran).</summary>
    sealed class Recorder
    {
        public string? Tenant { get; private set; }

        public int Runs { get; private set; }

        public Task Next(HttpContext http)
        {
            Runs++;
            Tenant = (http.User as McpCallerPrincipal)?.Caller.TenantId;
            return Task.CompletedTask;
        }
    }

    [Fact]
    public async Task A_valid_token_runs_the_tools_as_its_own_tenant_and_the_check_is_audited_as_mcp()
    {
        var next = new Recorder();
        var http = Request("Bearer " + Mint("tenant-b"));

        await Door(next.Next).InvokeAsync(http);

        Assert.Equal("tenant-b", next.Tenant);
        Assert.Equal(StatusCodes.Status200OK, http.Response.StatusCode);
        var auth = Assert.Single(_bench.Audit.Events, e => e.Action == "auth");
        Assert.Equal(("ok", "mcp", "tenant-b", "BEARER"), (auth.Result, auth.Channel, auth.Tenant, auth.Subject));
        Assert.NotNull(auth.TokenId);
    }

    [Fact]
    public async Task An_expired_token_is_refused_with_invalid_token_and_no_tool_runs()
    {
        var token = Mint("tenant-a", TimeSpan.FromMinutes(10));
        _bench.Clock.Advance(TimeSpan.FromMinutes(11));
        var next = new Recorder();
        var http = Request("Bearer " + token);

        await Door(next.Next).InvokeAsync(http);

        Assert.Equal(0, next.Runs);
        Assert.Equal(StatusCodes.Status401Unauthorized, http.Response.StatusCode);
        Assert.Equal("Bearer realm=\"smtpgw\", error=\"invalid_token\"", http.Response.Headers.WWWAuthenticate.ToString());
        using var error = JsonDocument.Parse(Body(http));
        Assert.Contains("not valid", error.RootElement.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal("refused", Assert.Single(_bench.Audit.Events, e => e.Action == "auth").Result);
    }

    [Fact]
    public async Task A_revoked_token_is_refused()
    {
        var minted = _bench.Tokens!.Mint("tenant-a", TimeSpan.FromMinutes(10), [], "to revoke");
        _bench.Tokens.Revoke(minted.Record.Id);
        // The gateway's refresh service re-reads the registry (as after a CLI or API revoke); here it is called directly.
        _bench.Tokens.Store.Refresh();
        var next = new Recorder();
        var http = Request("Bearer " + minted.Token);

        await Door(next.Next).InvokeAsync(http);

        Assert.Equal(0, next.Runs);
        Assert.Equal(StatusCodes.Status401Unauthorized, http.Response.StatusCode);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("Basic dGVuYW50LWE6eA==")]
    [InlineData("Bearer ")]
    public async Task No_bearer_token_gets_the_bare_challenge(string? authorization)
    {
        var next = new Recorder();
        var http = Request(authorization);

        await Door(next.Next).InvokeAsync(http);

        Assert.Equal(0, next.Runs);
        Assert.Equal(StatusCodes.Status401Unauthorized, http.Response.StatusCode);
        Assert.Equal("Bearer realm=\"smtpgw\"", http.Response.Headers.WWWAuthenticate.ToString());
        Assert.Empty(_bench.Audit.Events);
    }

    [Fact]
    public async Task A_forged_token_is_refused_repeated_guessing_from_one_address_gets_429_and_a_valid_token_still_passes_there()
    {
        var real = Mint("tenant-a");
        var forged = real[..^4] + (real[^4..] == "AAAA" ? "BBBB" : "AAAA");
        var next = new Recorder();
        var door = Door(next.Next);
        var statuses = new List<int>();
        for (var i = 0; i < 12; i++)
        {
            var http = Request("Bearer " + forged);
            var call = door.InvokeAsync(http);
            // Past the throttle's free failures each answer waits (the same growing delay SMTP AUTH gets, at most 5 s) on the
            // fake clock; the timer is armed before InvokeAsync returns, so one step of the longest delay releases it, and
            // twelve steps stay well inside the throttle's 5-minute window.
            _bench.Clock.Advance(TimeSpan.FromSeconds(5));
            await call.WaitAsync(TimeSpan.FromSeconds(10));
            statuses.Add(http.Response.StatusCode);
        }

        Assert.Equal(0, next.Runs);

        Assert.Equal(StatusCodes.Status401Unauthorized, statuses[0]);
        Assert.Equal(StatusCodes.Status429TooManyRequests, statuses[^1]);

        // Every local bridge shares 127.0.0.1: a valid token passes from a throttled address, as an admin key does.
        await door.InvokeAsync(Request("Bearer " + real));
        Assert.Equal("tenant-a", next.Tenant);
    }

    [Fact]
    public async Task A_body_over_the_limit_is_refused_with_413_after_the_token_and_before_any_tool()
    {
        var next = new Recorder();
        var mcp = new McpConfig { MaxRequestBodySize = 2 * 1024 * 1024, MaxAttachmentSize = 1024 };
        var http = Request("Bearer " + Mint("tenant-a"), contentLength: mcp.MaxRequestBodySize + 1);

        await Door(next.Next, mcp).InvokeAsync(http);

        Assert.Equal(0, next.Runs);
        Assert.Equal(StatusCodes.Status413PayloadTooLarge, http.Response.StatusCode);
        Assert.Contains("Gateway:Mcp:MaxRequestBodySize", Body(http), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_request_holds_one_of_the_tenants_sessions_and_gives_it_back_when_it_ends()
    {
        var inside = new TaskCompletionSource();
        var release = new TaskCompletionSource();
        var door = Door(async http =>
        {
            inside.SetResult();
            await release.Task;
        });
        var token = Mint("tenant-a");
        var first = door.InvokeAsync(Request("Bearer " + token));
        await inside.Task.WaitAsync(TimeSpan.FromSeconds(10));

        // tenant-a's Limits:MaxSessions is 1: a second request while the first runs is told to slow down.
        var second = Request("Bearer " + token);
        await door.InvokeAsync(second);
        Assert.Equal(StatusCodes.Status429TooManyRequests, second.Response.StatusCode);
        Assert.Contains("MaxSessions", Body(second), StringComparison.Ordinal);

        release.SetResult();
        await first.WaitAsync(TimeSpan.FromSeconds(10));
        var next = new Recorder();
        var third = Request("Bearer " + token);
        await Door(next.Next).InvokeAsync(third);
        Assert.Equal("tenant-a", next.Tenant);
    }

    [Fact]
    public async Task Past_the_gateway_wide_request_limit_the_answer_is_503_with_retry_after()
    {
        var inside = new TaskCompletionSource();
        var release = new TaskCompletionSource();
        var door = Door(async http =>
        {
            inside.SetResult();
            await release.Task;
        }, new McpConfig { MaxConcurrentRequests = 1, MaxConcurrentRequestsPerTenant = 1 });
        var first = door.InvokeAsync(Request("Bearer " + Mint("tenant-b")));
        await inside.Task.WaitAsync(TimeSpan.FromSeconds(10));

        // Another tenant, within its own share: the gateway-wide limit answers.
        var second = Request("Bearer " + Mint("tenant-a"));
        await door.InvokeAsync(second);

        Assert.Equal(StatusCodes.Status503ServiceUnavailable, second.Response.StatusCode);
        Assert.Equal("1", second.Response.Headers.RetryAfter.ToString());
        release.SetResult();
        await first.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task One_tenant_cannot_hold_more_than_its_share_of_the_request_slots()
    {
        var inside = new TaskCompletionSource();
        var release = new TaskCompletionSource();
        var runs = 0;
        var door = Door(async http =>
        {
            if (Interlocked.Increment(ref runs) == 1)
            {
                inside.SetResult();
                await release.Task;
            }
        }, new McpConfig { MaxConcurrentRequests = 4, MaxConcurrentRequestsPerTenant = 1 });
        var first = door.InvokeAsync(Request("Bearer " + Mint("tenant-b")));
        await inside.Task.WaitAsync(TimeSpan.FromSeconds(10));

        var same = Request("Bearer " + Mint("tenant-b"));
        await door.InvokeAsync(same);
        var other = Request("Bearer " + Mint("tenant-a"));
        await door.InvokeAsync(other);

        Assert.Equal(StatusCodes.Status429TooManyRequests, same.Response.StatusCode);
        Assert.Contains("MaxConcurrentRequestsPerTenant", Body(same), StringComparison.Ordinal);
        Assert.Equal(StatusCodes.Status200OK, other.Response.StatusCode);
        release.SetResult();
        await first.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(2, runs);
    }

    [Fact]
    public async Task A_body_shaped_beyond_any_tool_is_refused_400_while_it_streams()
    {
        var items = string.Join(',', Enumerable.Repeat("\"a@b.cc\"", McpBodyGuard.MaxElements + 10));
        var body = Encoding.UTF8.GetBytes("""{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"send_email","arguments":{"to":[""" + items + "]}}}");
        var read = 0L;
        var http = Request("Bearer " + Mint("tenant-a"));
        http.Request.Body = new MemoryStream(body);

        // The next middleware reads the body as the SDK would: in chunks, to the end.
        await Door(async h =>
        {
            var buffer = new byte[4096];
            int n;
            while ((n = await h.Request.Body.ReadAsync(buffer)) > 0)
            {
                read += n;
            }
        }).InvokeAsync(http);

        Assert.Equal(StatusCodes.Status400BadRequest, http.Response.StatusCode);
        Assert.Contains("more than 10000 JSON elements", Body(http), StringComparison.Ordinal);
        Assert.True(read < body.Length, "the guard stops the read before the end of the body");
    }

    [Theory]
    [InlineData("{\"a\":\"[[[[,,,,{{{{\\\"]]]],,,\"}", 1)]
    [InlineData("[1,2,3]", 3)]
    [InlineData("{\"to\":[\"x\",\"y\"],\"s\":\"\\\\\"}", 4)]
    public void Strings_and_their_escapes_do_not_count_only_structure_does(string json, int elements)
    {
        var guard = new McpBodyGuard(Stream.Null);
        guard.Scan(Encoding.UTF8.GetBytes(json));
        // One more element than counted so far still fits far below the limit; counting is checked through the limit.
        var more = new string(',', McpBodyGuard.MaxElements - elements);
        guard.Scan(Encoding.UTF8.GetBytes("[" + more[1..]));
        Assert.Throws<McpBodyRejectedException>(() => guard.Scan(","u8.ToArray()));
    }

    [Fact]
    public void Deep_nesting_is_refused()
    {
        var guard = new McpBodyGuard(Stream.Null);
        Assert.Throws<McpBodyRejectedException>(() => guard.Scan(Encoding.UTF8.GetBytes(new string('[', McpBodyGuard.MaxDepth + 1))));
    }

    [Fact]
    public async Task Other_paths_pass_through_untouched()
    {
        var next = new Recorder();
        var http = Request(null);
        http.Request.Path = "/api/v1/tenants";

        await Door(next.Next).InvokeAsync(http);

        Assert.Equal(1, next.Runs);
        Assert.Null(next.Tenant);
    }

    [Theory]
    [InlineData("Bearer abc", "abc")]
    [InlineData("bearer  abc ", "abc")]
    [InlineData("Bearerabc", null)]
    [InlineData("Basic abc", null)]
    public void The_bearer_scheme_is_case_insensitive_and_nothing_else_is_a_token(string header, string? expected) =>
        Assert.Equal(expected, McpAuthentication.Bearer(header));
}
