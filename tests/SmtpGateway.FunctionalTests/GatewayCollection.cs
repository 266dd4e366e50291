using Xunit;

namespace SmtpGateway.FunctionalTests;

/// <summary>
/// Every functional test runs real processes (smtpgw, smtp-sink, swaks) and a SIGKILL storm; they run one class
/// at a time so that timings do not depend on what else is running. Ports and directories are private anyway.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class GatewayCollection
{
    public const string Name = "real gateway processes";
}
