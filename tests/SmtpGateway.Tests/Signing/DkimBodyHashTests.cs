using System.Security.Cryptography;
using System.Text;
using SmtpGateway.Signing;
using SmtpGateway.Storage;

namespace SmtpGateway.Tests.Signing;

/// <summary>RFC 6376 section 3.4.4 relaxed body canonicalisation, fed line by line as the listener reads DATA.</summary>
public sealed class DkimBodyHashTests
{
    static string Hash(params string[] lines)
    {
        using var hash = new DkimBodyHash();
        foreach (var line in lines)
        {
            hash.AppendLine(Encoding.UTF8.GetBytes(line));
        }

        return Convert.ToBase64String(hash.Finish());
    }

    static string Sha(string canonical) => Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes(canonical)));

    [Fact]
    public void The_rfc_6376_section_3_4_5_example_body()
    {
        // " C \r\nD \t E\r\n\r\n\r\n" canonicalises (relaxed) to " C\r\nD E\r\n".
        Assert.Equal(Sha(" C\r\nD E\r\n"), Hash(" C ", "D \t E", "", ""));
    }

    [Fact]
    public void An_empty_body_hashes_as_the_empty_string_and_so_does_one_of_empty_lines()
    {
        Assert.Equal(Sha(""), Hash());
        Assert.Equal(Sha(""), Hash("", " \t", ""));
        Assert.Equal("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", Hash()); // the published bh= of an empty body
    }

    [Fact]
    public void Empty_lines_count_only_when_text_follows_them()
    {
        Assert.Equal(Sha("a\r\n\r\n\r\nb\r\n"), Hash("a", "", "  ", "b", "", ""));
    }

    [Fact]
    public void A_line_split_over_segments_hashes_as_one()
    {
        var whole = Hash("x  y\t\tz  ");
        using var hash = new DkimBodyHash();
        hash.AppendLine(ByteSequence.Of(["x "u8.ToArray(), " y\t"u8.ToArray(), "\tz  "u8.ToArray()]));
        Assert.Equal(whole, Convert.ToBase64String(hash.Finish()));
        Assert.Equal(Sha("x y z\r\n"), whole);
    }

    [Fact]
    public void Bodies_of_long_and_short_lines_hash_as_the_rfc_says_across_the_gathering_buffer()
    {
        // The canonical bytes are gathered in 4 KiB before they reach SHA-256: lines that end exactly at, straddle or exceed
        // that size, with white-space runs to collapse, must hash as the plain reading of section 3.4.4 does.
        var random = new Random(15);
        for (var round = 0; round < 200; round++)
        {
            var lines = new List<string>();
            for (var n = random.Next(0, 40); n > 0; n--)
            {
                var length = random.Next(4) switch { 0 => 0, 1 => random.Next(1, 80), 2 => random.Next(4090, 4100), _ => random.Next(4100, 10000) };
                var line = new StringBuilder(length);
                while (line.Length < length)
                {
                    line.Append(random.Next(10) switch { 0 => " ", 1 => "\t", 2 => "  \t ", _ => ((char)random.Next('a', 'z' + 1)).ToString() });
                }

                lines.Add(line.ToString());
            }

            Assert.Equal(Sha(Relaxed(lines)), Hash([.. lines]));
        }
    }

    [Theory]
    [InlineData(4094, false)] // with its CRLF exactly the 4 KiB gathered at once
    [InlineData(4095, false)]
    [InlineData(4096, true)] // a run to collapse in a line as long as the buffer
    [InlineData(4097, false)] // longer than the buffer, nothing to collapse: hashed past it
    [InlineData(9000, true)]
    public void Lines_at_and_past_the_gathering_buffer_hash_as_the_rfc_says(int length, bool withRuns)
    {
        var line = new string('x', length).ToCharArray();
        if (withRuns)
        {
            for (var i = 100; i < length - 10; i += 700)
            {
                line[i] = ' ';
                line[i + 1] = '\t';
                line[i + 2] = ' ';
            }
        }

        string[] lines = ["a", new string(line), "b", new string(line)];
        Assert.Equal(Sha(Relaxed(lines)), Hash(lines));
        Assert.Equal(Sha(Relaxed(lines[1..])), Hash(lines[1..]));
    }

    /// <summary>RFC 6376 section 3.4.4 read plainly: runs of WSP become one SP, WSP at line ends goes, empty lines at the end go.</summary>
    static string Relaxed(IEnumerable<string> lines)
    {
        var text = string.Concat(lines.Select(l => System.Text.RegularExpressions.Regex.Replace(l, "[ \t]+", " ").TrimEnd(' ') + "\r\n"));
        while (text.EndsWith("\r\n\r\n", StringComparison.Ordinal))
        {
            text = text[..^2];
        }

        return text == "\r\n" ? "" : text;
    }
}
