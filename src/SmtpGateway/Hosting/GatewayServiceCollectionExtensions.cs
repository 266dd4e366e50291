using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SmtpGateway.Audit;
using SmtpGateway.Bounces;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Delivery.Inbound;
using SmtpGateway.Envelope;
using SmtpGateway.Hsm;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Listener;
using SmtpGateway.Signing;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;
using SmtpGateway.Submission;
using SmtpGateway.Vault;

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
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<GatewayConfig>, TenantDirectoryValidator>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<GatewayConfig>, HsmPinStartupCheck>());
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<GatewayConfig>>().Value.Identity);
        services.AddSingleton(sp => new TokenStore(
            GatewayPaths.DataDirectory(sp.GetRequiredService<IOptions<GatewayConfig>>().Value),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ITenantKeys>(),
            sp.GetRequiredService<ILogger<TokenStore>>()));
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            return new TokenService(sp.GetRequiredService<TokenStore>(), () => directory.Current, sp.GetRequiredService<IdentityConfig>(), sp.GetRequiredService<TimeProvider>());
        });
        services.AddSingleton<JsonLinesAuditLog>();
        services.AddSingleton<IAuditLog>(sp => sp.GetRequiredService<JsonLinesAuditLog>());
        services.AddHostedService(sp => sp.GetRequiredService<JsonLinesAuditLog>());
        // Before anything reads a key: legacy plaintext key files go into the tenants' tokens and are shredded.
        services.AddHostedService<LegacyKeyMigration>();
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
                new Pkcs11HsmOptions { ModulePath = config.Hsm.ModulePath, MaxSessionsPerToken = config.Hsm.MaxSessionsPerToken, KeyCopyRecheckInterval = config.Hsm.KeyCopyRecheckInterval },
                sp.GetRequiredService<ILogger<Pkcs11Hsm>>(),
                sp.GetRequiredService<TimeProvider>());
        });
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            var config = sp.GetRequiredService<IOptions<GatewayConfig>>().Value;
            return new TenantHsmTokens(GatewayPaths.DataDirectory(config), () => directory.Current, config.Hsm);
        });
        services.AddSingleton<IDkimKeySigner, HsmKeySigner>();
        // Symmetric keys (session-token and VERP HMAC keys, the vault's key-encryption key) in the same tenant tokens.
        services.TryAddSingleton<ITenantKeys, HsmTenantKeys>();
        services.AddSingleton(sp => new DkimKeyStore(GatewayPaths.DataDirectory(sp.GetRequiredService<IOptions<GatewayConfig>>().Value)));
        services.AddSingleton<IMessageSigner>(sp => new DkimSigningService(
            sp.GetRequiredService<DkimKeyStore>(),
            sp.GetRequiredService<IDkimKeySigner>(),
            sp.GetRequiredService<IAuditLog>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<IOptions<GatewayConfig>>().Value.Dkim.SignatureLifetime));

        services.AddSingleton(sp =>
        {
            var hsm = sp.GetRequiredService<IOptions<GatewayConfig>>().Value.Hsm;
            return new SigningGate(
                new SigningGateOptions(hsm.MaxConcurrentSigning ?? SigningGateOptions.DefaultCapacity, hsm.MaxSessionsPerToken, hsm.SigningWaitTimeout, hsm.MaxSigningWaitersPerTenant),
                sp.GetRequiredService<TimeProvider>(),
                sp.GetRequiredService<ILoggerFactory>().CreateLogger("SmtpGateway.Signing"));
        });

        AddEnvelopeIsolation(services);
        // Before delivery: its outbound AUTH asks the vault (IUpstreamCredentials) for the tenants' smarthost credentials.
        services.AddVault();
        services.AddSpool();
        services.AddDelivery();

        // The one way mail enters (SMTP sessions now; MCP and the admin API next): Identity → Policy → Envelope → Signing → Spool.
        services.AddSingleton(sp => new MessageMemoryBudget(sp.GetRequiredService<IOptions<GatewayConfig>>().Value.Limits.MaxInFlightMemory));
        // Issue 12: per-tenant message, recipient and session counts; one per process, surviving tenant reloads.
        services.AddSingleton(sp => new Policy.TenantRateLimits(sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILoggerFactory>().CreateLogger("SmtpGateway.Policy")));
        services.AddSingleton(sp =>
        {
            var config = sp.GetRequiredService<IOptions<GatewayConfig>>().Value;
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            var identity = new IdentityServices(
                () => directory.Current,
                sp.GetRequiredService<ISmtpAuthenticator>(),
                sp.GetRequiredService<TokenService>().StillValid,
                sp.GetRequiredService<AuthThrottle>(),
                sp.GetRequiredService<IAuditLog>(),
                config.Identity);
            return new SubmissionPipeline(
                new SubmissionServices(
                    config.ServerName,
                    config.Limits,
                    identity,
                    sp.GetRequiredService<IMessageSpool>(),
                    sp.GetRequiredService<TimeProvider>(),
                    sp.GetRequiredService<MessageMemoryBudget>(),
                    sp.GetRequiredService<IMessageSigner>(),
                    sp.GetRequiredService<EnvelopeServices>(),
                    sp.GetRequiredService<Policy.TenantRateLimits>(),
                    sp.GetRequiredService<SigningGate>()),
                sp.GetRequiredService<ILoggerFactory>());
        });
        services.AddSingleton(sp =>
        {
            var config = sp.GetRequiredService<IOptions<GatewayConfig>>().Value;
            var model = sp.GetRequiredService<GatewayModel>();
            var sessionServices = new SessionServices(
                config.ServerName,
                config.Limits,
                model.Tls,
                sp.GetRequiredService<SubmissionPipeline>(),
                sp.GetRequiredService<TimeProvider>(),
                sp.GetRequiredService<ListenerMetrics>());
            return new SmtpListenerService(model.Listeners, sessionServices, config.ShutdownTimeout, sp.GetRequiredService<ILoggerFactory>());
        });
        services.AddHostedService(sp => sp.GetRequiredService<SmtpListenerService>());

        services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromMinutes(2));
        services.AddOptions<HostOptions>().Configure<IOptions<GatewayConfig>>((host, gateway) =>
            host.ShutdownTimeout = gateway.Value.ShutdownTimeout + TimeSpan.FromSeconds(30));
        return services;
    }

    /// <summary>
    /// Issue #11: the tenants' upstream-credential vault (DataDirectory/vault), its key-encryption keys in the tenants' HSM
    /// tokens (through the <see cref="ITenantKeys"/> registered with the signing services), and the sweep that destroys
    /// rotated-out versions. Token endpoints are verified against the system roots and
    /// the delivery trust anchors (Gateway:Delivery:Tls:TrustAnchorsPath), like smarthosts.
    /// </summary>
    public static IServiceCollection AddVault(this IServiceCollection services)
    {
        services.AddSingleton(sp =>
        {
            var config = sp.GetRequiredService<IOptions<GatewayConfig>>().Value;
            return new CredentialVault(
                GatewayPaths.DataDirectory(config),
                sp.GetRequiredService<ITenantKeys>(),
                sp.GetRequiredService<IAuditLog>(),
                sp.GetRequiredService<TimeProvider>(),
                config.Vault,
                OAuth2TokenClient.CreateHandler(SmtpConnector.LoadTrustAnchors(config.Delivery.Tls.TrustAnchorsPath)),
                sp.GetRequiredService<ILogger<CredentialVault>>());
        });
        services.AddSingleton<IUpstreamCredentials>(sp => sp.GetRequiredService<CredentialVault>());
        services.AddHostedService(sp => new VaultSweeper(sp.GetRequiredService<CredentialVault>(), sp.GetRequiredService<TimeProvider>()));
        return services;
    }

    /// <summary>
    /// Issue #7: per-tenant return paths, header hygiene, suppression lists, reputation (pause), bounce attribution and the
    /// tenants' inbound routes. Delivery picks up <see cref="DeliveryHooks"/> and <see cref="TenantRouter"/> when present.
    /// </summary>
    static void AddEnvelopeIsolation(IServiceCollection services)
    {
        static string Data(IServiceProvider sp) => GatewayPaths.DataDirectory(sp.GetRequiredService<IOptions<GatewayConfig>>().Value);

        services.AddSingleton(sp => new VerpKeyStore(Data(sp), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ITenantKeys>(),
            sp.GetRequiredService<ILoggerFactory>().CreateLogger("SmtpGateway.Envelope")));
        services.AddSingleton(sp => new ReturnPath(sp.GetRequiredService<VerpKeyStore>()));
        services.AddSingleton(sp => new SuppressionList(Data(sp), sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(sp => new TenantPauseAlert(
            sp.GetRequiredService<ILoggerFactory>().CreateLogger("SmtpGateway.Bounces"),
            sp.GetRequiredService<IAuditLog>(),
            sp.GetRequiredService<DeliveryEvents>()));
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            return new ReputationTracker(Data(sp), () => directory.Current, sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<TenantPauseAlert>().Raise);
        });
        services.AddSingleton(sp => new TenantOutcomes(sp.GetRequiredService<SuppressionList>(), sp.GetRequiredService<ReputationTracker>()));
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            return DeliveryHooks.ForTenants(() => directory.Current, sp.GetRequiredService<ReturnPath>().For, sp.GetRequiredService<ReputationTracker>().IsPaused,
                sp.GetRequiredService<TenantOutcomes>());
        });
        services.AddSingleton(sp => new BounceProcessor(
            sp.GetRequiredService<ReturnPath>(),
            sp.GetRequiredService<TenantOutcomes>(),
            sp.GetRequiredService<DeliveryEvents>().Log is { } log ? log.Write : null,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILoggerFactory>().CreateLogger("SmtpGateway.Bounces")));
        // Registered rather than built inside the router's factory, so the container disposes its HttpClient.
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            var logger = sp.GetRequiredService<ILoggerFactory>().CreateLogger("SmtpGateway.Delivery.Inbound");

            // Inbound routes are tenants' destinations: only the gateway-wide switch allows private ones.
            var allowPrivate = sp.GetRequiredService<IOptions<GatewayConfig>>().Value.Delivery.AllowPrivateDestinations;
            return new CurrentInboundRoutes(() => directory.Current, Data(sp), sp.GetRequiredService<TimeProvider>(), logger, new DestinationPolicy(allowPrivate, logger));
        });
        services.AddSingleton(sp =>
        {
            var directory = sp.GetRequiredService<TenantDirectoryService>();
            return new TenantRouter(sp.GetRequiredService<IDeliveryTransport>(), sp.GetRequiredService<CurrentInboundRoutes>(), sp.GetRequiredService<BounceProcessor>(),
                () => directory.Current);
        });
        services.AddSingleton(sp => new SuppressedRecipientEvents(
            sp.GetRequiredService<DeliveryEvents>(), sp.GetRequiredService<TimeProvider>(), SmtpReplies.Suppressed.ToString()));
        services.AddSingleton(sp =>
        {
            var envelope = sp.GetRequiredService<IOptions<GatewayConfig>>().Value.Envelope;
            return new EnvelopeServices(
                sp.GetRequiredService<ReturnPath>(),
                sp.GetRequiredService<SuppressionList>(),
                new HeaderHygiene(new HeaderHygieneOptions { StripHeaders = envelope.StripHeaders }),
                sp.GetRequiredService<SuppressedRecipientEvents>().Write,
                // Its own table, not the AUTH throttle's: forged tags must not lock a client out of AUTH, nor the reverse.
                new AuthThrottle(int.MaxValue, envelope.ReturnPathFailuresPerClient, envelope.ReturnPathFailureWindow, sp.GetRequiredService<TimeProvider>()));
        });
    }
}
