using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Bounces;
using SmtpGateway.Configuration;
using SmtpGateway.Envelope;
using SmtpGateway.Identity;
using SmtpGateway.Identity.Tokens;
using SmtpGateway.Signing;
using SmtpGateway.Spool;
using SmtpGateway.Submission;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Listener;
using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Submission;

/// <summary>
/// The pipeline's real stages without SMTP, for tests that submit messages built in code: a real FileSpool, DKIM selector
/// store and suppression list in a temporary directory, keys in memory, a fake clock.
/// </summary>
internal sealed class SubmissionBench : IDisposable
{
    public SubmissionBench(Dictionary<string, TenantConfig> tenants)
    {
        Spool = SpoolTestKit.NewSpool(Dir.Combine("spool"), Clock);
        Dkim = new DkimKeyStore(Dir.Path);
        Suppression = new SuppressionList(Dir.Path, Clock);
        var errors = new List<string>();
        Tenants = TenantSnapshot.Build(tenants, errors);
        Assert.Empty(errors);
    }

    public TempDirectory Dir { get; } = new();

    public FakeTimeProvider Clock { get; } = new(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));

    public InMemoryTenantKeys Hsm { get; } = new();

    public RecordingAudit Audit { get; } = new();

    public FileSpool Spool { get; }

    public DkimKeyStore Dkim { get; }

    public SuppressionList Suppression { get; }

    /// <summary>The current snapshot; a test reloads by setting it (contexts already open keep the one they began with).</summary>
    public TenantSnapshot Tenants { get; set; }

    /// <summary>The token service of the last pipeline built (same store, clock and keys): mints tokens its Identity stage accepts.</summary>
    public TokenService? Tokens { get; private set; }

    public SubmissionPipeline Pipeline(IDkimKeySigner keys, LimitsConfig? limits = null, MessageMemoryBudget? budget = null, SigningGate? gate = null)
    {
        limits ??= new LimitsConfig();
        var identity = new IdentityConfig { Audience = "gw-test" };
        var tokens = Tokens = new TokenService(new TokenStore(Dir.Path, Clock, Hsm), () => Tenants, identity, Clock);
        return new SubmissionPipeline(
            new SubmissionServices(
                "gw.test.example",
                limits,
                new IdentityServices(() => Tenants, new TokenAuthenticator(tokens, Audit), tokens.StillValid, new AuthThrottle(3, 10, TimeSpan.FromMinutes(5), Clock), Audit, identity),
                Spool,
                Clock,
                budget ?? new MessageMemoryBudget(limits.MaxInFlightMemory),
                new DkimSigningService(Dkim, keys, Audit, Clock, null),
                new EnvelopeServices(new ReturnPath(new VerpKeyStore(Dir.Path, Clock, Hsm)), Suppression, new HeaderHygiene(new HeaderHygieneOptions())),
                SigningGate: gate),
            NullLoggerFactory.Instance);
    }

    public void Dispose()
    {
        Suppression.Dispose();
        Spool.Dispose();
        Dir.Dispose();
    }
}
