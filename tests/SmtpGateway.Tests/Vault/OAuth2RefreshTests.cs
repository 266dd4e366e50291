using System.Net;
using System.Text;
using SmtpGateway.Audit;
using SmtpGateway.Vault;

namespace SmtpGateway.Tests.Vault;

public sealed class OAuth2RefreshTests : IDisposable
{
    const string Endpoint = "https://login.example/oauth2/token";
    readonly VaultTestKit _kit = new();

    CredentialVault Vault => _kit.Vault;

    public void Dispose() => _kit.Dispose();

    UpstreamCredentialVersion SetRefreshRecord(string? clientSecret = "client-sec-99", string tenant = "tenant-a") =>
        Vault.Set(tenant, "o365", NewSecret.RefreshToken("me@a.example", VaultTestKit.Bytes("refresh-7c1d"), clientSecret is null ? null : VaultTestKit.Bytes(clientSecret), Endpoint, "client-1"));

    async Task<string> Open(UpstreamCredentialVersion version)
    {
        using var secret = await Vault.OpenAsync(version, CredentialVault.PurposeSmtpAuth, "Q1", CancellationToken.None);
        return Encoding.UTF8.GetString(secret.Secret);
    }

    [Fact]
    public async Task An_access_token_record_is_returned_as_stored()
    {
        var version = Vault.Set("tenant-a", "token", NewSecret.AccessToken("me@a.example", VaultTestKit.Bytes("ya29.static")));
        Assert.Equal(UpstreamCredentialKind.OAuth2, version.Kind);
        Assert.Equal("ya29.static", await Open(version));
        Assert.Equal(0, _kit.Endpoint.Calls);
    }

    [Fact]
    public async Task A_refresh_token_fetches_an_access_token_and_refreshes_it_before_expiry()
    {
        var version = SetRefreshRecord();
        _kit.Endpoint.Reply("""{"access_token":"at-1","token_type":"Bearer","expires_in":3600}""");

        Assert.Equal("at-1", await Open(version));
        Assert.Equal("grant_type=refresh_token&refresh_token=refresh-7c1d&client_id=client-1&client_secret=client-sec-99", Assert.Single(_kit.Endpoint.Bodies));

        // Still valid for longer than RefreshBefore (5m): the stored token, no request.
        _kit.Clock.Advance(TimeSpan.FromMinutes(50));
        Assert.Equal("at-1", await Open(version));
        Assert.Equal(1, _kit.Endpoint.Calls);

        // 4 minutes left: refreshed first; the endpoint rotates the refresh token, which the next refresh uses.
        _kit.Clock.Advance(TimeSpan.FromMinutes(6));
        _kit.Endpoint.Reply("""{"access_token":"at-2","token_type":"bearer","expires_in":"3600","refresh_token":"refresh-8e2f"}""");
        Assert.Equal("at-2", await Open(version));
        _kit.Clock.Advance(TimeSpan.FromMinutes(58));
        _kit.Endpoint.Reply("""{"access_token":"at-3","expires_in":3600}""");
        Assert.Equal("at-3", await Open(version));
        Assert.Equal("grant_type=refresh_token&refresh_token=refresh-8e2f&client_id=client-1&client_secret=client-sec-99", _kit.Endpoint.Bodies[^1]);

        var file = File.ReadAllText(Vault.PathFor("tenant-a"));
        foreach (var secret in new[] { "at-1", "at-2", "at-3", "refresh-7c1d", "refresh-8e2f", "client-sec-99" })
        {
            Assert.DoesNotContain(secret, file, StringComparison.Ordinal);
        }

        Assert.Equal(3, _kit.Events(AuditActions.VaultDecrypt).Count(e => e.Reason == CredentialVault.PurposeRefresh && e.Result == "ok"));
        Assert.Equal(4, _kit.Events(AuditActions.VaultDecrypt).Count(e => e.Reason == CredentialVault.PurposeSmtpAuth && e.Result == "ok"));
        Assert.Equal(_kit.Clock.GetUtcNow().AddHours(1), Vault.List("tenant-a").Single().AccessTokenExpires);
    }

    [Fact]
    public async Task Without_a_client_secret_none_is_sent_and_escaped_tokens_are_unescaped()
    {
        var version = SetRefreshRecord(clientSecret: null);
        _kit.Endpoint.Reply("""{"acc\u0065ss_token":"a\u0062c\/d","expires_in":3600,"scope":["x"],"extra":{"a":1}}""");

        Assert.Equal("abc/d", await Open(version));
        Assert.Equal("grant_type=refresh_token&refresh_token=refresh-7c1d&client_id=client-1", Assert.Single(_kit.Endpoint.Bodies));
    }

    [Fact]
    public async Task Concurrent_opens_share_one_refresh()
    {
        var version = SetRefreshRecord();
        _kit.Endpoint.Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _kit.Endpoint.Reply("""{"access_token":"at-shared","expires_in":3600}""");

        // Each open runs synchronously up to the refresh it needs: the first starts it, the other five find it in flight
        // (the gate holds it open) and wait for it. No timing is involved.
        var opens = Enumerable.Range(0, 6).Select(_ => Open(version)).ToList();
        Assert.All(opens, open => Assert.False(open.IsCompleted));
        _kit.Endpoint.Gate.SetResult();

        Assert.All(await Task.WhenAll(opens), token => Assert.Equal("at-shared", token));
        Assert.Equal(1, _kit.Endpoint.Calls);
    }

    [Fact]
    public async Task A_refused_refresh_token_is_an_upstream_refusal_without_the_token_in_any_message()
    {
        var version = SetRefreshRecord(tenant: "tenant-revoked");
        _kit.Endpoint.Reply("""{"error":"invalid_grant","error_description":"refresh-7c1d is revoked"}""", HttpStatusCode.BadRequest);

        UpstreamCredentialException? ex = null;
        var counted = await UpstreamAuthFailures.CountAsync("tenant-revoked", async () => ex = await Assert.ThrowsAsync<UpstreamCredentialException>(() => Open(version)));

        // Only the vault sees a token endpoint's refusal, so it counts it (per tenant, like a smarthost's 535).
        Assert.Equal(1, counted);

        Assert.False(ex!.Transient);
        Assert.Contains("invalid_grant", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("refresh-7c1d", ex.ToString(), StringComparison.Ordinal);
        var audit = Assert.Single(_kit.Events(AuditActions.UpstreamAuth));
        Assert.Equal(("refused", "o365#v1", "Q1"), (audit.Result, audit.Subject, audit.QueueId));
        Assert.DoesNotContain("refresh-7c1d", audit.Reason ?? "", StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(HttpStatusCode.ServiceUnavailable, "{}", true)]
    [InlineData(HttpStatusCode.OK, "not json", false)]
    [InlineData(HttpStatusCode.OK, """{"access_token":"x","token_type":"mac"}""", false)]
    public async Task Endpoint_failures_say_whether_a_retry_may_help(HttpStatusCode status, string body, bool transient)
    {
        var version = SetRefreshRecord();
        _kit.Endpoint.Reply(body, status);

        var ex = await Assert.ThrowsAsync<UpstreamCredentialException>(() => Open(version));

        Assert.Equal(transient, ex.Transient);
    }

    [Fact]
    public async Task An_answer_broken_off_mid_body_is_a_temporary_credential_failure()
    {
        var version = SetRefreshRecord();
        _kit.Endpoint.Reply("{}");
        _kit.Endpoint.BreakBody = new System.Net.Http.HttpIOException(System.Net.Http.HttpRequestError.ResponseEnded, "connection reset");

        var ex = await Assert.ThrowsAsync<UpstreamCredentialException>(() => Open(version));

        Assert.True(ex.Transient);
    }

    [Fact]
    public async Task An_oversized_response_is_not_buffered()
    {
        var version = SetRefreshRecord();
        _kit.Endpoint.Reply("{\"access_token\":\"" + new string('a', OAuth2TokenClient.MaxResponseBytes) + "\"}");

        var ex = await Assert.ThrowsAsync<UpstreamCredentialException>(() => Open(version));

        Assert.Contains("more than", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("http://login.example/token")]
    [InlineData("login.example/token")]
    [InlineData("https://user:pw@login.example/token")]
    public void A_token_endpoint_that_is_not_plain_https_is_refused_at_set(string endpoint)
    {
        var refreshToken = VaultTestKit.Bytes("refresh-7c1d");
        Assert.Throws<ArgumentException>(() => NewSecret.RefreshToken("me@a.example", refreshToken, null, endpoint, "client-1"));
        // The refused secret is not left behind in memory.
        Assert.All(refreshToken, b => Assert.Equal(0, b));
    }

    [Fact]
    public void The_form_body_percent_encodes_every_reserved_byte()
    {
        var body = OAuth2TokenClient.FormBody("a+b/c=d&e f"u8, "id:1", "sécret"u8);
        Assert.Equal("grant_type=refresh_token&refresh_token=a%2Bb%2Fc%3Dd%26e%20f&client_id=id%3A1&client_secret=s%C3%A9cret", Encoding.ASCII.GetString(body));
    }

    [Fact]
    public async Task A_token_still_valid_is_used_while_the_endpoint_is_down()
    {
        var version = SetRefreshRecord();
        _kit.Endpoint.Reply("""{"access_token":"at-1","expires_in":3600}""");
        Assert.Equal("at-1", await Open(version));

        // Inside RefreshBefore but not expired: the failed refresh falls back to the token in hand.
        _kit.Clock.Advance(TimeSpan.FromMinutes(57));
        _kit.Endpoint.Reply("{}", HttpStatusCode.ServiceUnavailable);
        Assert.Equal("at-1", await Open(version));

        // Expired: nothing to fall back on.
        _kit.Clock.Advance(TimeSpan.FromMinutes(4));
        _kit.Endpoint.Reply("{}", HttpStatusCode.ServiceUnavailable);
        Assert.True((await Assert.ThrowsAsync<UpstreamCredentialException>(() => Open(version))).Transient);
    }

    [Fact]
    public async Task A_bearer_token_refused_upstream_is_replaced_on_the_next_auth()
    {
        var version = SetRefreshRecord();
        _kit.Endpoint.Reply("""{"access_token":"at-1","expires_in":3600}""");
        Assert.Equal("at-1", await Open(version));

        Vault.Refused(version, "Q1", "535 5.7.8 token revoked");
        _kit.Endpoint.Reply("""{"access_token":"at-2","expires_in":3600}""");

        Assert.Equal("at-2", await Open(version));
        Assert.Equal(2, _kit.Endpoint.Calls);
    }
}
