using System.Buffers;
using System.Text;
using SmtpGateway.Envelope;
using SmtpGateway.Submission;

namespace SmtpGateway.Tests.Envelope;

/// <summary>
/// The one split of the header section: the streaming reader's (field starts recorded as lines arrive) and
/// <see cref="HeaderSection.Parse"/> must agree on every field, name and boundary, hostile shapes included, because sender
/// binding, hygiene and DKIM all read that split.
/// </summary>
public sealed class HeaderSectionTests
{
    public static TheoryData<string> Messages() =>
    [
        "From: a@tenant-a.example\r\nTo: b@example.net\r\nSubject: s\r\n\r\nbody\r\n",
        "From: a@tenant-a.example\r\nSubject: folded\r\n  tail\r\n\tmore\r\nX-Tenant : b\r\n\r\n",
        "X-Tenant\t:\tb\r\nFrom:a@tenant-a.example\r\n\r\n\r\nbody after an empty line\r\n",
        "From: a@tenant-a.example\r\nnot a field line\r\nX-Tenant: in the body\r\n",
        "From: a@tenant-a.example\r\nX Tenant: space inside a name is no field\r\n\r\n",
        "Fr\u00f6m: stray octet in a name\r\nFROM: a@tenant-a.example\r\n\r\n",
        "\r\nno header section at all\r\n",
        "From: only headers, no empty line\r\nTo: b@example.net\r\n",
    ];

    [Theory]
    [MemberData(nameof(Messages))]
    public void The_streaming_split_and_the_parse_agree(string text)
    {
        var bytes = Encoding.Latin1.GetBytes(text);
        var parsed = HeaderSection.Parse(bytes, out var consumed);

        using var incoming = new IncomingMessage("T1", "Received: x\r\n", new MessageMemoryBudget(1 << 20), () => throw new IOException("no scratch in this test"), 64 * 1024, 64 * 1024);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        while (reader.TryReadTo(out ReadOnlySequence<byte> line, "\r\n"u8))
        {
            incoming.AppendLine(line);
        }

        Assert.True(incoming.Complete());
        var streamed = incoming.Headers;
        Assert.Equal(parsed.Fields.Select(f => (f.Name, Encoding.Latin1.GetString(f.Raw.Span))), streamed.Fields.Select(f => (f.Name, Encoding.Latin1.GetString(f.Raw.Span))));
        if (parsed.Trailer.IsEmpty && consumed < bytes.Length)
        {
            // Ended by a line that is no field: the streaming reader puts the empty line in, so every parser splits here.
            Assert.Equal("\r\n", Encoding.Latin1.GetString(streamed.Trailer.Span));
            Assert.Equal(consumed + 2, incoming.HeaderLength);
            Assert.Equal(bytes.AsSpan(0, consumed).ToArray().Concat("\r\n"u8.ToArray()), streamed.ToSequence().ToArray());
        }
        else
        {
            Assert.Equal(Encoding.Latin1.GetString(parsed.Trailer.Span), Encoding.Latin1.GetString(streamed.Trailer.Span));
            Assert.Equal(consumed, incoming.HeaderLength);
            Assert.Equal(bytes.AsSpan(0, consumed).ToArray(), streamed.ToSequence().ToArray());
        }
    }

    [Fact]
    public void A_message_that_begins_with_a_continuation_line_is_refused_as_it_would_continue_our_received_field()
    {
        using var incoming = new IncomingMessage("T1", "Received: x\r\n", new MessageMemoryBudget(1 << 20), () => throw new IOException("no scratch"), 64 * 1024, 64 * 1024);
        incoming.AppendLine(new ReadOnlySequence<byte>(" x"u8.ToArray()));
        incoming.AppendLine(new ReadOnlySequence<byte>("X-Tenant-Id: victim"u8.ToArray()));
        Assert.Equal(IncomingProblem.LeadingContinuation, incoming.Problem);
        Assert.False(incoming.Complete());
        Assert.Equal(0, incoming.Length);
    }

    [Fact]
    public void Names_are_lower_cased_without_the_white_space_before_the_colon()
    {
        var section = HeaderSection.Parse("X-Tenant \t: b\r\nMESSAGE-ID: <1@a>\r\nSubject: s\r\n more\r\n\r\n"u8.ToArray(), out _);
        Assert.Equal(["x-tenant", "message-id", "subject"], section.Fields.Select(f => f.Name));
        Assert.Equal(" s\r\n more\r\n", Encoding.ASCII.GetString(section.Fields[2].Value.Span));
    }

    [Fact]
    public void Hygiene_returns_the_same_section_when_nothing_is_removed_and_shares_octets_when_something_is()
    {
        var hygiene = new HeaderHygiene(new HeaderHygieneOptions());
        var bytes = "From: a@tenant-a.example\r\nX-Tenant: b\r\nSubject: s\r\n\r\n"u8.ToArray();
        var section = HeaderSection.Parse(bytes, out _);

        var unchanged = hygiene.Clean(HeaderSection.Parse("From: a@tenant-a.example\r\n\r\n"u8.ToArray(), out _), outbound: true);
        Assert.False(unchanged.Changed);

        var cleaned = hygiene.Clean(section, outbound: true);
        Assert.True(cleaned.Changed);
        Assert.Equal("From: a@tenant-a.example\r\nSubject: s\r\n\r\n", Encoding.ASCII.GetString(cleaned.Section.ToSequence().ToArray()));
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(cleaned.Section.Fields[1].Raw, out var kept));
        Assert.Same(bytes, kept.Array);
    }
}
