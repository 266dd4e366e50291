using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using SmtpGateway.Signing;
using SmtpGateway.Tests.Listener;
using SmtpGateway.Tests.Spool;

namespace SmtpGateway.Tests.Signing;

/// <summary>
/// Performance work on the signing path must not change what is signed: with fixed keys and a fixed clock, the
/// DKIM-Signature headers are byte-for-byte those the unoptimised path produced (recorded below), however the
/// message arrives (one segment, many segments, a slice of a larger buffer).
/// </summary>
public sealed class DkimSigningStabilityTests : IDisposable
{
    /// <summary>A fixed RSA-2048 test key (generated for this test only; signs nothing real).</summary>
    const string RsaPem = """
        -----BEGIN RSA PRIVATE KEY-----
        MIIEowIBAAKCAQEA0Q21bkTMw53UrMZrX3MjFYxFI+hVotMOCEqXpkTB8SF1mo0f
        +Fg8MDF/gMXFG4+uZds5oPL3/9qYUC+sc4RDlVfcwiaT28DRE93ceYW/V/wMMk/j
        k9AeDDYDGpqFSEfmWBvzw0JAx1Dfh0CjO3fATZD9BRC8LS2eoiu4V3j2YsMRaToV
        IWWFaj6IbO/A4vk3RXg2sho1/zPrqLr1GWQKSyzxFAUoKTRnS+PbYGyh7V2M+ZZE
        +nLm0ANR/LqbzZBB0n5LqbZjgdRqoTwoV6+pCJYWz362GLkhJRakmJmBR083fcZz
        6ApG9JuxI9JTHm1sOeXeidQGEHWiPkWk9oieuQIDAQABAoIBAEgT9e4jAoafsGgx
        sWujgwE278/Fl2Ega8IoFclaA5Rj+OxkpBU4NuhW6KM5jRBHpdWwlFoN67vnXoSn
        K0pY3ARt2suGCYzHGk9DO3UazDJF0N639LtOEk4bgU524GVfhOf0G0PDYBpYo/k6
        LA2g6EjWKKbKclcRV5SKhnCCYFEEWT9dvpG4TcOCpgiGzpIbXTTErCy7gSS7gOZJ
        RViwzG6sOoAqgZAxa6l4t2b93Bz48kvNcfs3vcodvKf0j6Si4ejrVaouNnXLUq2u
        of4pi16tYJK42fz6ojCoMwgcb0+aBAs9GQca6nTAlZ/wUYo4Sk6qObUAg/1miazO
        OK52zZECgYEA6e1rw7MpRHRl8uTkMiudIXXR7R2FLQPsHtMJeZRtzQBJ78vHEFbw
        S5ySXFsmlnz4AIz3OgzZFLoVwUvk6ycAf8HmeOyIbaZ1BsaCLm/gHmGdtHUl7Pf8
        qnJBYOubC1NTzFqP6xY6tU4fG9NPl9/sQyTzdYgqgvRqIzuZ0itmIyMCgYEA5Mdz
        4yIdQyM/77kdYKm+EemMzuOqUCxOlE2f8t03cF8i48afU0sBCh01qUKTAR6tP9/G
        z7xSKW/vNeZujSc8QQCJVmpLdHmC6fAxNfzjgmbh6kJ+WJVJUhcA6KyXmJNN5p09
        pXVFyQhLEcBJnUKnLRTlQ4mXGhYrl3Gza4GuMnMCgYBPTR5QPIdL3o3FFtVJMMHW
        2wMsd+pyxTahiHdY0PmcGnH2KcW1A1P4vf5b8saVE45bWW5iLoLU5PSFD75t/U3N
        AaWo7r6dNWXMwzTUmzaF9h+pUmFmAPeVrJ//RD/OShRJXZYWYvXKCs6+9xavbMjC
        Rl+GQ3/t3v+wK/9MYUwBswKBgE6mCr7wwWKNQbOlzeWnNQJvacrOFYTOVo1BSlVx
        m1d0PUhUxf0acdcKR6JSkrr10tV8lppfwVchdfjvqN25uUsXZh9hF2OJSmol+qT2
        tTflKpEgHtNRLw2bfuJ+Qvde3I8FS2YQNNdxlG0bz7LScSpcXpyjNmDvcjj0C5xP
        zpTlAoGBALpnqr/MS13zd/HtqK3URhWJNMuu1QTY6HCn+tD82QWFfBkNSL2t7a4f
        THP+H7DWLvei8osD1fjYhqMWwGK2lb6gWfnIbTIY/CYbTebasOL06iGebFXHJRqq
        UWxATjP4doLv7jhkBY4WGVbEL8wGFltfIgXxs1LFLK8odBWiNWes
        -----END RSA PRIVATE KEY-----
        """;

    /// <summary>RFC 8032 section 7.1 test 1 secret key.</summary>
    static readonly byte[] Ed25519Secret = Convert.FromHexString("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");

    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-dkim-stable");
    readonly SoftwareKeySigner _keys = new();
    readonly DkimKeyStore _store;
    readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero));

    public DkimSigningStabilityTests()
    {
        _store = new DkimKeyStore(_data.FullName);
        using var rsa = RSA.Create();
        rsa.ImportFromPem(RsaPem);
        var copy = RSA.Create();
        copy.ImportParameters(rsa.ExportParameters(includePrivateParameters: true));
        _store.Save("tenant-a", [_keys.AddRsa("tenant-a.example", "r2026", copy), _keys.AddEd25519("tenant-a.example", "e2026", Ed25519Secret)]);
    }

    public static TheoryData<string, string> Cases() => new()
    {
        { "7bit", "From: Alice <alice@tenant-a.example>\r\nTo: bob@example.net\r\nSubject: hello\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@tenant-a.example>\r\n\r\nHello Bob.\r\n\r\n\r\n" },
        { "8bit", "From: alice@tenant-a.example\r\nTo: bob@example.net\r\nSubject: =?UTF-8?Q?K=C3=A4se?=\r\n  folded   tail  \r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nK\u00e4se und Br\u00f6tchen  \t\r\n.leading dot\r\n" },
        { "utf8-headers", "From: J\u00f6rg <j\u00f6rg@tenant-a.example>\r\nTo: \u7528\u6237@\u4f8b\u5b50.example\r\nSubject: \u00fcber\r\n\r\nbody\r\n" },
        { "multipart", "From: alice@tenant-a.example\r\nTo: bob@example.net\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b1\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b1--\r\nepilogue\r\n" },
        { "no-body", "From: alice@tenant-a.example\r\nSubject: empty\r\n\r\n" },
        { "loadgen-4k", LoadGenMessage() },
    };

    /// <summary>SHA-256 of the DKIM-Signature headers the unoptimised path produced for each case (both selectors).</summary>
    static readonly Dictionary<string, string> Expected = new()
    {
        ["7bit"] = "827D953C5F03D52EA49D244A09EF713274C7FAB82398168D25350844E7374F35",
        ["8bit"] = "1D4AD4D40825B77D80760FC24F248BAE637F5AB797EFCC2F2C984CBA10C1BD80",
        ["utf8-headers"] = "15DB5A1C0D29CED68283428F7B863F196DA980771CCD037AA77218F58FC6FDA6",
        ["multipart"] = "2E301A94D0C9EE4611CF10ADC6D5D0A36D9D0B012CD36950AA3B621A682E6174",
        ["no-body"] = "367F51329080F31F668AB8D7838A28934FADAAC65CF0A4562C1D0E731FDE7A20",
        ["loadgen-4k"] = "E727AD4E0A389F4DA885E98DD0907B2C2CE4376145C218839632FB59C86208EC",
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Signature_headers_are_unchanged_and_do_not_depend_on_how_the_message_is_buffered(string name, string text)
    {
        var message = Encoding.UTF8.GetBytes(text);
        var service = new DkimSigningService(_store, _keys, new RecordingAudit(), _clock, TimeSpan.FromDays(7));

        var whole = service.Sign("tenant-a", "alice@tenant-a.example", new ReadOnlySequence<byte>(message), "s1", signingRequired: true);
        var actual = Convert.ToHexString(SHA256.HashData(whole));
        Assert.True(Expected[name] == actual, $"{name}: {actual}\n{Encoding.ASCII.GetString(whole)}");

        // The listener hands over a slice of pooled chunks: an offset into a larger array, or several segments.
        var padded = new byte[message.Length + 200];
        message.CopyTo(padded, 100);
        Assert.Equal(whole, service.Sign("tenant-a", "alice@tenant-a.example", new ReadOnlySequence<byte>(padded, 100, message.Length), "s1", signingRequired: true));
        foreach (var size in new[] { 1, 7, 64, 1000 })
        {
            Assert.Equal(whole, service.Sign("tenant-a", "alice@tenant-a.example", SpoolTestKit.Segmented(message, size), "s1", signingRequired: true));
        }
    }

    /// <summary>What perf/SmtpGateway.LoadGen sends: a few headers and 78-character lines up to 4 KiB.</summary>
    static string LoadGenMessage()
    {
        var text = new StringBuilder("From: <alice@tenant-a.example>\r\nTo: <x@example.net>\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n" +
            "Content-Type: text/plain; charset=us-ascii\r\nSubject: bench run 1234\r\nMessage-ID: <1234.run@loadgen.bench>\r\n\r\n");
        for (var line = 0; text.Length < 4096 - 82; line++)
        {
            text.Append(line.ToString("D6", System.Globalization.CultureInfo.InvariantCulture)).Append(" The quick brown fox jumps over the lazy dog; benchmark body text, line padding.\r\n");
        }

        return text.ToString();
    }

    public void Dispose() => _data.Delete(true);
}
