using System.Net;
using System.Text;
using Xunit;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>
/// The admin API's authorisation matrix for one route (issue #13): no key 401, bad key 401, tenant-b's key on
/// tenant-a's resource 404 exactly as for an absent tenant, tenant-a's key on its own resource and the operator key
/// both succeed. Keys are created by the harness's operator once per fixture (<see cref="CreateTenantKeysAsync"/>).
/// </summary>
internal sealed class AdminMatrix(GatewayProcessHarness harness, string tenantAKey, string tenantBKey)
{
    public string TenantAKey => tenantAKey;

    public string TenantBKey => tenantBKey;

    /// <summary>Tenant keys for tenant-a and tenant-b, made with <c>smtpgw admin key create --tenant</c>.</summary>
    public static async Task<AdminMatrix> CreateAsync(GatewayProcessHarness harness, Func<string[], Task<ProcessResult>> smtpgw)
    {
        var (a, b) = await CreateTenantKeysAsync(smtpgw);
        return new AdminMatrix(harness, a, b);
    }

    static async Task<(string A, string B)> CreateTenantKeysAsync(Func<string[], Task<ProcessResult>> smtpgw)
    {
        async Task<string> Key(string tenant)
        {
            var result = await smtpgw(["admin", "key", "create", "--tenant", tenant, "--description", "matrix"]);
            Assert.True(result.ExitCode == 0, $"admin key create --tenant {tenant}: {result}");
            return result.StandardOutput.Trim();
        }

        return (await Key("tenant-a"), await Key("tenant-b"));
    }

    /// <summary>
    /// Runs the five cases for <paramref name="pathTemplate"/> (with "{tenant}"); <paramref name="body"/> returns JSON or null.
    /// <paramref name="body"/> is called once per request, so a call that changes state can get a fresh body each time.
    /// Returns the operator's response body.
    /// </summary>
    public async Task<string> AssertAsync(HttpMethod method, string pathTemplate, Func<string?>? body = null, HttpStatusCode success = HttpStatusCode.OK,
        CancellationToken cancellationToken = default)
    {
        string Path(string tenant) => pathTemplate.Replace("{tenant}", tenant, StringComparison.Ordinal);

        async Task<(HttpStatusCode Status, string Body, string? ContentType)> Send(string? key, string tenant)
        {
            using var client = harness.AdminClient(key);
            using var message = new HttpRequestMessage(method, Path(tenant).TrimStart('/'));
            if (body?.Invoke() is { } json)
            {
                message.Content = new StringContent(json, Encoding.UTF8, "application/json");
            }

            using var response = await client.SendAsync(message, cancellationToken);
            return (response.StatusCode, await response.Content.ReadAsStringAsync(cancellationToken), response.Content.Headers.ContentType?.MediaType);
        }

        var none = await Send(null, "tenant-a");
        Assert.True(none.Status == HttpStatusCode.Unauthorized, $"{method} {pathTemplate} without a key: {none.Status} {none.Body}");
        Assert.Equal("application/problem+json", none.ContentType);

        var bad = await Send("sgw_000000000000_not-a-key", "tenant-a");
        Assert.True(bad.Status == HttpStatusCode.Unauthorized, $"{method} {pathTemplate} with a bad key: {bad.Status} {bad.Body}");

        var other = await Send(tenantBKey, "tenant-a");
        var absent = await Send(tenantBKey, "no-such-tenant");
        Assert.True(other.Status == HttpStatusCode.NotFound, $"{method} {pathTemplate}: tenant-b's key on tenant-a: {other.Status} {other.Body}");
        Assert.Equal(absent.Status, other.Status);
        Assert.Equal(WithoutTrace(absent.Body), WithoutTrace(other.Body));

        var own = await Send(tenantAKey, "tenant-a");
        Assert.True(own.Status == success, $"{method} {pathTemplate}: tenant-a's key on tenant-a: {own.Status} {own.Body}");

        var op = await Send(harness.OperatorKey, "tenant-a");
        Assert.True(op.Status == success, $"{method} {pathTemplate}: operator key on tenant-a: {op.Status} {op.Body}");
        return op.Body;
    }

    /// <summary>Problem bodies carry a per-request trace id; everything else must be identical.</summary>
    static string WithoutTrace(string body) =>
        System.Text.RegularExpressions.Regex.Replace(body, "\"traceId\":\"[^\"]*\"", "\"traceId\":\"\"");
}
