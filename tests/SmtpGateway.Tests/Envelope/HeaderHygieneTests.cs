using System.Buffers;
using System.Text;
using SmtpGateway.Envelope;

using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Envelope;

/// <summary>Pure byte-level tests: every case also runs over 1-, 2- and 3-byte segments, so field names and CRLFs straddle boundaries.</summary>
public sealed class HeaderHygieneTests
{
    static readonly HeaderHygiene Default = new(new HeaderHygieneOptions());

    sealed record Outcome(HygieneResult Result, string Output, int Calls, List<string> Names);

    /// <summary>Cleans <paramref name="message"/> whole and split into small segments; all splits must agree byte for byte.</summary>
    static Outcome Clean(string message, bool outbound, HeaderHygiene? hygiene = null)
    {
        hygiene ??= Default;
        var bytes = Encoding.Latin1.GetBytes(message);
        var whole = Run(hygiene, new ReadOnlySequence<byte>(bytes), outbound);
        foreach (var size in new[] { 1, 2, 3 })
        {
            var split = Run(hygiene, SpoolTestKit.Segmented(bytes, size), outbound);
            Assert.Equal(whole.Result, split.Result);
            Assert.Equal(whole.Output, split.Output);
            Assert.Equal(whole.Names, split.Names);
        }

        return whole;
    }

    static Outcome Run(HeaderHygiene hygiene, ReadOnlySequence<byte> content, bool outbound)
    {
        var output = new List<byte>();
        var calls = 0;
        var names = new List<string>();
        var result = hygiene.Clean(content, outbound, chunk =>
        {
            Assert.False(chunk.IsEmpty); // empty chunks would be wasted calls
            calls++;
            output.AddRange(chunk.ToArray());
        }, names);
        return new Outcome(result, Encoding.Latin1.GetString([.. output]), calls, names);
    }

    static void AssertUnchanged(Outcome outcome)
    {
        Assert.False(outcome.Result.Changed);
        Assert.Equal(0, outcome.Result.RemovedFields);
        Assert.Equal(0, outcome.Calls);
        Assert.Equal("", outcome.Output);
        Assert.Empty(outcome.Names);
    }

    [Theory]
    [InlineData("X-Tenant: acme")]
    [InlineData("x-tenant: acme")]
    [InlineData("X-TENANT: acme")]
    [InlineData("X-Tenant-Id: acme")]
    [InlineData("X-Tenant-ID: acme")]
    [InlineData("x-tEnAnT-iD: acme")]
    [InlineData("X-TenantId: acme")]
    [InlineData("X-Tenant:acme")]
    [InlineData("X-Tenant:")]
    [InlineData("X-Tenant : b")]
    [InlineData("X-Tenant\t: b")]
    [InlineData("X-Tenant \t :b")]
    [InlineData("X-SmtpGateway-Tenant: acme")]
    [InlineData("x-smtpgateway: 1")]
    [InlineData("X-Smtpgw-Auth: yes")]
    [InlineData("X-SMTPGW: yes")]
    [InlineData("Return-Path: <attacker@evil.example>")]
    [InlineData("return-path:<>")]
    [InlineData("RETURN-PATH : <>")]
    public void Claims_of_tenant_or_delivery_path_are_removed_in_both_directions(string field)
    {
        foreach (var outbound in new[] { true, false })
        {
            var outcome = Clean($"From: a@b.example\r\n{field}\r\nSubject: hi\r\n\r\nbody\r\n", outbound);
            Assert.True(outcome.Result.Changed);
            Assert.Equal(1, outcome.Result.RemovedFields);
            Assert.Equal("From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n", outcome.Output);
        }
    }

    [Theory]
    [InlineData("X-Tenan: a")]
    [InlineData("XX-Tenant: a")]
    [InlineData("X-Tenan-t: a")]
    [InlineData("X_Tenant: a")]
    [InlineData("Return-Paths: a")]
    [InlineData("Resent-Return-Path: a")]
    [InlineData("Return: a")]
    [InlineData("X-Smtpg: a")]
    [InlineData("Bccx: a")]
    [InlineData("X-Bcc: a")]
    [InlineData("Subject: X-Tenant: a")]
    public void Look_alike_names_are_kept(string field)
    {
        AssertUnchanged(Clean($"From: a@b.example\r\n{field}\r\n\r\nbody\r\n", outbound: true));
    }

    [Fact]
    public void Folded_field_is_removed_with_all_its_continuation_lines()
    {
        var outcome = Clean(
            "From: a@b.example\r\nX-Tenant: acme,\r\n\tother\r\n  third\r\n \r\nTo: c@d.example,\r\n e@f.example\r\n\r\n body starts with WSP\r\n",
            outbound: false);
        Assert.Equal(1, outcome.Result.RemovedFields);
        Assert.Equal("From: a@b.example\r\nTo: c@d.example,\r\n e@f.example\r\n\r\n body starts with WSP\r\n", outcome.Output);
    }

    [Fact]
    public void Continuation_lines_of_kept_fields_are_not_mistaken_for_fields()
    {
        // A folded line whose text looks like a field belongs to the Subject: it is neither removed nor a field start.
        AssertUnchanged(Clean("Subject: hello\r\n X-Tenant: acme\r\n\tReturn-Path: <>\r\n\r\nbody", outbound: true));
    }

    [Fact]
    public void Consecutive_and_scattered_fields_are_all_removed_in_few_chunks()
    {
        var outcome = Clean(
            "X-Tenant: a\r\nReturn-Path: <>\r\nFrom: a@b.example\r\nX-Tenant-Id: 1\r\n x\r\nBcc: z@y.example\r\nSubject: s\r\nX-Smtpgw: 1\r\n\r\nX-Tenant: body\r\n",
            outbound: true);
        Assert.Equal(5, outcome.Result.RemovedFields);
        Assert.Equal("From: a@b.example\r\nSubject: s\r\n\r\nX-Tenant: body\r\n", outcome.Output);
        Assert.Equal(3, outcome.Calls); // "From", "Subject", then the empty line and body
        Assert.Equal(["X-Tenant", "Return-Path", "X-Tenant-Id", "Bcc", "X-Smtpgw"], outcome.Names);
    }

    [Theory]
    [InlineData("Bcc: hidden@x.example")]
    [InlineData("bcc:")]
    [InlineData("BCC : hidden@x.example")]
    [InlineData("Resent-Bcc: hidden@x.example")]
    [InlineData("resent-BCC: hidden@x.example,\r\n\tother@x.example")]
    public void Bcc_is_removed_only_from_outbound_mail(string field)
    {
        var message = $"From: a@b.example\r\n{field}\r\nTo: c@d.example\r\n\r\nbody\r\n";

        var outbound = Clean(message, outbound: true);
        Assert.True(outbound.Result.Changed);
        Assert.Equal(1, outbound.Result.RemovedFields);
        Assert.Equal("From: a@b.example\r\nTo: c@d.example\r\n\r\nbody\r\n", outbound.Output);

        AssertUnchanged(Clean(message, outbound: false));
    }

    [Theory]
    [InlineData("Message-ID: <1@a.example>", true)]
    [InlineData("Message-Id: <1@a.example>", true)]
    [InlineData("message-id:<1@a.example>", true)]
    [InlineData("MESSAGE-ID : <1@a.example>", true)]
    [InlineData("Message-ID:\r\n <1@a.example>", true)]
    [InlineData("Resent-Message-ID: <1@a.example>", false)]
    [InlineData("Message-IDs: <1@a.example>", false)]
    [InlineData("Message: <1@a.example>", false)]
    [InlineData("Subject: Message-ID: <1@a.example>", false)]
    public void Message_id_is_detected_case_insensitively(string field, bool expected)
    {
        var outcome = Clean($"From: a@b.example\r\n{field}\r\n\r\nbody\r\n", outbound: true);
        Assert.Equal(expected, outcome.Result.HasMessageId);
        AssertUnchanged(outcome);
    }

    [Fact]
    public void Message_id_is_reported_alongside_removals_and_not_from_the_body()
    {
        var withId = Clean("X-Tenant: a\r\nMessage-Id: <1@a.example>\r\n\r\nbody", outbound: true);
        Assert.True(withId.Result.HasMessageId);
        Assert.True(withId.Result.Changed);

        var inBody = Clean("X-Tenant: a\r\n\r\nMessage-ID: <1@a.example>\r\n", outbound: true);
        Assert.False(inBody.Result.HasMessageId);
        Assert.True(inBody.Result.Changed);
    }

    [Fact]
    public void Stripped_message_id_does_not_count_as_present()
    {
        var hygiene = new HeaderHygiene(new HeaderHygieneOptions { StripHeaders = ["Message-ID"] });
        var outcome = Clean("Message-ID: <1@a.example>\r\n\r\nbody", outbound: true, hygiene);
        Assert.False(outcome.Result.HasMessageId);
        Assert.Equal("\r\nbody", outcome.Output);
    }

    [Fact]
    public void Configured_exact_names_and_prefixes_are_removed()
    {
        var hygiene = new HeaderHygiene(new HeaderHygieneOptions { StripHeaders = ["X-Campaign", " X-Mailgun-* ", "x-originating-ip"] });
        var outcome = Clean(
            "X-Campaign: 1\r\nX-Campaign-Id: 2\r\nX-Mailgun-Sid: 3\r\nx-mailgun-variables: {}\r\nX-Mailgunner: 4\r\nX-Mailgun: 5\r\n"
            + "X-Originating-IP : [192.0.2.1]\r\nX-Tenant: 6\r\n\r\nX-Campaign: body\r\n",
            outbound: false, hygiene);
        Assert.Equal(5, outcome.Result.RemovedFields);
        Assert.Equal("X-Campaign-Id: 2\r\nX-Mailgunner: 4\r\nX-Mailgun: 5\r\n\r\nX-Campaign: body\r\n", outcome.Output);
    }

    [Theory]
    [InlineData("")]
    [InlineData("  ")]
    [InlineData("*")]
    [InlineData("X-Foo:")]
    [InlineData("X Foo")]
    [InlineData("X-*-Bar")]
    [InlineData("X-Fö")]
    public void Invalid_configured_names_are_refused(string entry)
    {
        Assert.Throws<ArgumentException>(() => new HeaderHygiene(new HeaderHygieneOptions { StripHeaders = [entry] }));
    }

    [Fact]
    public void Built_in_names_stay_stripped_whatever_the_configuration()
    {
        var hygiene = new HeaderHygiene(new HeaderHygieneOptions { StripHeaders = ["X-Other"] });
        Assert.Equal("\r\n", Clean("X-Tenant: a\r\n\r\n", outbound: false, hygiene).Output);
    }

    [Fact]
    public void Message_without_body_is_cleaned_to_the_end_of_input()
    {
        Assert.Equal("Subject: a\r\n", Clean("Subject: a\r\nX-Tenant: b\r\n", outbound: false).Output);
        Assert.Equal("Subject: a\r\n", Clean("Subject: a\r\nX-Tenant: b\r\n folded", outbound: false).Output);
        Assert.Equal("Subject: a\r\n", Clean("Subject: a\r\nX-Tenant: b", outbound: false).Output);
        Assert.Equal("Subject: a\r\nTo: c", Clean("Subject: a\r\nX-Tenant: b\r\nTo: c", outbound: false).Output);

        var onlyRemoved = Clean("X-Tenant: b\r\n", outbound: false);
        Assert.True(onlyRemoved.Result.Changed);
        Assert.Equal(0, onlyRemoved.Calls); // nothing is kept, so nothing is written

        AssertUnchanged(Clean("Subject: a\r\nTo: c", outbound: true));
        AssertUnchanged(Clean("", outbound: true));
    }

    [Theory]
    [InlineData("garbage")]
    [InlineData("From someone@example.com Mon Jan  1 00:00:00 2024")]
    [InlineData("no colon at all")]
    [InlineData("a b: c")]
    [InlineData(": empty name")]
    [InlineData("X-Tenant")]
    [InlineData("X-Tenant  no colon")]
    public void A_line_that_is_not_a_field_ends_the_header_block(string line)
    {
        var outcome = Clean($"X-Tenant: removed\r\nSubject: a\r\n{line}\r\nX-Tenant: kept\r\nMessage-ID: <1@a>\r\n\r\nbody", outbound: true);
        Assert.Equal(1, outcome.Result.RemovedFields);
        Assert.False(outcome.Result.HasMessageId);
        Assert.Equal($"Subject: a\r\n{line}\r\nX-Tenant: kept\r\nMessage-ID: <1@a>\r\n\r\nbody", outcome.Output);

        AssertUnchanged(Clean($"{line}\r\nX-Tenant: kept\r\n\r\nbody", outbound: true));
    }

    [Fact]
    public void A_continuation_line_before_any_field_ends_the_header_block()
    {
        AssertUnchanged(Clean(" folded\r\nX-Tenant: kept\r\n\r\nbody", outbound: true));
    }

    [Fact]
    public void A_name_with_a_stray_byte_is_still_a_field_so_later_fields_are_checked()
    {
        // Not ftext, so it matches nothing; but ending the block here would let the next field through unchecked.
        var outcome = Clean("X-T\u00e9nant: a\r\nX-\u0001: b\r\nX-Tenant: c\r\n\r\nbody", outbound: false);
        Assert.Equal("X-T\u00e9nant: a\r\nX-\u0001: b\r\n\r\nbody", outcome.Output);
    }

    [Fact]
    public void Body_lines_that_look_like_fields_are_untouched()
    {
        const string body = "X-Tenant: b\r\nReturn-Path: <>\r\nBcc: x@y.example\r\n\r\nX-Tenant: c\r\n";
        AssertUnchanged(Clean("Subject: a\r\n\r\n" + body, outbound: true));
        Assert.Equal("Subject: a\r\n\r\n" + body, Clean("Subject: a\r\nBcc: q@r.example\r\n\r\n" + body, outbound: true).Output);
        // Empty header block: the body starts at once.
        AssertUnchanged(Clean("\r\n" + body, outbound: true));
    }

    [Fact]
    public void No_change_path_calls_nothing()
    {
        var calls = 0;
        var message = new ReadOnlySequence<byte>("From: a@b.example\r\nBcc: x@y.example\r\nMessage-ID: <1@a>\r\n\r\nX-Tenant: b\r\n"u8.ToArray());
        var result = Default.Clean(message, outbound: false, _ => calls++);
        Assert.Equal(new HygieneResult(false, true, 0), result);
        Assert.Equal(0, calls);
    }

    [Fact]
    public void Output_is_byte_exact_apart_from_removed_fields()
    {
        // 8-bit text, tabs, trailing spaces, obsolete WSP before colons and a CR-LF-laden body must all survive untouched.
        var kept1 = "Received: from x ([192.0.2.1])\r\n\tby y; Mon, 1 Jan 2024 00:00:00 +0000 \r\nSubject: =?utf-8?q?caf=C3=A9?= \u00e9\u00ff\r\n";
        var kept2 = "To : <c@d.example>\r\nX-Tenantless\r\n"; // the second line is not a field: hygiene stops there
        var body = "\r\nline 1\r\n\r\n.\r\n\u0000\u00ff\r\nX-Tenant: still body";
        var outcome = Clean(kept1 + "X-Tenant-Id: \u00e9\r\n\t\r\n" + kept2 + body, outbound: true);
        Assert.Equal(kept1 + kept2 + body, outcome.Output);
        Assert.Equal(Encoding.Latin1.GetBytes(kept1 + kept2 + body), Encoding.Latin1.GetBytes(outcome.Output));
    }

    [Fact]
    public void Chunks_are_slices_of_the_input_not_copies()
    {
        var bytes = "A: 1\r\nX-Tenant: 2\r\nB: 3\r\n\r\nbody"u8.ToArray();
        var chunks = new List<ReadOnlySequence<byte>>();
        Default.Clean(new ReadOnlySequence<byte>(bytes), outbound: false, chunks.Add);
        Assert.Equal(2, chunks.Count);
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(chunks[0].First, out var first));
        Assert.Same(bytes, first.Array);
        Assert.Equal(0, first.Offset);
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(chunks[1].First, out var second));
        Assert.Same(bytes, second.Array);
        Assert.Equal("A: 1\r\n".Length + "X-Tenant: 2\r\n".Length, second.Offset);
    }

    [Fact]
    public void One_byte_segments_split_names_and_line_ends()
    {
        // Explicit, beyond the 1/2/3-byte splits every case already runs through: a prefix name, a CRLF CRLF and a folded value.
        var bytes = Encoding.ASCII.GetBytes("X-Tenant-Id\t: a\r\n b\r\nSubject: s\r\nResent-Bcc: x\r\n\r\nBcc: body\r\n");
        var sequence = SpoolTestKit.Segmented(bytes, 1);
        Assert.False(sequence.IsSingleSegment);
        var output = new List<byte>();
        var result = Default.Clean(sequence, outbound: true, chunk => output.AddRange(chunk.ToArray()));
        Assert.Equal(new HygieneResult(true, false, 2), result);
        Assert.Equal("Subject: s\r\n\r\nBcc: body\r\n", Encoding.ASCII.GetString([.. output]));
    }

    [Fact]
    public void Header_block_spanning_message_buffer_chunks_is_cleaned()
    {
        // MessageBuffer chunks are 64 KiB: place a removed field so that it straddles the boundary, behind a prefix segment.
        var filler = new StringBuilder();
        while (filler.Length < 64 * 1024 - 200)
        {
            filler.Append("Comments: ").Append('x', 60).Append("\r\n");
        }

        // Pad so that the name "X-Tenant" itself is cut after "X-Te".
        var pad = 64 * 1024 - 4 - filler.Length - "C: \r\n".Length;
        filler.Append("C: ").Append('y', pad).Append("\r\n");
        Assert.Equal(64 * 1024 - 4, filler.Length);

        var head = filler.ToString();
        var message = head + "X-Tenant: acme-tenant-spanning-the-chunk-boundary\r\n\tcontinued\r\nSubject: s\r\n\r\nbody\r\n";
        using var buffer = new SmtpGateway.Submission.MessageBuffer();
        buffer.Append(Encoding.ASCII.GetBytes(message));
        var sequence = SmtpGateway.Storage.ByteSequence.Concat([new ReadOnlySequence<byte>("Received: by gw\r\n"u8.ToArray()), buffer.ToSequence()]);
        Assert.False(sequence.IsSingleSegment);

        var output = new List<byte>();
        var result = Default.Clean(sequence, outbound: false, chunk => output.AddRange(chunk.ToArray()));
        Assert.Equal(1, result.RemovedFields);
        Assert.Equal("Received: by gw\r\n" + head + "Subject: s\r\n\r\nbody\r\n", Encoding.ASCII.GetString([.. output]));
    }

    [Fact]
    public void Removed_names_are_sanitised_for_logs()
    {
        var hygiene = new HeaderHygiene(new HeaderHygieneOptions { StripHeaders = ["X-Long-*"] });
        var longName = "X-Long-" + new string('a', 100);
        var outcome = Clean($"X-Tenant : a\r\n{longName}: b\r\n\r\n", outbound: false, hygiene);
        Assert.Equal(["X-Tenant", longName[..64]], outcome.Names);
    }

    [Fact]
    public void New_message_id_has_the_msg_id_form()
    {
        var id = HeaderHygiene.NewMessageId("0190A1B2C3D400000001", "mail.example.com");
        Assert.Matches("^<0190A1B2C3D400000001\\.[0-9a-f]{16}@mail\\.example\\.com>$", id);
        Assert.NotEqual(id, HeaderHygiene.NewMessageId("0190A1B2C3D400000001", "mail.example.com"));
    }

    [Theory]
    [InlineData("")]
    [InlineData(".example.com")]
    [InlineData("example.com.")]
    [InlineData("example..com")]
    [InlineData("exa mple.com")]
    [InlineData("example.com>\r\nBcc: x@y")]
    [InlineData("b\u00fccher.example")]
    [InlineData("[192.0.2.1]")]
    [InlineData("a@b")]
    public void New_message_id_falls_back_to_localhost_for_invalid_domains(string domain)
    {
        Assert.Matches("^<Q1\\.[0-9a-f]{16}@localhost>$", HeaderHygiene.NewMessageId("Q1", domain));
        Assert.EndsWith("@localhost>", HeaderHygiene.NewMessageId("Q1", new string('a', 256)), StringComparison.Ordinal);
    }

    [Fact]
    public void New_message_id_refuses_a_queue_id_that_is_not_an_atom()
    {
        Assert.Throws<ArgumentException>(() => HeaderHygiene.NewMessageId("a b", "example.com"));
        Assert.Throws<ArgumentException>(() => HeaderHygiene.NewMessageId("", "example.com"));
        Assert.Throws<ArgumentException>(() => HeaderHygiene.NewMessageId("a>", "example.com"));
    }
}
