using System.Net;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Bounces;
using SmtpGateway.Envelope;
using SmtpGateway.Identity;
using SmtpGateway.Submission;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Listener;

/// <summary>
/// Issue 12 (follow-up of issue 11): each unauthenticated RCPT to a return path with a fake tag costs one HSM MAC. Past
/// Gateway:Envelope:ReturnPathFailuresPerClient failed checks in the window, the client address gets 450 4.7.1 for
/// return-path RCPTs and no MAC is computed for it until its failures age out.
/// </summary>
public sealed class ReturnPathThrottleTranscriptTests : IDisposable
{
    const string QueueId = "018F6B2C3D4E0000001A";

    readonly TempDirectory _dir = new();
    readonly InMemoryTenantKeys _hsm = new();
    readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
    readonly ReturnPath _returnPaths;
    readonly SuppressionList _suppression;
    readonly EnvelopeServices _envelope;

    public ReturnPathThrottleTranscriptTests()
    {
        _returnPaths = new ReturnPath(new VerpKeyStore(_dir.Path, TimeProvider.System, _hsm));
        _suppression = new SuppressionList(_dir.Path, TimeProvider.System);
        _envelope = new EnvelopeServices(_returnPaths, _suppression, new HeaderHygiene(new HeaderHygieneOptions()),
            ReturnPathThrottle: new AuthThrottle(int.MaxValue, 3, TimeSpan.FromMinutes(10), _clock));
    }

    public void Dispose()
    {
        _suppression.Dispose();
        _dir.Dispose();
    }

    static async Task<RawSmtpClient> InboundAsync(TestGateway gw, string source)
    {
        var c = await gw.ConnectAsync(gw.Submission, source: IPAddress.Parse(source));
        await c.HelloAsync();
        Assert.StartsWith("250", await c.CommandAsync("MAIL FROM:<>"));
        return c;
    }

    /// <summary>The valid return path with the last character of its MAC replaced: right shape, wrong tag.</summary>
    static string Forged(string valid, char last)
    {
        var at = valid.IndexOf('@', StringComparison.Ordinal);
        return string.Concat(valid.AsSpan(0, at - 1), valid[at - 1] == last ? "z" : last.ToString(), valid.AsSpan(at));
    }

    [Fact]
    public async Task Forged_tags_from_one_address_are_checked_up_to_the_limit_then_answered_450_without_a_mac()
    {
        await using var gw = await TestGateway.StartAsync(envelope: _envelope);
        var valid = _returnPaths.For("tenant-a", "bounces.tenant-a.example", QueueId, "u@example.net");
        await using var attacker = await InboundAsync(gw, "127.0.0.9");

        foreach (var last in "abc")
        {
            var before = _hsm.MacCalls;
            Assert.StartsWith("550 5.1.1", await attacker.CommandAsync($"RCPT TO:<{Forged(valid, last)}>"));
            // What the throttle is for: each forgery costs the HSM two MACs (its minute's key, that minute being long
            // past, and the version 1 MAC of tags made before minute keys).
            Assert.Equal(before + 2, _hsm.MacCalls);
        }

        var macs = _hsm.MacCalls;
        Assert.Equal("450 4.7.1 Too many unknown return-path addresses from your address, try again later", await attacker.CommandAsync($"RCPT TO:<{Forged(valid, 'd')}>"));
        Assert.StartsWith("450 4.7.1", await attacker.CommandAsync($"RCPT TO:<{Forged(valid, 'e')}>"));
        Assert.StartsWith("450 4.7.1", await attacker.CommandAsync($"RCPT TO:<{valid}>")); // not checked at all, so not even a good one
        Assert.Equal(macs, _hsm.MacCalls);

        // Other mail from the same address is untouched: role mailboxes of the bounce domain, tenant domains.
        Assert.StartsWith("250 2.1.5", await attacker.CommandAsync("RCPT TO:<postmaster@bounces.tenant-a.example>"));

        // Another client address is checked as usual.
        await using var mta = await InboundAsync(gw, "127.0.0.10");
        Assert.StartsWith("250 2.1.5", await mta.CommandAsync($"RCPT TO:<{valid}>"));

        // Once the failures leave the window, the address is checked again (and a forgery is again a plain 550).
        _clock.Advance(TimeSpan.FromMinutes(11));
        Assert.StartsWith("550 5.1.1", await attacker.CommandAsync($"RCPT TO:<{Forged(valid, 'f')}>"));
        Assert.StartsWith("250 2.1.5", await attacker.CommandAsync($"RCPT TO:<{valid}>"));
    }

    [Fact]
    public async Task Reconnecting_does_not_reset_the_count()
    {
        await using var gw = await TestGateway.StartAsync(envelope: _envelope);
        var valid = _returnPaths.For("tenant-a", "bounces.tenant-a.example", QueueId, "u@example.net");
        foreach (var last in "abc")
        {
            await using var once = await InboundAsync(gw, "127.0.0.11");
            Assert.StartsWith("550 5.1.1", await once.CommandAsync($"RCPT TO:<{Forged(valid, last)}>"));
        }

        await using var again = await InboundAsync(gw, "127.0.0.11");
        Assert.StartsWith("450 4.7.1", await again.CommandAsync($"RCPT TO:<{Forged(valid, 'd')}>"));
    }

    [Fact]
    public void The_limit_and_window_are_validated()
    {
        var config = new SmtpGateway.Configuration.GatewayConfig();
        Assert.Equal((10, TimeSpan.FromMinutes(10)), (config.Envelope.ReturnPathFailuresPerClient, config.Envelope.ReturnPathFailureWindow));
        config.Envelope.ReturnPathFailuresPerClient = 0;
        config.Envelope.ReturnPathFailureWindow = TimeSpan.Zero;
        var errors = SmtpGateway.Configuration.GatewayConfigValidator.Collect(config);
        Assert.Contains(errors, e => e.StartsWith("Gateway:Envelope:ReturnPathFailuresPerClient:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Gateway:Envelope:ReturnPathFailureWindow:", StringComparison.Ordinal));
    }
}
