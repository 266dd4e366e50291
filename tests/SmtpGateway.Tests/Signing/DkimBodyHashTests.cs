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
}
