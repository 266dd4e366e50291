using SmtpGateway.Smtp;

namespace SmtpGateway.Submission;

/// <summary>
/// The closed set of the "reason" label of refused messages (smtpgw.messages.rejected): the reply catalogue's message-level
/// refusals by name, so an alert can tell a tenant's oversized mail from the gateway's full disk. Never reply text.
/// </summary>
public static class RefusalReasons
{
    public const string TooBig = "too_big";
    public const string Malformed = "malformed";
    public const string Loop = "loop";
    public const string SenderNotAuthorized = "sender_not_authorized";
    public const string Signing = "signing";
    public const string Storage = "storage";
    public const string Credentials = "credentials";
    public const string Other = "other";

    /// <summary>Every value <see cref="Of"/> can return (tests, and the operator notes).</summary>
    public static readonly IReadOnlyList<string> All = [TooBig, Malformed, Loop, SenderNotAuthorized, Signing, Storage, Credentials, Other];

    /// <summary>
    /// The reason for a refusal at DATA or end of DATA. Catalogue replies are singletons, so a reference comparison names
    /// them; a reply the table does not know (a future stage's) is <see cref="Other"/> until it is added here.
    /// </summary>
    public static string Of(SmtpReply reply)
    {
        ArgumentNullException.ThrowIfNull(reply);
        return Table.TryGetValue(reply, out var reason) ? reason : Other;
    }

    static readonly Dictionary<SmtpReply, string> Table = new(ReferenceEqualityComparer.Instance)
    {
        [SmtpReplies.MessageTooBig] = TooBig,
        [SmtpReplies.TenantMessageTooBig] = TooBig,
        [SmtpReplies.HeaderSectionTooBig] = TooBig,
        [SmtpReplies.BareCrLfInData] = Malformed,
        [SmtpReplies.NulInData] = Malformed,
        [SmtpReplies.DataLineTooLong] = Malformed,
        [SmtpReplies.LeadingContinuation] = Malformed,
        [SmtpReplies.TooManyHops] = Loop,
        [SmtpReplies.HeaderFromNotOwned] = SenderNotAuthorized,
        [SmtpReplies.HeaderFromMissing] = SenderNotAuthorized,
        [SmtpReplies.OtherSenderNotOwned] = SenderNotAuthorized,
        [SmtpReplies.SenderNotOwned] = SenderNotAuthorized,
        [SmtpReplies.SigningFailed] = Signing,
        [SmtpReplies.SigningBusy] = Signing,
        [SmtpReplies.SpoolFailed] = Storage,
        [SmtpReplies.SpoolFull] = Storage,
        [SmtpReplies.InsufficientStorage] = Storage,
        [SmtpReplies.LocalError] = Storage,
        [SmtpReplies.TokenNoLongerValid] = Credentials,
        [SmtpReplies.TokenCheckUnavailable] = Credentials,
    };
}
