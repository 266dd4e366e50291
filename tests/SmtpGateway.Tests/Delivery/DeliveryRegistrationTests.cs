using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using SmtpGateway.Configuration;
using SmtpGateway.Delivery;
using SmtpGateway.Spool;
using SmtpGateway.Tests.Fakes;
using SmtpGateway.Tests.Spool;
using SmtpGateway.Vault;

namespace SmtpGateway.Tests.Delivery;

public sealed class DeliveryRegistrationTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    ServiceProvider Build(DeliveryMode mode, IUpstreamCredentials? credentials = null)
    {
        var services = new ServiceCollection();
        services.AddLogging();
        if (credentials is not null)
        {
            services.AddSingleton(credentials);
        }

        services.AddSingleton(Options.Create(new GatewayConfig { DataDirectory = _dir.Path, Delivery = { Mode = mode } }));
        services.AddSpool();
        services.AddDelivery();
        return services.BuildServiceProvider();
    }

    [Fact]
    public async Task Spool_is_one_singleton_and_recovery_starts_before_delivery()
    {
        await using var provider = Build(DeliveryMode.Drop);

        var spool = provider.GetRequiredService<IMessageSpool>();
        Assert.Same(spool, provider.GetRequiredService<ISpoolQueue>());
        Assert.Same(spool, provider.GetRequiredService<FileSpool>());
        Assert.Equal(Path.Combine(_dir.Path, "spool"), ((FileSpool)spool).RootDirectory);
        var hosted = provider.GetServices<IHostedService>().Select(s => s.GetType().Name).ToArray();
        Assert.Equal(["SpoolRecoveryService", nameof(DeliveryService)], hosted);
        Assert.IsType<DropTransport>(provider.GetRequiredService<IDeliveryTransport>());
    }

    [Fact]
    public async Task Smarthost_mode_selects_the_smarthost_transport()
    {
        await using var provider = Build(DeliveryMode.Smarthost);
        Assert.IsType<SmarthostTransport>(provider.GetRequiredService<IDeliveryTransport>());
    }

    [Theory]
    [InlineData(DeliveryMode.Smarthost, true)]
    [InlineData(DeliveryMode.Mx, true)]
    [InlineData(DeliveryMode.Smarthost, false)]
    public async Task SMTP_transports_take_the_registered_upstream_credentials_when_there_are_any(DeliveryMode mode, bool registered)
    {
        var vault = registered ? new FakeUpstreamCredentials(TimeProvider.System) : null;
        await using var provider = Build(mode, vault);

        var transport = Assert.IsAssignableFrom<IOutboundTransport>(provider.GetRequiredService<IDeliveryTransport>());

        Assert.Same(vault, transport.Engine.Auth.Credentials);
    }

    [Fact]
    public async Task Mx_mode_selects_the_MX_transport()
    {
        await using var provider = Build(DeliveryMode.Mx);
        Assert.IsType<MxTransport>(provider.GetRequiredService<IDeliveryTransport>());
    }

    [Fact]
    public async Task Committed_message_reaches_the_drop_folder_through_the_hosted_services()
    {
        await using var provider = Build(DeliveryMode.Drop);
        var hosted = provider.GetServices<IHostedService>().ToArray();
        foreach (var service in hosted)
        {
            await service.StartAsync(CancellationToken.None);
        }

        try
        {
            var spool = provider.GetRequiredService<IMessageSpool>();
            var envelope = new SpoolEnvelope(spool.NewId(), "tenant-a", "s@tenant-a.example", ["r@example.net"], DateTimeOffset.UtcNow, "127.0.0.1", "relay", false, false);
            var bytes = SpoolTestKit.SampleMessage();
            await spool.CommitAsync(envelope, new System.Buffers.ReadOnlySequence<byte>(bytes), CancellationToken.None);

            var path = Path.Combine(_dir.Path, "drop", "tenant-a", envelope.Id + ".eml");
            await Poll.UntilAsync(() => File.Exists(path) && !File.Exists(Path.Combine(_dir.Path, "spool", "queue", envelope.Id)));
            Assert.Equal(bytes, await File.ReadAllBytesAsync(path));
        }
        finally
        {
            foreach (var service in hosted.Reverse())
            {
                await service.StopAsync(CancellationToken.None);
            }
        }
    }
}
