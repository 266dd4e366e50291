using SmtpGateway.Configuration;
using SmtpGateway.Submission;

namespace SmtpGateway.Listener;

/// <summary>Everything a session needs, resolved once per listener, not per connection.</summary>
public sealed record SessionServices(
    string ServerName,
    LimitsConfig Limits,
    TlsModel? Tls,
    SubmissionPipeline Pipeline,
    TimeProvider Time,
    ListenerMetrics Metrics);
