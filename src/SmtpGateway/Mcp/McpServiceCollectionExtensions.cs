using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModelContextProtocol.Protocol;
using ModelContextProtocol.Server;
using SmtpGateway.Audit;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Mcp.Tools;
using SmtpGateway.Signing;
using SmtpGateway.Spool;
using SmtpGateway.Submission;

namespace SmtpGateway.Mcp;

/// <summary>
/// The MCP tool server (issue #14) on the admin endpoint: the official SDK's streamable HTTP transport, stateless (every
/// POST stands alone, so each carries and proves its own token, and no session state outlives a request), and the three
/// tools. `smtpgw mcp` (stdio) forwards to this same endpoint, so both transports share one pipeline, one set of limits.
/// </summary>
public static class McpServiceCollectionExtensions
{
    public static IServiceCollection AddGatewayMcp(this IServiceCollection services)
    {
        services.AddMcpServer(o =>
            {
                o.ServerInfo = new Implementation { Name = "smtpgw", Version = Version };
                o.ServerInstructions = "Send email as your tenant: send_email queues a message (signed, stored durably) and returns its queue id; "
                    + "get_message_status follows it; list_sending_domains shows which domains you may send from and whether their DKIM records are published.";
            })
            .WithHttpTransport(o => o.Stateless = true);
        services.AddSingleton<McpServerTool>(sp => new SendEmailTool(
            sp.GetRequiredService<SubmissionPipeline>(), Gateway(sp), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<IAuditLog>(), Logger(sp)));
        services.AddSingleton<McpServerTool>(sp => new MessageStatusTool(
            sp.GetRequiredService<FileSpool>(), sp.GetRequiredService<DeliveryEvents>(), sp.GetRequiredService<IAuditLog>(), Logger(sp)));
        services.AddSingleton<McpServerTool>(sp => new SendingDomainsTool(
            sp.GetRequiredService<DkimAdministration>(), SendingDomainsTool.Resolver(Gateway(sp)), sp.GetRequiredService<IAuditLog>(), Logger(sp)));
        return services;
    }

    /// <summary>/mcp behind its own bearer check; nothing is mapped when Gateway:Mcp:Enabled is false (the path is then a 404).</summary>
    public static void MapGatewayMcp(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        if (!app.Services.GetRequiredService<IOptions<GatewayConfig>>().Value.Mcp.Enabled)
        {
            return;
        }

        app.UseMiddleware<McpAuthentication>();
        app.MapMcp(McpAuthentication.Path);
    }

    static string Version => typeof(McpServiceCollectionExtensions).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0";

    static GatewayConfig Gateway(IServiceProvider sp) => sp.GetRequiredService<IOptions<GatewayConfig>>().Value;

    static ILogger Logger(IServiceProvider sp) => sp.GetRequiredService<ILoggerFactory>().CreateLogger("SmtpGateway.Mcp");
}
