using System.Buffers;
using System.Net;
using System.Text;
using MimeKit;
using SmtpGateway.Configuration;
using SmtpGateway.Smtp;
using SmtpGateway.Spool;
using SmtpGateway.Submission;
using SmtpGateway.Tests.Listener;
using SmtpGateway.Tests.Signing;
using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Submission;

/// <summary>
/// The pipeline without SMTP: a message built in code (as the MCP tool and the admin API will build one) passes the same
/// stages as a DATA transaction — policy, hygiene, DKIM, the durable spool — with a real FileSpool and python3-dkim.
/// </summary>
public sealed class SubmissionPipelineTests : IDisposable
{
    readonly SoftwareKeySigner _keys = new();
    readonly SubmissionBench _bench = new(new Dictionary<string, TenantConfig>
    {
        ["tenant-a"] = new() { Domains = ["tenant-a.example"], Networks = ["127.0.0.1/32"] },
        ["tenant-b"] = new() { Domains = ["tenant-b.example"], Networks = ["127.0.0.2/32"] },
    });

    readonly FileSpool _spool;
    readonly RecordingAudit _audit;
    readonly Dictionary<string, string> _records;

    public SubmissionPipelineTests()
    {
        _spool = _bench.Spool;
        _audit = _bench.Audit;
        var rsa = _keys.AddRsa("tenant-a.example", "r1");
        var ed = _keys.AddEd25519("tenant-a.example", "e1");
        _bench.Dkim.Save("tenant-a", [rsa, ed]);
        _records = new Dictionary<string, string>(PythonDkim.Records(rsa, ed));
    }

    public void Dispose() => _bench.Dispose();

    SubmissionPipeline Pipeline(LimitsConfig? limits = null, MessageMemoryBudget? budget = null) => _bench.Pipeline(_keys, limits, budget);

    /// <summary>The Identity stage names the tenant (here by client network; the MCP channel will use a session token).</summary>
    static SubmissionContext AsTenant(SubmissionPipeline pipeline, string tenant)
    {
        var client = tenant == "tenant-a" ? IPAddress.Parse("127.0.0.1") : IPAddress.Parse("127.0.0.2");
        var context = pipeline.Open("mcp-1", SubmissionChannel.Mcp, client, "mcp", identifyByNetwork: true);
        Assert.Equal(tenant, context.Tenant?.TenantId);
        return context;
    }

    static SmtpPath Path(string address)
    {
        Assert.Equal(PathError.None, SmtpGrammar.TryParsePath($"<{address}>", "", allowNull: false, out var path));
        return path!;
    }

    static ReadOnlySequence<byte> Built(string from, string body, params (string Name, string Value)[] extra)
    {
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse(from));
        message.To.Add(MailboxAddress.Parse("bob@example.net"));
        message.Subject = "built in code";
        message.Date = new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero);
        foreach (var (name, value) in extra)
        {
            message.Headers.Add(name, value);
        }

        message.Body = new TextPart("plain") { Text = body };
        using var output = new MemoryStream();
        var options = FormatOptions.Default.Clone();
        options.NewLineFormat = NewLineFormat.Dos;
        message.WriteTo(options, output);
        return new ReadOnlySequence<byte>(output.ToArray());
    }

    async Task<byte[]> SpooledAsync(string id)
    {
        var message = await _spool.LoadAsync(id, CancellationToken.None);
        Assert.NotNull(message);
        return await SpoolTestKit.ReadContentAsync(message!);
    }

    static string QueueId(SmtpReply reply)
    {
        Assert.Equal(250, reply.Code);
        return reply.Text[(reply.Text.LastIndexOf(' ') + 1)..];
    }

    [Fact]
    public async Task A_message_built_in_code_is_cleaned_signed_and_spooled_like_an_smtp_one()
    {
        var pipeline = Pipeline();
        var context = AsTenant(pipeline, "tenant-a");
        var reply = await pipeline.SubmitAsync(context, Path("alice@tenant-a.example"), [Path("bob@example.net")],
            Built("alice@tenant-a.example", "Hello from an agent.", ("X-Tenant", "tenant-b")));

        Assert.Equal(QueueId(reply.Reply), reply.QueueId);
        var spooled = await SpooledAsync(reply.QueueId!);
        var text = Encoding.UTF8.GetString(spooled);
        Assert.StartsWith("DKIM-Signature:", text, StringComparison.Ordinal);
        Assert.Contains("\r\nReceived: from unknown ([127.0.0.1])", text, StringComparison.Ordinal);
        Assert.DoesNotContain("X-Tenant", text, StringComparison.OrdinalIgnoreCase); // hygiene ran
        Assert.Equal([true, true], PythonDkim.Verify(spooled, _records));
        var entry = Assert.Single(_spool.List(SpoolArea.Queue));
        Assert.Equal("tenant-a", entry.Envelope.TenantId);
        Assert.False(entry.Envelope.Inbound);
        Assert.Equal(0, pipeline.Budget.Used); // every octet of memory went back
        Assert.False(context.InTransaction);
    }

    [Fact]
    public async Task A_from_in_another_tenants_domain_is_refused_and_audited_as_cross_tenant()
    {
        var pipeline = Pipeline();
        var context = AsTenant(pipeline, "tenant-b");
        var reply = await pipeline.SubmitAsync(context, Path("mallory@tenant-b.example"), [Path("bob@example.net")],
            Built("ceo@tenant-a.example", "Pay this invoice."));

        Assert.Equal(SmtpReplies.HeaderFromNotOwned, reply.Reply);
        Assert.Null(reply.QueueId);
        Assert.Empty(_spool.List(SpoolArea.Queue));
        var audit = Assert.Single(_audit.Events, e => e.Action == "header-from");
        Assert.True(audit.CrossTenant);
        Assert.Equal("mcp", audit.Channel);
    }

    [Fact]
    public async Task A_large_body_streams_to_disk_is_signed_from_there_and_spooled_byte_exact()
    {
        var limits = new LimitsConfig { MessageMemoryThreshold = 8 * 1024 };
        var pipeline = Pipeline(limits);
        var line = new string('x', 76);
        var body = string.Join("\n", Enumerable.Range(0, 30_000).Select(i => $"{i:D6} {line}")); // ~2.5 MB
        var built = Built("alice@tenant-a.example", body).ToArray();
        var context = AsTenant(pipeline, "tenant-a");

        using var incoming = StartTransaction(pipeline, context);
        Feed(incoming, built);
        Assert.True(incoming.Spilled);
        Assert.True(pipeline.Budget.Used <= 64 * 1024, $"{pipeline.Budget.Used} octets of memory for a {built.Length}-octet message");
        var reply = await pipeline.EndMessageAsync(context, incoming);

        var spooled = await SpooledAsync(QueueId(reply));
        Assert.Equal([true, true], PythonDkim.Verify(spooled, _records));
        // Signatures and our Received field on top, then the message exactly as it came.
        Assert.True(spooled.AsSpan().EndsWith(built));
        var top = Encoding.UTF8.GetString(spooled, 0, spooled.Length - built.Length);
        Assert.StartsWith("DKIM-Signature:", top, StringComparison.Ordinal);
        Assert.Contains("\r\nReceived: from unknown", top, StringComparison.Ordinal);
    }

    [Fact]
    public async Task With_the_memory_budget_spent_the_body_streams_to_disk_from_its_first_octet()
    {
        var limits = new LimitsConfig { MaxHeaderSectionSize = 16 * 1024, MaxInFlightMemory = 128 * 1024 };
        var budget = new MessageMemoryBudget(limits.MaxInFlightMemory);
        Assert.True(budget.TryTake(64 * 1024)); // another session holds half
        var pipeline = Pipeline(limits, budget);
        var context = AsTenant(pipeline, "tenant-a");
        var built = Built("alice@tenant-a.example", string.Join("\n", Enumerable.Repeat(new string('y', 70), 2000))).ToArray();

        using var incoming = StartTransaction(pipeline, context);
        Feed(incoming, built);
        Assert.True(incoming.Spilled);
        Assert.Equal(IncomingProblem.None, incoming.Problem);
        var reply = await pipeline.EndMessageAsync(context, incoming);
        var spooled = await SpooledAsync(QueueId(reply));
        Assert.Equal([true, true], PythonDkim.Verify(spooled, _records));
        incoming.Dispose();
        Assert.Equal(64 * 1024, budget.Used); // ours went back; the other session's is untouched
    }

    [Fact]
    public void No_room_for_a_header_section_is_452_4_3_1_before_any_data()
    {
        var limits = new LimitsConfig { MaxHeaderSectionSize = 16 * 1024, MaxInFlightMemory = 32 * 1024 };
        var budget = new MessageMemoryBudget(limits.MaxInFlightMemory);
        Assert.True(budget.TryTake(20 * 1024));
        var pipeline = Pipeline(limits, budget);
        var context = AsTenant(pipeline, "tenant-a");
        Assert.True(pipeline.Mail(context, Path("alice@tenant-a.example"), false, false).Accepted);
        Assert.True(pipeline.Recipient(context, Path("bob@example.net")).Accepted);

        Assert.Null(pipeline.BeginMessage(context, out var refusal));
        Assert.Equal(452, refusal!.Code);
        Assert.Equal("4.3.1", refusal.Enhanced);
    }

    [Fact]
    public async Task A_header_section_over_the_cap_is_552_5_3_4_and_nothing_is_spooled()
    {
        var pipeline = Pipeline(new LimitsConfig { MaxHeaderSectionSize = 16 * 1024 });
        var context = AsTenant(pipeline, "tenant-a");
        var headers = string.Concat(Enumerable.Range(0, 400).Select(i => $"X-Filler-{i}: {new string('z', 60)}\r\n"));
        var message = Encoding.ASCII.GetBytes($"From: alice@tenant-a.example\r\n{headers}\r\nbody\r\n");

        var reply = (await pipeline.SubmitAsync(context, Path("alice@tenant-a.example"), [Path("bob@example.net")], new ReadOnlySequence<byte>(message))).Reply;

        Assert.Equal(SmtpReplies.HeaderSectionTooBig, reply);
        Assert.Empty(_spool.List(SpoolArea.Queue));
        Assert.Equal(0, pipeline.Budget.Used);
    }

    [Fact]
    public async Task A_bare_line_feed_in_a_built_message_is_refused_as_on_the_wire()
    {
        var pipeline = Pipeline();
        var context = AsTenant(pipeline, "tenant-a");
        var message = Encoding.ASCII.GetBytes("From: alice@tenant-a.example\r\nSubject: x\r\n\r\nline one\n.\nline two\r\n");

        var reply = (await pipeline.SubmitAsync(context, Path("alice@tenant-a.example"), [Path("bob@example.net")], new ReadOnlySequence<byte>(message))).Reply;

        Assert.Equal(SmtpReplies.BareCrLfInData, reply);
        Assert.Empty(_spool.List(SpoolArea.Queue));
    }

    [Theory]
    [InlineData("From: alice@tenant-a.example\r\nSubject: x\r\n\r\nline \0 one\r\n")]
    [InlineData("From: alice@tenant-a.example\r\nSubject: x\r\n\r\nlast line without an ending \0")]
    public async Task A_nul_in_a_built_message_is_refused_as_on_the_wire(string text)
    {
        var pipeline = Pipeline();
        var context = AsTenant(pipeline, "tenant-a");

        var reply = (await pipeline.SubmitAsync(context, Path("alice@tenant-a.example"), [Path("bob@example.net")], new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(text)))).Reply;

        Assert.Equal(SmtpReplies.NulInData, reply);
        Assert.Empty(_spool.List(SpoolArea.Queue));
    }

    /// <summary>The listener's bound: 1000 octets with the CRLF, counted dot-stuffed as the line would travel.</summary>
    [Theory]
    [InlineData(999, "", "\r\n")]
    [InlineData(999, "", "")]
    [InlineData(998, ".", "\r\n")]
    [InlineData(1500, "Subject: ", "\r\n")]
    public async Task A_line_over_1000_octets_in_a_built_message_is_refused_as_on_the_wire(int length, string prefix, string ending)
    {
        var pipeline = Pipeline();
        var context = AsTenant(pipeline, "tenant-a");
        var line = prefix + new string('x', length - prefix.Length);
        var text = prefix.Length > 0 && !prefix.StartsWith('.')
            ? $"From: alice@tenant-a.example\r\n{line}{ending}\r\nbody\r\n"
            : $"From: alice@tenant-a.example\r\nSubject: x\r\n\r\n{line}{ending}";

        var reply = (await pipeline.SubmitAsync(context, Path("alice@tenant-a.example"), [Path("bob@example.net")], new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(text)))).Reply;

        Assert.Equal(SmtpReplies.DataLineTooLong, reply);
        Assert.Empty(_spool.List(SpoolArea.Queue));
        Assert.False(context.InTransaction);
        Assert.Equal(0, pipeline.Budget.Used);
    }

    [Theory]
    [InlineData("", "\r\n")]
    [InlineData("", "")]
    [InlineData(".", "\r\n")]
    public async Task A_line_of_exactly_1000_octets_on_the_wire_is_taken(string prefix, string ending)
    {
        var pipeline = Pipeline();
        var context = AsTenant(pipeline, "tenant-a");
        var line = prefix + new string('x', 998 - (2 * prefix.Length));
        var text = $"From: alice@tenant-a.example\r\nSubject: x\r\n\r\n{line}{ending}";

        var reply = await pipeline.SubmitAsync(context, Path("alice@tenant-a.example"), [Path("bob@example.net")], new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(text)));

        Assert.Equal(QueueId(reply.Reply), reply.QueueId);
    }

    [Fact]
    public async Task A_built_message_over_the_hop_limit_is_refused_as_a_loop()
    {
        var pipeline = Pipeline(new LimitsConfig { MaxReceivedHeaders = 3 });
        var context = AsTenant(pipeline, "tenant-a");
        var received = string.Concat(Enumerable.Range(0, 4).Select(i => $"Received: from h{i}.example.net by h{i + 1}.example.net; Fri, 4 Dec 2026 12:00:00 +0000\r\n"));
        var message = Encoding.ASCII.GetBytes($"From: alice@tenant-a.example\r\n{received}Subject: x\r\n\r\nbody\r\n");

        var reply = (await pipeline.SubmitAsync(context, Path("alice@tenant-a.example"), [Path("bob@example.net")], new ReadOnlySequence<byte>(message))).Reply;

        Assert.Equal(SmtpReplies.TooManyHops, reply);
        Assert.Empty(_spool.List(SpoolArea.Queue));
        Assert.Equal(0, pipeline.Budget.Used);
    }

    static IncomingMessage StartTransaction(SubmissionPipeline pipeline, SubmissionContext context)
    {
        Assert.True(pipeline.Mail(context, Path("alice@tenant-a.example"), false, false).Accepted);
        Assert.True(pipeline.Recipient(context, Path("bob@example.net")).Accepted);
        var incoming = pipeline.BeginMessage(context, out var refusal);
        Assert.Null(refusal);
        return incoming!;
    }

    static void Feed(IncomingMessage incoming, byte[] message)
    {
        var text = new ReadOnlySequence<byte>(message);
        var reader = new SequenceReader<byte>(text);
        while (reader.TryReadTo(out ReadOnlySequence<byte> line, "\r\n"u8))
        {
            incoming.AppendLine(line);
        }
    }
}
