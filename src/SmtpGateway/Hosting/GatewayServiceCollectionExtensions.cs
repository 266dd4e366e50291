using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Audit;
using SmtpGateway.Bounces;
using SmtpGateway.Envelope;
using SmtpGateway.Policy;
using SmtpGateway.Delivery.Inbound;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Hsm;
using SmtpGateway.Signing;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Listener;
using SmtpGateway.Spool;

namespace SmtpGateway.Hosting;

public static class GatewayServiceCollectionExtensions
{
    /// <summary>
    /// Registers every stage. Hosted services start in registration order and stop in reverse, so the spool
    /// recovers before the listener accepts, and the listener drains before delivery and spool stop.
    /// </summary>
    public static IServiceCollection AddSmtpGateway(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<GatewayConfig>()
            .Bind(configuration.GetSection(GatewayConfig.SectionName))
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<GatewayConfig>, GatewayConfigValidator>();
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton(sp => GatewayModel.Build(sp.GetRequiredService<IOptions<GatewayConfig>>().Value));
        services.AddSingleton<ListenerMetrics>();

        // Identity: tenant map (reloads with the file), tokens, AUTH throttle, audit trail.
        services.AddSingleton(sp => new TenantDirectoryService(configuration, sp.GetRequiredService<ILoggerFactory>()));
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<GatewayConfig>>().Value.Identity);
        services.AddSingleton(sp => new TokenStore(GatewayPaths.DataDirectory(sp.GetRequiredService<IOptions<GatewayConfig>>().Value), sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            return new TokenService(sp.GetRequiredService<TokenStore>(), () => directory.Current, sp.GetRequiredService<IdentityConfig>(), sp.GetRequiredService<TimeProvider>());
        });
        services.AddSingleton<JsonLinesAuditLog>();
        services.AddSingleton<IAuditLog>(sp => sp.GetRequiredService<JsonLinesAuditLog>());
        services.AddHostedService(sp => sp.GetRequiredService<JsonLinesAuditLog>());
        services.AddHostedService<TokenRefreshService>();
        services.AddSingleton<ISmtpAuthenticator, TokenAuthenticator>();
        services.AddSingleton(sp =>
        {
            var identity = sp.GetRequiredService<IdentityConfig>();
            return new AuthThrottle(identity.AuthFailuresBeforeDelay, identity.AuthFailuresBeforeDisconnect, identity.AuthFailureWindow, sp.GetRequiredService<TimeProvider>());
        });

        // Signing: each tenant's DKIM keys in its own HSM token; SoftHSM2's config is set before the module loads.
        services.AddSingleton<IHsm>(sp =>
        {
            var config = sp.GetRequiredService<IOptions<GatewayConfig>>().Value;
            if (config.Hsm.SoftHsm)
            {
                SoftHsmSetup.Configure(GatewayPaths.DataDirectory(config));
            }

            return new Pkcs11Hsm(
                new Pkcs11HsmOptions { ModulePath = config.Hsm.ModulePath, MaxSessionsPerToken = config.Hsm.MaxSessionsPerToken },
                sp.GetRequiredService<ILogger<Pkcs11Hsm>>(),
                sp.GetRequiredService<TimeProvider>());
        });
        services.AddSingleton(sp => new TenantHsmTokens(
            GatewayPaths.DataDirectory(sp.GetRequiredService<IOptions<GatewayConfig>>().Value),
            tenant => configuration.GetSection($"{TenantDirectoryService.SectionName}:{tenant}:Hsm").Get<TenantHsmConfig>()));
        services.AddSingleton<IDkimKeySigner, HsmKeySigner>();
        services.AddSingleton(sp => new DkimKeyStore(GatewayPaths.DataDirectory(sp.GetRequiredService<IOptions<GatewayConfig>>().Value)));
        services.AddSingleton<IMessageSigner>(sp => new DkimSigningService(
            sp.GetRequiredService<DkimKeyStore>(),
            sp.GetRequiredService<IDkimKeySigner>(),
            sp.GetRequiredService<IAuditLog>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<IOptions<GatewayConfig>>().Value.Dkim.SignatureLifetime));

        AddEnvelopeIsolation(services);
        services.AddSpool();
        services.AddDelivery();

        services.AddSingleton(sp =>
        {
            var config = sp.GetRequiredService<IOptions<GatewayConfig>>().Value;
            var model = sp.GetRequiredService<GatewayModel>();
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            var tokens = sp.GetRequiredService<TokenService>();
            var identity = new IdentityServices(
                () => directory.Current,
                sp.GetRequiredService<ISmtpAuthenticator>(),
                tokens.StillValid,
                sp.GetRequiredService<AuthThrottle>(),
                sp.GetRequiredService<IAuditLog>(),
                config.Identity);
            var sessionServices = new SessionServices(
                config.ServerName,
                config.Limits,
                model.Tls,
                identity,
                sp.GetRequiredService<IMessageSpool>(),
                sp.GetRequiredService<TimeProvider>(),
                sp.GetRequiredService<ListenerMetrics>(),
                sp.GetRequiredService<IMessageSigner>(),
                sp.GetRequiredService<EnvelopeServices>());
            return new SmtpListenerService(model.Listeners, sessionServices, config.ShutdownTimeout, sp.GetRequiredService<ILoggerFactory>());
        });
        services.AddHostedService(sp => sp.GetRequiredService<SmtpListenerService>());

        services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromMinutes(2));
        services.AddOptions<HostOptions>().Configure<IOptions<GatewayConfig>>((host, gateway) =>
            host.ShutdownTimeout = gateway.Value.ShutdownTimeout + TimeSpan.FromSeconds(30));
        return services;
    }

    /// <summary>
    /// Issue #7: per-tenant return paths, header hygiene, suppression lists, reputation (pause), bounce attribution and the
    /// tenants' inbound routes. Delivery picks up <see cref="DeliveryHooks"/> and <see cref="TenantRouter"/> when present.
    /// </summary>
    static void AddEnvelopeIsolation(IServiceCollection services)
    {
        static string Data(IServiceProvider sp) => GatewayPaths.DataDirectory(sp.GetRequiredService<IOptions<GatewayConfig>>().Value);

        services.AddSingleton(sp => new VerpKeyStore(Data(sp), sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(sp => new ReturnPath(sp.GetRequiredService<VerpKeyStore>()));
        services.AddSingleton(sp => new SuppressionList(Data(sp), sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            var logger = sp.GetRequiredService<ILoggerFactory>().CreateLogger("SmtpGateway.Bounces");
            var audit = sp.GetRequiredService<IAuditLog>();
            var events = sp.GetRequiredService<DeliveryEvents>();
            var time = sp.GetRequiredService<TimeProvider>();
            return new ReputationTracker(Data(sp), tenant => directory.Current.Find(tenant)?.Reputation ?? new ReputationConfig(), time, pause =>
            {
                // The alert: a log warning, an audit event and a line in the tenant's own event log.
                EnvelopeLog.TenantPaused(logger, pause.Tenant, pause.Rate, pause.Threshold);
                audit.Write(new AuditEvent
                {
                    Action = "tenant-pause", Result = "paused", Tenant = pause.Tenant, Listener = "delivery",
                    Reason = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"bounce rate {pause.Rate * 100:0.0}% over {pause.Threshold * 100:0.0}%"),
                });
                events.Log?.Write(new DeliveryEvent
                {
                    Time = pause.At, Event = "paused", Id = "", Tenant = pause.Tenant, From = "", Recipient = "",
                    Reply = string.Create(System.Globalization.CultureInfo.InvariantCulture,
                        $"outbound queue held: bounce rate {pause.Rate * 100:0.0}% ({pause.Bounced} bounced, {pause.Complained} complained, {pause.Delivered} delivered) over {pause.Threshold * 100:0.0}%; resume with: smtpgw queue resume --tenant {pause.Tenant}"),
                    Attempt = 0,
                });
            });
        });
        services.AddSingleton(sp => new TenantOutcomes(sp.GetRequiredService<SuppressionList>(), sp.GetRequiredService<ReputationTracker>()));
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            var returnPaths = sp.GetRequiredService<ReturnPath>();
            var reputation = sp.GetRequiredService<ReputationTracker>();
            ReturnPathResolver resolver = (envelope, recipient) =>
                envelope.Inbound || envelope.MailFrom.Length == 0 || envelope.TenantId is not { } tenant
                    || directory.Current.Find(tenant)?.BounceDomain is not { } bounceDomain
                    ? envelope.MailFrom
                    : returnPaths.For(tenant, bounceDomain, envelope.Id, recipient);
            return new DeliveryHooks(
                IsHeld: envelope => !envelope.Inbound && envelope.MailFrom.Length > 0 && envelope.TenantId is { } t && reputation.IsPaused(t),
                Outcomes: sp.GetRequiredService<TenantOutcomes>(),
                ReturnPaths: resolver)
            {
                TenantPaused = reputation.IsPaused,
            };
        });
        services.AddSingleton(sp => new BounceProcessor(
            sp.GetRequiredService<ReturnPath>(),
            sp.GetRequiredService<TenantOutcomes>(),
            sp.GetRequiredService<DeliveryEvents>().Log is { } log ? log.Write : null,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILoggerFactory>().CreateLogger("SmtpGateway.Bounces")));
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            var inbound = new CurrentInboundRoutes(
                () => directory.Current,
                Data(sp),
                sp.GetRequiredService<TimeProvider>(),
                sp.GetRequiredService<ILoggerFactory>().CreateLogger("SmtpGateway.Delivery.Inbound"));
            return new TenantRouter(sp.GetRequiredService<IDeliveryTransport>(), inbound, sp.GetRequiredService<BounceProcessor>(), () => directory.Current);
        });
        services.AddSingleton(sp =>
        {
            var config = sp.GetRequiredService<IOptions<GatewayConfig>>().Value;
            var events = sp.GetRequiredService<DeliveryEvents>();
            var time = sp.GetRequiredService<TimeProvider>();
            return new EnvelopeServices(
                sp.GetRequiredService<ReturnPath>(),
                sp.GetRequiredService<SuppressionList>(),
                new HeaderHygiene(new HeaderHygieneOptions { StripHeaders = config.Envelope.StripHeaders }),
                (tenant, recipient, session) =>
                {
                    BounceMetrics.Refused(tenant);
                    events.Log?.Write(new DeliveryEvent
                    {
                        Time = time.GetUtcNow(), Event = "suppressed", Id = session, Tenant = tenant, From = "", Recipient = recipient,
                        Reply = SenderPolicy.Suppressed.ToString(), Attempt = 0,
                    });
                });
        });
    }
}

/// <summary>
/// The tenants' inbound routes as the current tenant snapshot states them: rebuilt when the configuration reloads, so a
/// changed webhook URL or forward host applies to the next attempt without a restart.
/// </summary>
internal sealed class CurrentInboundRoutes : IDeliveryTransport, IDisposable
{
    readonly Func<TenantSnapshot> _tenants;
    readonly string _dataDirectory;
    readonly TimeProvider _time;
    readonly ILogger _logger;
    readonly Lock _lock = new();

    // Redirects are refused: a webhook must not be steered to another host by whoever answers the first one.
    readonly HttpClient _http = new(new SocketsHttpHandler { AllowAutoRedirect = false, PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
    {
        Timeout = Timeout.InfiniteTimeSpan,
    };

    (TenantSnapshot Snapshot, InboundRouter Router)? _current;

    public CurrentInboundRoutes(Func<TenantSnapshot> tenants, string dataDirectory, TimeProvider time, ILogger logger)
    {
        _tenants = tenants;
        _dataDirectory = dataDirectory;
        _time = time;
        _logger = logger;
    }

    public Task<IReadOnlyList<RecipientResult>> DeliverAsync(SpooledMessage message, IReadOnlyList<string> recipients, CancellationToken cancellationToken) =>
        Router().DeliverAsync(message, recipients, cancellationToken);

    InboundRouter Router()
    {
        var snapshot = _tenants();
        lock (_lock)
        {
            if (_current is { } current && ReferenceEquals(current.Snapshot, snapshot))
                return current.Router;
            var routes = snapshot.Tenants.ToDictionary(kv => kv.Key, kv => kv.Value.Inbound, StringComparer.Ordinal);
            var router = new InboundRouter(routes, _dataDirectory, _http, _time, _logger);
            _current = (snapshot, router);
            return router;
        }
    }

    public void Dispose() => _http.Dispose();
}

internal static partial class EnvelopeLog
{
    [LoggerMessage(EventId = Diagnostics.EventIds.Bounces + 10, Level = LogLevel.Warning,
        Message = "Tenant {TenantId} paused: bounce rate {Rate} is over its threshold {Threshold}; its outbound queue is held until `smtpgw queue resume --tenant {TenantId}`")]
    public static partial void TenantPaused(ILogger logger, string tenantId, double rate, double threshold);
}
