using SmtpGateway.Configuration;
using SmtpGateway.Tests.Configuration;

namespace SmtpGateway.Tests.Spool;

/// <summary>Gateway:Spool:Sync is checked at start like every other setting (issue 15).</summary>
public sealed class SpoolSyncConfigTests
{
    [Fact]
    public void The_default_is_Auto_and_valid()
    {
        var config = EmbeddedConfig.Load();
        Assert.Equal(SpoolSync.Auto, config.Spool.Sync);
        Assert.Empty(GatewayConfigValidator.Collect(config));
    }

    [Fact]
    public void FileSystem_is_accepted_exactly_where_syncfs_reports_errors()
    {
        var config = EmbeddedConfig.Load(new Dictionary<string, string?> { ["Gateway:Spool:Sync"] = "FileSystem" });
        Assert.Equal(SpoolSync.FileSystem, config.Spool.Sync);
        var errors = GatewayConfigValidator.Collect(config);
        if (SpoolSyncSupport.FileSystemReportsErrors)
        {
            Assert.Empty(errors);
        }
        else
        {
            Assert.Contains(errors, e => e.StartsWith("Gateway:Spool:Sync: FileSystem needs Linux 5.17", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void An_unknown_mode_is_refused_with_the_valid_names()
    {
        var config = EmbeddedConfig.Load(new Dictionary<string, string?> { ["Gateway:Spool:Sync"] = "7" });
        var error = Assert.Single(GatewayConfigValidator.Collect(config));
        Assert.Equal("Gateway:Spool:Sync: must be one of Auto, File, FileSystem.", error);
    }
}
