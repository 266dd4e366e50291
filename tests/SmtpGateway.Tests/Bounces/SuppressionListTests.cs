using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Bounces;
using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Bounces;

/// <summary>Issue #7 per-tenant suppression lists: normalisation, isolation, the shared append-only file.</summary>
public sealed class SuppressionListTests : IDisposable
{
    static readonly DateTimeOffset Start = new(2030, 1, 1, 12, 0, 0, TimeSpan.Zero);

    readonly TempDirectory _dir = new();
    readonly FakeTimeProvider _time = new(Start);

    public void Dispose() => _dir.Dispose();

    SuppressionList New(TimeSpan? refresh = null) => new(_dir.Path, _time) { RefreshInterval = refresh ?? TimeSpan.FromSeconds(1) };

    string FileOf(string tenant) => _dir.Combine("suppression", tenant + ".jsonl");

    static void AppendRaw(string path, string text)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
        stream.Write(Encoding.UTF8.GetBytes(text));
    }

    [Fact]
    public void Add_contains_and_remove_compare_normalised_addresses()
    {
        using var list = New();

        Assert.True(list.Add("tenant-a", " <User@Bücher.Example> ", "hard-bounce", "5.1.1 report on Q1"));

        Assert.True(list.Contains("tenant-a", "user@xn--bcher-kva.example"));
        Assert.True(list.Contains("tenant-a", "USER@BÜCHER.EXAMPLE"));
        Assert.True(list.Contains("tenant-a", "<user@bücher.example>"));
        Assert.True(list.Contains("tenant-a", "user@bücher.example.")); // trailing root dot
        Assert.False(list.Contains("tenant-a", "user2@bücher.example"));
        Assert.False(list.Contains("tenant-a", "user@bucher.example"));
        Assert.False(list.Add("tenant-a", "USER@xn--bcher-kva.example", "complaint", null)); // already listed: nothing written

        var entry = Assert.Single(list.List("tenant-a"));
        Assert.Equal(new SuppressionEntry("user@xn--bcher-kva.example", "hard-bounce", "5.1.1 report on Q1", Start), entry);
        Assert.Single(File.ReadAllLines(FileOf("tenant-a")));

        Assert.True(list.Remove("tenant-a", "<USER@XN--BCHER-KVA.example>"));
        Assert.False(list.Contains("tenant-a", "user@bücher.example"));
        Assert.False(list.Remove("tenant-a", "user@bücher.example"));
        Assert.Empty(list.List("tenant-a"));
        Assert.Equal(2, File.ReadAllLines(FileOf("tenant-a")).Length);
    }

    [Fact]
    public void Detail_is_one_line_of_bounded_length()
    {
        using var list = New();

        Assert.True(list.Add("tenant-a", "u@example.net", "hard-bounce", "5.1.1\r\nInjected: yes\0" + new string('x', 1000)));

        var detail = Assert.Single(list.List("tenant-a")).Detail!;
        Assert.StartsWith("5.1.1Injected: yes", detail, StringComparison.Ordinal);
        Assert.DoesNotContain(detail, char.IsControl);
        Assert.True(detail.Length <= 300, detail.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Single(File.ReadAllLines(FileOf("tenant-a")));
    }

    [Fact]
    public void One_tenants_list_never_affects_another()
    {
        using var list = New();
        Assert.True(list.Add("tenant-a", "u@example.net", "hard-bounce", null));

        Assert.False(list.Contains("tenant-b", "u@example.net"));
        Assert.Empty(list.List("tenant-b"));
        Assert.False(list.Remove("tenant-b", "u@example.net"));
        Assert.False(File.Exists(FileOf("tenant-b")));

        Assert.True(list.Add("tenant-b", "u@example.net", "complaint", null));
        Assert.True(list.Remove("tenant-b", "u@example.net"));
        Assert.True(list.Contains("tenant-a", "u@example.net"));
        Assert.Equal("hard-bounce", Assert.Single(list.List("tenant-a")).Reason);
    }

    [Fact]
    public void Entries_persist_across_instances()
    {
        using (var first = New())
        {
            Assert.True(first.Add("tenant-a", "u@example.net", "hard-bounce", "5.1.1 in reply to Q1"));
            Assert.True(first.Add("tenant-a", "gone@example.net", "manual", null));
            Assert.True(first.Remove("tenant-a", "gone@example.net"));
        }

        using var second = New();
        Assert.True(second.Contains("tenant-a", "U@example.net"));
        Assert.False(second.Contains("tenant-a", "gone@example.net"));
        Assert.Equal([new SuppressionEntry("u@example.net", "hard-bounce", "5.1.1 in reply to Q1", Start)], second.List("tenant-a"));
    }

    [Fact]
    public void A_removal_by_a_second_instance_reaches_the_first_after_its_refresh_interval()
    {
        var refresh = TimeSpan.FromMilliseconds(100);
        using var gateway = New(refresh);
        using var cli = New();
        Assert.True(gateway.Add("tenant-a", "u@example.net", "hard-bounce", null));
        Assert.True(gateway.Contains("tenant-a", "u@example.net"));

        Assert.True(cli.Remove("tenant-a", "u@example.net"));
        Assert.True(cli.Add("tenant-a", "new@example.net", "manual", "by the operator"));

        // Not before the refresh interval: the gateway answers from memory and does not read the file on every lookup.
        _time.Advance(refresh - TimeSpan.FromMilliseconds(1));
        Assert.True(gateway.Contains("tenant-a", "u@example.net"));
        Assert.False(gateway.Contains("tenant-a", "new@example.net"));

        // Once it has passed, the next lookup reads the lines the other instance appended.
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.False(gateway.Contains("tenant-a", "u@example.net"));
        Assert.True(gateway.Contains("tenant-a", "new@example.net"));

        // Both processes append to the same file without overwriting each other (O_APPEND).
        Assert.True(gateway.Add("tenant-a", "third@example.net", "hard-bounce", null));
        Assert.Equal(4, File.ReadAllLines(FileOf("tenant-a")).Length);
        Assert.Equal(["new@example.net", "third@example.net"], gateway.List("tenant-a").Select(e => e.Address));
    }

    [Fact]
    public void A_half_written_last_line_is_ignored_until_it_is_completed()
    {
        using var list = New(TimeSpan.Zero);
        Assert.True(list.Add("tenant-a", "first@example.net", "manual", null));
        var line = """{"op":"add","address":"late@example.net","reason":"complaint","at":"2030-01-01T12:00:00+00:00"}""";

        AppendRaw(FileOf("tenant-a"), line[..25]);
        Assert.False(list.Contains("tenant-a", "late@example.net"));
        Assert.True(list.Contains("tenant-a", "first@example.net"));

        AppendRaw(FileOf("tenant-a"), line[25..]);
        Assert.False(list.Contains("tenant-a", "late@example.net")); // still no newline: may be half written

        AppendRaw(FileOf("tenant-a"), "\n");
        Assert.True(list.Contains("tenant-a", "late@example.net"));
        Assert.Equal("complaint", list.List("tenant-a").Single(e => e.Address == "late@example.net").Reason);

        // The completed line was applied once, and the next own line lands after it.
        Assert.True(list.Add("tenant-a", "after@example.net", "manual", null));
        Assert.Equal(["after@example.net", "first@example.net", "late@example.net"], list.List("tenant-a").Select(e => e.Address)); // all at Start: by address
        Assert.Equal(3, File.ReadAllLines(FileOf("tenant-a")).Length);
    }

    [Fact]
    public void A_torn_last_line_left_by_a_crashed_writer_does_not_swallow_the_next_entry()
    {
        using var list = New(TimeSpan.Zero);
        Assert.True(list.Add("tenant-a", "first@example.net", "manual", null));

        // The CLI died in the middle of its write: this line will never be completed.
        AppendRaw(FileOf("tenant-a"), """{"op":"add","address":"torn@exa""");

        Assert.True(list.Add("tenant-a", "next@example.net", "hard-bounce", "5.1.1 in reply to Q1"));
        Assert.True(list.Contains("tenant-a", "next@example.net"),
            "Add returned true but the entry is lost: it was appended right after the torn line, so the two form one damaged line. "
            + "SuppressionList.Append should start the record on a new line when the file does not end with a newline.");
        using var restarted = New();
        Assert.True(restarted.Contains("tenant-a", "next@example.net"), "the entry is not in the file either");
        Assert.True(restarted.Contains("tenant-a", "first@example.net"));
    }

    [Fact]
    public void A_damaged_line_costs_that_line_only()
    {
        AppendRaw(FileOf("tenant-a"),
            "{{{ not json\n" +
            "\n" +
            "null\n" +
            """{"op":"add","address":"not-an-address","at":"2030-01-01T12:00:00+00:00"}""" + "\n" +
            """{"op":"add","at":"2030-01-01T12:00:00+00:00"}""" + "\n" +
            """{"op":"frobnicate","address":"odd@example.net","at":"2030-01-01T12:00:00+00:00"}""" + "\n" +
            """{"op":"add","address":"Good@Example.NET","reason":"hard-bounce","at":"2030-01-01T12:00:00+00:00"}""" + "\n" +
            "\u00ff\u00fe garbage \u0001\n" +
            """{"op":"add","address":"also-good@example.net","at":"2030-01-01T12:00:01+00:00"}""" + "\n");

        using var list = New();

        Assert.Equal(["good@example.net", "also-good@example.net"], list.List("tenant-a").Select(e => e.Address));
        Assert.True(list.Contains("tenant-a", "good@example.net"));
        Assert.False(list.Contains("tenant-a", "odd@example.net"));
        Assert.Equal("manual", list.List("tenant-a")[1].Reason); // no reason recorded: manual
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("nobody")]
    [InlineData("<>")]
    [InlineData("@example.net")]
    [InlineData("user@")]
    [InlineData("user@[192.0.2.1]")]
    [InlineData("user@exa mple.net")]
    [InlineData("user@-bad-.example")]
    [InlineData("us\r\ner@example.net")]
    [InlineData("user\0@example.net")]
    public void Invalid_addresses_are_refused_and_nothing_is_written(string address)
    {
        using var list = New();

        Assert.False(list.Add("tenant-a", address, "manual", null));
        Assert.False(list.Contains("tenant-a", address));
        Assert.False(list.Remove("tenant-a", address));
        Assert.Null(SuppressionList.Normalize(address));
        Assert.Empty(list.List("tenant-a"));
        Assert.False(File.Exists(FileOf("tenant-a")));
    }

    [Fact]
    public void The_list_file_has_mode_0600()
    {
        using var list = New();
        list.Add("tenant-a", "u@example.net", "hard-bounce", null);

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(FileOf("tenant-a")));
    }

    [Fact]
    public void List_is_ordered_by_time_then_address()
    {
        using var list = New();
        list.Add("tenant-a", "zed@example.net", "hard-bounce", null);
        _time.Advance(TimeSpan.FromMinutes(1));
        list.Add("tenant-a", "bob@example.net", "complaint", null);
        list.Add("tenant-a", "alice@example.net", "manual", null);
        _time.Advance(TimeSpan.FromMinutes(1));
        list.Add("tenant-a", "aaron@example.net", "manual", null);

        Assert.Equal(["zed@example.net", "alice@example.net", "bob@example.net", "aaron@example.net"], list.List("tenant-a").Select(e => e.Address));
        Assert.Equal([Start, Start.AddMinutes(1), Start.AddMinutes(1), Start.AddMinutes(2)], list.List("tenant-a").Select(e => e.At));
    }

    [Fact]
    public void ToJson_is_an_array_of_camel_case_entries_without_null_fields()
    {
        using var list = New();
        list.Add("tenant-a", "u@example.net", "hard-bounce", "5.1.1 report on Q1");
        list.Add("tenant-a", "v@example.net", "manual", null);

        using var json = JsonDocument.Parse(SuppressionList.ToJson(list.List("tenant-a")));

        Assert.Equal(JsonValueKind.Array, json.RootElement.ValueKind);
        var entries = json.RootElement.EnumerateArray().ToList();
        Assert.Equal(2, entries.Count);
        Assert.Equal(["address", "reason", "detail", "at"], entries[0].EnumerateObject().Select(p => p.Name));
        Assert.Equal("u@example.net", entries[0].GetProperty("address").GetString());
        Assert.Equal("hard-bounce", entries[0].GetProperty("reason").GetString());
        Assert.Equal("5.1.1 report on Q1", entries[0].GetProperty("detail").GetString());
        Assert.Equal(Start, entries[0].GetProperty("at").GetDateTimeOffset());
        Assert.Equal(["address", "reason", "at"], entries[1].EnumerateObject().Select(p => p.Name));
        Assert.Equal("[]", SuppressionList.ToJson([]));
    }
}
