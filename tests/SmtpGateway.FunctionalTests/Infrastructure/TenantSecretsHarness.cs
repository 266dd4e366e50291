using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>
/// Issue 11 end to end: a real gateway whose tenants relay through their own authenticating upstreams, with the
/// credentials in the vault (<c>smtpgw vault set</c>, secret on stdin) and the token and VERP keys in each tenant's
/// HSM token.
/// <list type="bullet">
/// <item>tenant-a and tenant-b: each its own private Postfix (STARTTLS with the test certificate, trusted through
/// Gateway:Delivery:Tls:TrustAnchorsPath; Cyrus SASL sasldb2 with one user: relay-a, relay-b), which relays what an
/// authenticated client sends to its own smtp-sink (<see cref="MailboxA"/>, <see cref="MailboxB"/>).</item>
/// <item>tenant-c: the scripted XOAUTH2 provider (<see cref="OAuth"/>, implicit TLS) with its https token endpoint; the
/// vault holds a refresh token, a client id and a client secret.</item>
/// <item>The gateway's own smarthost (<see cref="GatewaySink"/>, plain smtp-sink) must never see any of it.</item>
/// <item>Before the first start, tenant-a has legacy plaintext keys on disk (identity/keys/tenant-a.json,
/// verp/tenant-a.json) with known secrets, which the gateway must migrate into the HSM and shred.</item>
/// </list>
/// Each message to a tenant smarthost goes over a new connection (MaxMessagesPerConnection 1), so every message
/// authenticates afresh and a changed upstream password bites the next message. Mail is submitted with session tokens
/// (AUTH PLAIN, implicit TLS). Deferred mail is retried after 1 s, then every 2 s.
/// </summary>
public sealed class TenantSecretsHarness : GatewayProcessHarness
{
    public const string ServerName = "gw.secrets.test";
    public const string CredentialName = "relay";
    public const string UserA = "relay-a";
    public const string UserB = "relay-b";

    /// <summary>tenant-a's second upstream user, made by the rotation test (its new credential version).</summary>
    public const string UserA2 = "relay-a2";
    public const string OAuthUser = "mailer@tenant-c.example";
    public const string OAuthClientId = "smtpgw-tenant-c";

    readonly List<SmtpSink> _sinks = [];
    readonly Dictionary<string, string> _tokens = new(StringComparer.Ordinal);

    public TenantSecretsHarness()
        : base("smtpgw-secrets-")
    {
    }

    /// <summary>Upstream passwords, refresh token, client secret and legacy keys: random per run, never on argv.</summary>
    public string PasswordA { get; } = "pw-a-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));

    public string PasswordA2 { get; } = "pw-a2-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));

    public string PasswordB { get; } = "pw-b-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));

    public string OAuthRefreshToken { get; } = "rt-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24));

    public string OAuthClientSecret { get; } = "cs-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));

    /// <summary>tenant-a's token HMAC key as the old plaintext key file held it (base64 of 32 bytes).</summary>
    public string LegacyTokenKeyA { get; } = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    /// <summary>tenant-a's VERP key as the old plaintext key file held it (base64 of 32 bytes).</summary>
    public string LegacyVerpKeyA { get; } = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    public const string LegacyTokenKeyId = "k0legacy01";

    public int SubmissionsPort { get; private set; }

    internal PostfixInstance SmarthostA { get; private set; } = null!;

    internal PostfixInstance SmarthostB { get; private set; } = null!;

    internal SmtpSink MailboxA { get; private set; } = null!;

    internal SmtpSink MailboxB { get; private set; } = null!;

    internal SmtpSink GatewaySink { get; private set; } = null!;

    internal XOAuth2Server OAuth { get; private set; } = null!;

    /// <summary>The test certificate: the gateway's own, every upstream's, and the gateway's trust anchor.</summary>
    public string CertificatePath { get; private set; } = "";

    /// <summary>Where the PIN files go by default (spec: the data directory's sibling "&lt;DataDirectory&gt;.pins").</summary>
    public string PinDirectory => DataDirectory + ".pins";

    internal AuditTrail Audit => new(DataDirectory);

    /// <summary>
    /// Starts the upstreams, writes the config, makes the tenants' HSM tokens (<c>hsm init-token</c>), seeds the legacy key
    /// files, stores the credentials (<c>vault set</c>, secrets on stdin), mints session tokens and starts <c>smtpgw serve</c>.
    /// </summary>
    public override async Task InitializeAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        try
        {
            var (certificate, key) = await TestCertificate.GetAsync();
            CertificatePath = certificate;
            GatewaySink = await AddSinkAsync(cts.Token);
            MailboxA = await AddSinkAsync(cts.Token);
            MailboxB = await AddSinkAsync(cts.Token);
            SmarthostA = await PostfixInstance.StartAsync(new PostfixInstanceOptions
            {
                RelayPort = MailboxA.Port,
                RelayDomains = ["example.net"],
                Tls = new PostfixTls(certificate, key),
                Sasl = new PostfixSaslUser(UserA, PasswordA),
            }, cts.Token);
            SmarthostB = await PostfixInstance.StartAsync(new PostfixInstanceOptions
            {
                RelayPort = MailboxB.Port,
                RelayDomains = ["example.net"],
                Tls = new PostfixTls(certificate, key),
                Sasl = new PostfixSaslUser(UserB, PasswordB),
            }, cts.Token);
            OAuth = await XOAuth2Server.StartAsync(WorkDirectory, new XOAuth2ServerOptions
            {
                User = OAuthUser,
                ClientId = OAuthClientId,
                ClientSecret = OAuthClientSecret,
                RefreshToken = OAuthRefreshToken,
                ExpiresIn = TimeSpan.FromHours(1),
            }, cts.Token);

            SubmissionsPort = FreePort.Next();
            await File.WriteAllTextAsync(ConfigPath, BuildConfig(certificate, key).ToJsonString(new JsonSerializerOptions { WriteIndented = true }), cts.Token);

            foreach (var tenant in new[] { "tenant-a", "tenant-b", "tenant-c" })
            {
                await CliAsync(["hsm", "init-token", "--tenant", tenant]);
            }

            SeedLegacyKeys();
            await CliAsync(["vault", "set", "--tenant", "tenant-a", "--name", CredentialName, "--user", UserA, "--password-stdin"], PasswordA + "\n");
            await CliAsync(["vault", "set", "--tenant", "tenant-b", "--name", CredentialName, "--user", UserB, "--password-stdin"], PasswordB + "\n");
            await CliAsync(["vault", "set", "--tenant", "tenant-c", "--name", CredentialName, "--user", OAuthUser, "--oauth2-refresh-token-stdin",
                "--token-endpoint", OAuth.TokenEndpoint, "--client-id", OAuthClientId], $"{OAuthRefreshToken}\n{OAuthClientSecret}\n");

            // Session tokens: tenant-b's and tenant-c's first mint makes their token keys, which the gateway then reads at start
            // (a key made while it runs reaches it only within its refresh interval). tenant-a's key is the legacy one the
            // gateway itself migrates at start, so its token is minted after.
            await MintTokenAsync("tenant-b");
            await MintTokenAsync("tenant-c");
            await StartServeAsync("smtpgw-secrets", SubmissionsPort, implicitTls: true, cts.Token);
            await MintTokenAsync("tenant-a");
        }
        catch (Exception e)
        {
            Failed = true;
            throw new InvalidOperationException($"tenant secrets harness failed to start: {e.Message}\n{Diagnostics()}", e);
        }
    }

    async Task<SmtpSink> AddSinkAsync(CancellationToken cancellationToken)
    {
        var sink = await SmtpSink.StartAtAsync(WorkDirectory, "127.0.0.1", FreePort.Next(), [], cancellationToken);
        _sinks.Add(sink);
        return sink;
    }

    JsonObject BuildConfig(string certificate, string key)
    {
        var repoConfig = Path.Combine(RepoPaths.Root, "config", "gateway.json");
        var root = JsonNode.Parse(File.ReadAllText(repoConfig), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true })!
            .AsObject();
        var gateway = root["Gateway"]!.AsObject();
        gateway["ServerName"] = ServerName;
        gateway["DataDirectory"] = DataDirectory;
        gateway["Tls"] = new JsonObject { ["CertificatePath"] = certificate, ["KeyPath"] = key };
        gateway["Listeners"] = new JsonArray(
            new JsonObject { ["Name"] = "submissions", ["Kind"] = "ImplicitTls", ["Address"] = "127.0.0.1", ["Port"] = SubmissionsPort });
        var delivery = gateway["Delivery"]!.AsObject();
        delivery["Mode"] = "Smarthost";
        delivery["Workers"] = 4;

        // The smarthosts (Postfix, sink, XOAUTH2 server) are on 127.0.0.1: the destination guard's opt-out.
        delivery["AllowPrivateDestinations"] = true;
        // The gateway's own smarthost: a tenant with its own must never end up here.
        delivery["Smarthost"] = new JsonObject
        {
            ["Host"] = "127.0.0.1",
            ["Port"] = GatewaySink.Port,
            ["StartTls"] = "None",
            ["MaxConnections"] = 4,
            // One message per connection: every message authenticates to its upstream afresh.
            ["MaxMessagesPerConnection"] = 1,
        };
        delivery["Retry"] = new JsonObject { ["Schedule"] = new JsonArray("00:00:01", "00:00:02"), ["Jitter"] = 0.1 };
        delivery["Tls"] = new JsonObject { ["TrustAnchorsPath"] = certificate };

        var tenants = root["Tenants"]!.AsObject();
        tenants["tenant-a"]!["Egress"] = new JsonObject
        {
            ["HeloName"] = "egress-a.test",
            ["Smarthost"] = new JsonObject { ["Host"] = "127.0.0.1", ["Port"] = SmarthostA.Port, ["Tls"] = "Verify", ["Credential"] = CredentialName },
        };
        tenants["tenant-b"]!["Egress"] = new JsonObject
        {
            ["HeloName"] = "egress-b.test",
            ["Smarthost"] = new JsonObject { ["Host"] = "127.0.0.1", ["Port"] = SmarthostB.Port, ["Tls"] = "Verify", ["Credential"] = CredentialName },
        };
        tenants["tenant-c"] = new JsonObject
        {
            ["Domains"] = new JsonArray("tenant-c.example"),
            ["BounceDomain"] = "bounces.tenant-c.example",
            ["Networks"] = new JsonArray("127.0.0.3/32"),
            ["Egress"] = new JsonObject
            {
                ["HeloName"] = "egress-c.test",
                ["Smarthost"] = new JsonObject { ["Host"] = "127.0.0.1", ["Port"] = OAuth.SmtpPort, ["ImplicitTls"] = true, ["Credential"] = CredentialName },
            },
        };
        EnableAdmin(root);
        AllowUnsignedTenants(root);
        return root;
    }

    /// <summary>The pre-issue-11 plaintext key files of tenant-a, in their old format, with known secrets.</summary>
    void SeedLegacyKeys()
    {
        var created = DateTimeOffset.UtcNow.AddDays(-1).ToString("O", System.Globalization.CultureInfo.InvariantCulture);
        var identity = Path.Combine(DataDirectory, "identity", "keys");
        Directory.CreateDirectory(identity);
        WritePrivate(Path.Combine(identity, "tenant-a.json"),
            new JsonObject { ["keys"] = new JsonArray(new JsonObject { ["id"] = LegacyTokenKeyId, ["secret"] = LegacyTokenKeyA, ["created"] = created }) });
        var verp = Path.Combine(DataDirectory, "verp");
        Directory.CreateDirectory(verp);
        WritePrivate(Path.Combine(verp, "tenant-a.json"),
            new JsonObject { ["keys"] = new JsonArray(new JsonObject { ["id"] = "a", ["secret"] = LegacyVerpKeyA, ["created"] = created }) });
    }

    static void WritePrivate(string path, JsonNode content)
    {
        // As the old stores wrote them: base64 '+' and '/' as they are, not \u002B.
        File.WriteAllText(path, content.ToJsonString(new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    /// <summary>
    /// <c>smtpgw ARGS... --config &lt;this gateway's config&gt;</c>, <paramref name="standardInput"/> on stdin; kept for
    /// diagnostics; throws unless it exits 0.
    /// </summary>
    internal async Task<ProcessResult> CliAsync(string[] args, string? standardInput = null)
    {
        var result = await SmtpgwAsync(args, standardInput);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"smtpgw {string.Join(' ', args)} failed: {result}");
        }

        return result;
    }

    /// <summary><c>smtpgw ARGS... --config &lt;this gateway's config&gt;</c> with <paramref name="standardInput"/> on stdin.</summary>
    internal Task<ProcessResult> SmtpgwAsync(string[] args, string? standardInput = null) =>
        SmtpgwWithConfigAsync(ConfigPath, args, standardInput);

    /// <summary><c>smtpgw ARGS... --config <paramref name="configPath"/></c> (e.g. a config pointing at a copy of the data directory).</summary>
    internal Task<ProcessResult> SmtpgwWithConfigAsync(string configPath, string[] args, string? standardInput = null) =>
        RunSmtpgwAsync([.. args, "--config", configPath], TimeSpan.FromSeconds(60), standardInput);

    async Task MintTokenAsync(string tenant)
    {
        var minted = await CliAsync(["token", "mint", "--tenant", tenant, "--ttl", "1h", "--description", "tenant secrets functional test"]);
        _tokens[tenant] = minted.StandardOutput.Trim();
    }

    /// <summary>
    /// Submits one message for <paramref name="tenant"/> (AUTH PLAIN with its session token, implicit TLS) from
    /// app@&lt;tenant's domain&gt; to <paramref name="recipient"/>; returns the gateway's queue id.
    /// </summary>
    internal async Task<string> SendAsync(string tenant, string recipient, string subject, CancellationToken cancellationToken)
    {
        var token = _tokens[tenant];
        var from = $"app@{tenant}.example";
        using var smtp = await RawSmtpClient.ConnectAsync("127.0.0.1", SubmissionsPort, TimeSpan.FromSeconds(10), cancellationToken, implicitTls: true);
        Assert.Equal(250, (await smtp.CommandAsync("EHLO client.secrets.test", cancellationToken)).Code);
        var auth = await smtp.AuthPlainAsync(tenant, token, cancellationToken);
        Assert.True(auth.Code == 235, $"AUTH as {tenant} with a fresh token: {auth}");
        return await SubmitAsync(smtp, from, [recipient], subject, cancellationToken);
    }

    /// <summary>Every upstream secret and legacy key the test knows, with the AUTH PLAIN wire forms of the passwords.</summary>
    internal IReadOnlyList<KnownSecret> UpstreamSecretsAndKeys() =>
    [
        new("tenant-a upstream password", PasswordA),
        new("tenant-a AUTH PLAIN response", $"\0{UserA}\0{PasswordA}"),
        new("tenant-a rotated upstream password", PasswordA2),
        new("tenant-a rotated AUTH PLAIN response", $"\0{UserA2}\0{PasswordA2}"),
        new("tenant-b upstream password", PasswordB),
        new("tenant-b AUTH PLAIN response", $"\0{UserB}\0{PasswordB}"),
        new("tenant-a legacy token key", LegacyTokenKeyA),
        new("tenant-a legacy VERP key", LegacyVerpKeyA),
    ];

    /// <summary>The OAuth secrets of tenant-c (refresh token, client secret).</summary>
    internal IReadOnlyList<KnownSecret> OAuthSecrets() =>
    [
        new("tenant-c refresh token", OAuthRefreshToken),
        new("tenant-c client secret", OAuthClientSecret),
    ];

    /// <summary>The tenants' HSM user PINs, read from the PIN directory (none there: an empty list).</summary>
    internal IReadOnlyList<KnownSecret> Pins() =>
        Directory.Exists(PinDirectory)
            ? [.. Directory.EnumerateFiles(PinDirectory, "*.pin").Select(f => new KnownSecret($"HSM PIN {Path.GetFileName(f)}", File.ReadAllText(f).Trim()))]
            : [];

    protected override IEnumerable<(string Name, string Output)> PeerOutputs()
    {
        var outputs = new List<(string, string)>();
        foreach (var (name, postfix) in new[] { ("postfix-smarthost-a", SmarthostA), ("postfix-smarthost-b", SmarthostB) })
        {
            if (postfix is not null)
            {
                outputs.Add((name, postfix.Diagnostics()));
            }
        }

        if (OAuth is not null)
        {
            outputs.Add(("xoauth2-server", OAuth.Output + "\n" + string.Join('\n', OAuth.Events())));
        }

        foreach (var sink in _sinks)
        {
            outputs.Add(($"smtp-sink-{sink.Port}", sink.Output));
        }

        return outputs;
    }

    protected override void DisposePeers()
    {
        foreach (var postfix in new[] { SmarthostA, SmarthostB })
        {
            if (postfix is not null)
            {
                postfix.KeepDirectory = Failed;
                postfix.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }

        OAuth?.Dispose();
        foreach (var sink in _sinks)
        {
            sink.Dispose();
        }
    }
}
