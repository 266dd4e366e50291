using System.CommandLine;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using ModelContextProtocol;
using ModelContextProtocol.Client;
using ModelContextProtocol.Protocol;
using ModelContextProtocol.Server;
using SmtpGateway.Configuration;
using SmtpGateway.Hosting;
using SmtpGateway.Mcp;

namespace SmtpGateway.Cli;

/// <summary>
/// `smtpgw mcp`: the MCP tool server over stdio, for agent runtimes that spawn their tools. It is a bridge to the running
/// gateway's /mcp endpoint, not a second gateway: the tenant's rate limits, session count, suppression list, HSM sessions
/// and spool live in that one process, and a tool server of its own would get a private copy of each (a tenant could
/// multiply its limits by spawning bridges). Every call carries the session token as the bearer and the gateway verifies
/// it, so the bridge holds no authority. Standard output carries the protocol only; everything else goes to standard error.
/// </summary>
public static class McpCommand
{
    public const string TokenVariable = "SMTPGW_TOKEN";

    /// <summary>Long enough for a signing wait and a durable commit under load; a call that takes longer failed somewhere.</summary>
    static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(120);

    public static Command Build(Func<Option<string?>> configOption)
    {
        var config = configOption();
        var tokenFile = new Option<string?>("--token-file") { Description = $"A file holding the tenant session token (default: the {TokenVariable} environment variable)." };
        var url = new Option<string?>("--url") { Description = "The gateway's MCP endpoint (default: http(s)://<Gateway:Admin Address>:<Port>/mcp from --config)." };
        var caFile = new Option<string?>("--ca-file") { Description = "PEM certificate(s) to trust for an https endpoint, besides the system's roots." };
        var command = new Command("mcp", $"Serve the gateway's MCP tools over stdio (token from {TokenVariable} or --token-file); calls go to the running gateway's /mcp.")
        {
            config, tokenFile, url, caFile,
        };
        command.SetAction(async (parse, ct) =>
        {
            var token = ReadToken(parse.GetValue(tokenFile), out var tokenError);
            var endpoint = token is null ? null : Endpoint(parse.GetValue(url), parse.GetValue(config), out tokenError);
            if (token is null || endpoint is null)
            {
                await Console.Error.WriteLineAsync($"smtpgw mcp: {tokenError}").ConfigureAwait(false);
                return 2;
            }

            var ca = parse.GetValue(caFile);
            X509Certificate2Collection? anchors = null;
            if (ca is not null)
            {
                if (endpoint.Scheme != "https")
                {
                    await Console.Error.WriteLineAsync("smtpgw mcp: --ca-file is for an https endpoint; this one is http.").ConfigureAwait(false);
                    return 2;
                }

                try
                {
                    anchors = [];
                    anchors.ImportFromPemFile(ca);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CryptographicException)
                {
                    await Console.Error.WriteLineAsync($"smtpgw mcp: cannot read --ca-file {ca}: {ex.Message}").ConfigureAwait(false);
                    return 2;
                }
            }

            return await RunAsync(endpoint, token, anchors, ct).ConfigureAwait(false);
        });
        return command;
    }

    static string? ReadToken(string? file, out string? error)
    {
        error = null;
        string? token;
        try
        {
            token = file is not null ? File.ReadAllText(file).Trim() : Environment.GetEnvironmentVariable(TokenVariable)?.Trim();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            error = $"cannot read --token-file {file}: {ex.Message}";
            return null;
        }

        if (string.IsNullOrEmpty(token))
        {
            error = file is not null ? $"--token-file {file} is empty." : $"no session token: set {TokenVariable} or pass --token-file (mint one with `smtpgw token mint --tenant T`).";
            return null;
        }

        if (McpAuthentication.Bearer("Bearer " + token) is null || token.Any(char.IsControl))
        {
            error = "the session token is not one line of at most 4096 characters.";
            return null;
        }

        return token;
    }

    internal static Uri? Endpoint(string? url, string? configPath, out string? error)
    {
        error = null;
        if (url is not null)
        {
            if (!Uri.TryCreate(url, UriKind.Absolute, out var given) || given.Scheme is not ("http" or "https"))
            {
                error = $"--url '{url}' is not an http or https URL.";
                return null;
            }

            // The bearer is a session token: over plain http it may cross only the loopback interface.
            if (given.Scheme == "http" && !given.IsLoopback)
            {
                error = $"--url '{url}' is plain http to a host that is not loopback: the session token would cross the network in clear text; use https.";
                return null;
            }

            return given;
        }

        GatewayConfig gateway;
        try
        {
            gateway = new ConfigurationBuilder().AddGatewaySources(configPath).Build().GetSection(GatewayConfig.SectionName).Get<GatewayConfig>() ?? new GatewayConfig();
        }
        catch (Exception ex) when (ex is FileNotFoundException or InvalidDataException or FormatException or InvalidOperationException)
        {
            error = ex.Message;
            return null;
        }

        var admin = gateway.Admin;
        if (!admin.Enabled || !gateway.Mcp.Enabled || admin.Port == 0 || !IPAddress.TryParse(admin.Address, out var address))
        {
            error = "the configuration serves no MCP endpoint this bridge can find (Gateway:Admin:Enabled and Gateway:Mcp:Enabled true, a fixed Gateway:Admin:Port); pass --url.";
            return null;
        }

        // A wildcard listen address is reached through loopback from this host.
        if (address.Equals(IPAddress.Any))
        {
            address = IPAddress.Loopback;
        }
        else if (address.Equals(IPAddress.IPv6Any))
        {
            address = IPAddress.IPv6Loopback;
        }

        var scheme = admin.Tls.CertificatePath is not null && admin.Tls.KeyPath is not null ? "https" : "http";
        if (scheme == "http" && !IPAddress.IsLoopback(address))
        {
            // Gateway:Admin:AllowPlaintext means a TLS proxy is in front: the bridge must go through it.
            error = $"the admin endpoint {address}:{admin.Port} is plain http on a non-loopback address; pass --url https://<the TLS proxy>/mcp.";
            return null;
        }
        return new Uri($"{scheme}://{new IPEndPoint(address, admin.Port)}{McpAuthentication.Path}");
    }

    static async Task<int> RunAsync(Uri endpoint, string token, X509Certificate2Collection? anchors, CancellationToken cancellationToken)
    {
        // Standard error only. The SDK client's own failure logs (a stack trace per refused call) are left out: the bridge
        // reports each refusal itself, in one line at start or as the tool error.
        using var loggers = LoggerFactory.Create(b => b.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace)
            .SetMinimumLevel(LogLevel.Warning).AddFilter("ModelContextProtocol.Client", LogLevel.None));
        using var http = new HttpClient(Handler(anchors)) { Timeout = CallTimeout };
        McpClient gatewayClient;
        try
        {
            gatewayClient = await McpClient.CreateAsync(
                new HttpClientTransport(new HttpClientTransportOptions
                {
                    Endpoint = endpoint,
                    TransportMode = HttpTransportMode.StreamableHttp,
                    Name = "smtpgw",
                    AdditionalHeaders = new Dictionary<string, string> { ["Authorization"] = $"Bearer {token}" },
                }, http, loggers, ownsHttpClient: false),
                new McpClientOptions { ClientInfo = new Implementation { Name = "smtpgw-mcp-bridge", Version = "1" } },
                loggers, cancellationToken).ConfigureAwait(false);

            // Once at start: proves the token now (an expired one fails here, plainly) and fills the client's tool cache.
            await gatewayClient.ListToolsAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is HttpRequestException or McpException or TaskCanceledException or IOException)
        {
            // The gateway is down, or refused the token: say which, once, and let the agent runtime show it.
            await Console.Error.WriteLineAsync($"smtpgw mcp: cannot use the gateway's MCP endpoint {endpoint}: {Reason(ex)}").ConfigureAwait(false);
            return 1;
        }

        await using (gatewayClient.ConfigureAwait(false))
        {
            var options = new McpServerOptions
            {
                ServerInfo = gatewayClient.ServerInfo,
                ServerInstructions = gatewayClient.ServerInstructions,
                Capabilities = new ServerCapabilities { Tools = new ToolsCapability() },
                Handlers = new McpServerHandlers
                {
                    ListToolsHandler = async (request, ct) =>
                        new ListToolsResult { Tools = [.. (await gatewayClient.ListToolsAsync(cancellationToken: ct).ConfigureAwait(false)).Select(t => t.ProtocolTool)] },
                    CallToolHandler = async (request, ct) =>
                    {
                        try
                        {
                            return await gatewayClient.CallToolAsync(request.Params!, ct).ConfigureAwait(false);
                        }
                        catch (Exception ex) when (ex is HttpRequestException or McpException or IOException || (ex is TaskCanceledException && !ct.IsCancellationRequested))
                        {
                            // The gateway's refusal of the request itself (token expired or revoked, body too large, busy):
                            // a tool error the agent can read, not a broken bridge.
                            return new CallToolResult { IsError = true, Content = [new TextContentBlock { Text = $"{request.Params?.Name}: the gateway refused the call: {Reason(ex)}" }] };
                        }
                    },
                },
            };
            await using var server = McpServer.Create(new StdioServerTransport(options, loggers), options, loggers);
            await server.RunAsync(cancellationToken).ConfigureAwait(false);
        }

        return 0;
    }

    /// <summary>The gateway's own sentence from a refused request's JSON-RPC error body when there is one; the status otherwise.</summary>
    static string Reason(Exception ex)
    {
        var text = ex.Message;
        var start = text.IndexOf('{', StringComparison.Ordinal);
        if (start >= 0)
        {
            try
            {
                using var body = JsonDocument.Parse(text[start..]);
                if (body.RootElement.TryGetProperty("error", out var error) && error.TryGetProperty("message", out var message) && message.GetString() is { } said)
                {
                    return said;
                }
            }
            catch (JsonException)
            {
                // Not the gateway's JSON-RPC body: the exception's own text follows.
            }
        }

        return ex is TaskCanceledException ? $"no answer within {CallTimeout.TotalSeconds:0} s" : text;
    }

    static SocketsHttpHandler Handler(X509Certificate2Collection? anchors)
    {
        var handler = new SocketsHttpHandler { PooledConnectionIdleTimeout = TimeSpan.FromSeconds(15) };
        if (anchors is not null)
        {
            handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, presented, errors) =>
            {
                if (errors == SslPolicyErrors.None)
                {
                    return true;
                }

                if (certificate is null || (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != 0)
                {
                    // A name mismatch or no certificate is never forgiven, whatever the anchors.
                    return false;
                }

                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.AddRange(anchors);
                // The intermediates the server sent, so a leaf issued below an anchor's intermediate still builds.
                if (presented is not null)
                {
                    foreach (var element in presented.ChainElements)
                    {
                        chain.ChainPolicy.ExtraStore.Add(element.Certificate);
                    }
                }

                chain.ChainPolicy.ApplicationPolicy.Add(new Oid("1.3.6.1.5.5.7.3.1")); // id-kp-serverAuth (RFC 5280 4.2.1.12)
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return chain.Build(new X509Certificate2(certificate));
            };
        }

        return handler;
    }
}
