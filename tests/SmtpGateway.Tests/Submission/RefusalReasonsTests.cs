using System.Reflection;
using SmtpGateway.Smtp;
using SmtpGateway.Submission;

namespace SmtpGateway.Tests.Submission;

/// <summary>Issue 13: the "reason" label of refused messages is a closed set named from the reply catalogue.</summary>
public sealed class RefusalReasonsTests
{
    [Theory]
    [InlineData(nameof(SmtpReplies.MessageTooBig), RefusalReasons.TooBig)]
    [InlineData(nameof(SmtpReplies.TenantMessageTooBig), RefusalReasons.TooBig)]
    [InlineData(nameof(SmtpReplies.BareCrLfInData), RefusalReasons.Malformed)]
    [InlineData(nameof(SmtpReplies.NulInData), RefusalReasons.Malformed)]
    [InlineData(nameof(SmtpReplies.TooManyHops), RefusalReasons.Loop)]
    [InlineData(nameof(SmtpReplies.HeaderFromNotOwned), RefusalReasons.SenderNotAuthorized)]
    [InlineData(nameof(SmtpReplies.SigningFailed), RefusalReasons.Signing)]
    [InlineData(nameof(SmtpReplies.SigningBusy), RefusalReasons.Signing)]
    [InlineData(nameof(SmtpReplies.SpoolFull), RefusalReasons.Storage)]
    [InlineData(nameof(SmtpReplies.InsufficientStorage), RefusalReasons.Storage)]
    [InlineData(nameof(SmtpReplies.TokenNoLongerValid), RefusalReasons.Credentials)]
    public void Catalogue_refusals_have_their_reason(string reply, string reason) =>
        Assert.Equal(reason, RefusalReasons.Of(Catalogue(reply)));

    [Fact]
    public void A_reply_the_table_does_not_know_is_other_never_its_text()
    {
        // Same code and text as a known refusal, but not the catalogue's instance: a reason is never read from text.
        Assert.Equal(RefusalReasons.Other, RefusalReasons.Of(SmtpReplies.MessageTooBig.WithText("client said <script>")));
        Assert.Equal(RefusalReasons.Other, RefusalReasons.Of(new SmtpReply(550, "5.7.1", "evil.example")));
    }

    [Fact]
    public void Every_catalogue_reply_maps_into_the_closed_set()
    {
        var replies = typeof(SmtpReplies).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Where(f => f.FieldType == typeof(SmtpReply))
            .Select(f => (SmtpReply)f.GetValue(null)!);
        Assert.All(replies, r => Assert.Contains(RefusalReasons.Of(r), RefusalReasons.All));
    }

    static SmtpReply Catalogue(string name) => (SmtpReply)typeof(SmtpReplies).GetField(name)!.GetValue(null)!;
}
