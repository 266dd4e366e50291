using System.Buffers;
using System.Net;
using System.Text;
using SmtpGateway.Configuration;
using SmtpGateway.Identity;
using SmtpGateway.Signing;
using SmtpGateway.Smtp;
using SmtpGateway.Submission;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Signing;
using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Submission;

/// <summary>
/// Issue 12 through the whole pipeline: while tenant A's signers hold every slot of A's share (its HSM calls stuck), tenant
/// B's message is signed and queued, A's next message waits without a thread, and every A message is queued signed once the
/// HSM answers. A signer that throws gives its slot back.
/// </summary>
public sealed class SigningFairnessTests : IDisposable
{
    readonly StuckKeySigner _keys = new("tenant-a");
    readonly SubmissionBench _bench = new(new Dictionary<string, TenantConfig>
    {
        ["tenant-a"] = new() { Domains = ["tenant-a.example"], Networks = ["127.0.0.1/32"], Limits = new TenantLimitsConfig { MaxConcurrentSigning = 2 } },
        ["tenant-b"] = new() { Domains = ["tenant-b.example"], Networks = ["127.0.0.2/32"], Limits = new TenantLimitsConfig { MaxConcurrentSigning = 2 } },
    });

    readonly SigningGate _gate;

    public SigningFairnessTests()
    {
        _bench.Dkim.Save("tenant-a", [_keys.Software.AddRsa("tenant-a.example", "r1")]);
        _bench.Dkim.Save("tenant-b", [_keys.Software.AddRsa("tenant-b.example", "r1")]);
        _gate = new SigningGate(new SigningGateOptions(Capacity: 4, TenantCeiling: 8, TimeSpan.FromSeconds(30), MaxWaitersPerTenant: 16), _bench.Clock);
    }

    public void Dispose()
    {
        _keys.Open.Set();
        _bench.Dispose();
    }

    SubmissionPipeline Pipeline() => _bench.Pipeline(_keys, gate: _gate);

    static ValueTask<SmtpReply> Submit(SubmissionPipeline pipeline, string tenant, int n) => Submit(pipeline, Open(pipeline, tenant, n), tenant, n);

    static SubmissionContext Open(SubmissionPipeline pipeline, string tenant, int n)
    {
        var client = IPAddress.Parse(tenant == "tenant-a" ? "127.0.0.1" : "127.0.0.2");
        var context = pipeline.Open($"s-{tenant}-{n}", SubmissionChannel.Mcp, client, "mcp", identifyByNetwork: true);
        Assert.Equal(tenant, context.Tenant?.TenantId);
        return context;
    }

    static async ValueTask<SmtpReply> Submit(SubmissionPipeline pipeline, SubmissionContext context, string tenant, int n)
    {
        Assert.Equal(PathError.None, SmtpGrammar.TryParsePath($"<u{n}@{tenant}.example>", "", allowNull: false, out var from));
        Assert.Equal(PathError.None, SmtpGrammar.TryParsePath("<bob@example.net>", "", allowNull: false, out var to));
        var message = $"From: u{n}@{tenant}.example\r\nTo: bob@example.net\r\nSubject: m{n}\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\n" +
                      $"Message-ID: <{tenant}-{n}@{tenant}.example>\r\n\r\nbody {n}\r\n";
        return (await pipeline.SubmitAsync(context, from!, [to!], new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(message)))).Reply;
    }

    async Task<string> SpooledTopAsync(SmtpReply reply)
    {
        Assert.Equal(250, reply.Code);
        var loaded = await _bench.Spool.LoadAsync(reply.Text[(reply.Text.LastIndexOf(' ') + 1)..], CancellationToken.None);
        Assert.NotNull(loaded);
        return Encoding.ASCII.GetString(await SpoolTestKit.ReadContentAsync(loaded!));
    }

    /// <summary>
    /// A's first two messages take both of A's slots and stick in the HSM (each on a thread of its own: C_Sign is
    /// synchronous). A's third waits at the gate: its task is pending and holds no thread.
    /// </summary>
    async Task<(List<Task<SmtpReply>> Stuck, Task<SmtpReply> Waiting)> FillTenantAAsync(SubmissionPipeline pipeline)
    {
        var stuck = Enumerable.Range(0, 2).Select(i => Task.Run(async () => await Submit(pipeline, "tenant-a", i))).ToList();
        await Poll.UntilAsync(() => _keys.Inside == 2);
        var waiting = Submit(pipeline, "tenant-a", 2).AsTask();
        Assert.False(waiting.IsCompleted);
        Assert.Equal((2, 1), _gate.Usage("tenant-a"));
        return (stuck, waiting);
    }

    [Fact]
    public async Task Tenant_b_signs_while_tenant_a_holds_its_whole_share()
    {
        var pipeline = Pipeline();
        var (stuck, waiting) = await FillTenantAAsync(pipeline);

        // B is signed and queued while A is stuck.
        var text = await SpooledTopAsync(await Submit(pipeline, "tenant-b", 0));
        Assert.StartsWith("DKIM-Signature:", text, StringComparison.Ordinal);
        Assert.Contains("d=tenant-b.example", text, StringComparison.Ordinal);
        Assert.False(waiting.IsCompleted);
        Assert.Equal(2, _keys.Inside);

        // The HSM answers again: all of A's messages are queued, each signed, and every slot is back.
        _keys.Open.Set();
        foreach (var reply in await Task.WhenAll([.. stuck, waiting]))
        {
            Assert.Contains("d=tenant-a.example", await SpooledTopAsync(reply), StringComparison.Ordinal);
        }

        Assert.Equal(0, _gate.InUse);
    }

    [Fact]
    public async Task A_signer_that_throws_answers_451_and_gives_its_slot_back()
    {
        var pipeline = Pipeline();
        _keys.Open.Set();
        _keys.Software.Fail = true;
        for (var i = 0; i < 5; i++)
        {
            var reply = await Submit(pipeline, "tenant-a", i);
            Assert.Equal(SmtpReplies.SigningFailed, reply);
        }

        Assert.Equal(0, _gate.InUse);
        _keys.Software.Fail = false;
        Assert.Equal(250, (await Submit(pipeline, "tenant-a", 9)).Code);
    }

    [Fact]
    public async Task A_message_that_cannot_get_a_slot_in_time_is_answered_451_not_queued_unsigned()
    {
        var pipeline = Pipeline();
        var (stuck, waiting) = await FillTenantAAsync(pipeline);

        _bench.Clock.Advance(TimeSpan.FromSeconds(30));
        Assert.Equal(SmtpReplies.SigningBusy, await waiting);
        Assert.Equal(451, SmtpReplies.SigningBusy.Code);
        Assert.Equal("4.3.0", SmtpReplies.SigningBusy.Enhanced);

        _keys.Open.Set();
        Assert.All(await Task.WhenAll(stuck), r => Assert.Equal(250, r.Code));
        Assert.Equal(0, _gate.InUse);
    }

    [Fact]
    public async Task A_reload_lowering_MaxConcurrentSigning_applies_to_sessions_opened_before_it()
    {
        var pipeline = Pipeline();
        var early = Enumerable.Range(0, 2).Select(i => Open(pipeline, "tenant-a", i)).ToList();

        // The reload: tenant A's share goes from 2 to 1 while both sessions are open on the old snapshot.
        var errors = new List<string>();
        _bench.Tenants = TenantSnapshot.Build(new Dictionary<string, TenantConfig>
        {
            ["tenant-a"] = new() { Domains = ["tenant-a.example"], Networks = ["127.0.0.1/32"], Limits = new TenantLimitsConfig { MaxConcurrentSigning = 1 } },
            ["tenant-b"] = new() { Domains = ["tenant-b.example"], Networks = ["127.0.0.2/32"], Limits = new TenantLimitsConfig { MaxConcurrentSigning = 2 } },
        }, errors);
        Assert.Empty(errors);

        var first = Task.Run(async () => await Submit(pipeline, early[0], "tenant-a", 0));
        await Poll.UntilAsync(() => _keys.Inside == 1);

        // The second old session waits for the one slot the new share gives, rather than sign beside the first.
        var second = Task.Run(async () => await Submit(pipeline, early[1], "tenant-a", 1));
        await Poll.UntilAsync(() => _gate.Usage("tenant-a") == (1, 1), TimeSpan.FromSeconds(3));
        Assert.Equal(1, _keys.Inside);

        _keys.Open.Set();
        Assert.All(await Task.WhenAll(first, second), r => Assert.Equal(250, r.Code));
        Assert.Equal(0, _gate.InUse);
    }

    /// <summary>An HSM whose calls for one tenant do not return until <see cref="Open"/> is set.</summary>
    sealed class StuckKeySigner(string stuckTenant) : IDkimKeySigner
    {
        readonly Lock _lock = new();
        int _inside;

        public SoftwareKeySigner Software { get; } = new();

        public ManualResetEventSlim Open { get; } = new(false);

        public int Inside => Volatile.Read(ref _inside);

        public byte[] Sign(string tenantId, DkimSelector selector, byte[] data)
        {
            if (tenantId == stuckTenant)
            {
                Interlocked.Increment(ref _inside);
                Open.Wait(TimeSpan.FromSeconds(30));
            }

            lock (_lock)
            {
                return Software.Sign(tenantId, selector, data);
            }
        }
    }
}
