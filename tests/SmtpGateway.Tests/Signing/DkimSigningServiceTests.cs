using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using MimeKit;
using MimeKit.Cryptography;
using SmtpGateway.Envelope;
using SmtpGateway.Signing;
using SmtpGateway.Tests.Listener;

namespace SmtpGateway.Tests.Signing;

public sealed class DkimSigningServiceTests : IDisposable
{
    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-dkim");
    readonly SoftwareKeySigner _keys = new();
    readonly DkimKeyStore _store;
    readonly RecordingAudit _audit = new();
    readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero));

    public DkimSigningServiceTests() => _store = new DkimKeyStore(_data.FullName);

    DkimSigningService Service(TimeSpan? lifetime = null) => new(_store, _keys, _audit, _clock, lifetime);

    static readonly string[] Messages =
    [
        // 7-bit
        "From: Alice <alice@tenant-a.example>\r\nTo: bob@example.net\r\nSubject: hello\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@tenant-a.example>\r\n\r\nHello Bob.\r\n\r\n\r\n",
        // 8-bit UTF-8 body, folded header, trailing whitespace, dot line
        "From: alice@tenant-a.example\r\nTo: bob@example.net\r\nSubject: =?UTF-8?Q?K=C3=A4se?=\r\n  folded   tail  \r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nK\u00e4se und Br\u00f6tchen  \t\r\n.leading dot\r\n",
        // SMTPUTF8: raw UTF-8 in headers
        "From: J\u00f6rg <j\u00f6rg@tenant-a.example>\r\nTo: \u7528\u6237@\u4f8b\u5b50.example\r\nSubject: \u00fcber\r\n\r\nbody\r\n",
        // multipart
        "From: alice@tenant-a.example\r\nTo: bob@example.net\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b1\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b1--\r\nepilogue\r\n",
    ];

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Dual_signatures_verify_with_python3_dkim_and_mimekit(int index)
    {
        var rsa = _keys.AddRsa("tenant-a.example", "r2026");
        var ed = _keys.AddEd25519("tenant-a.example", "e2026");
        _store.Save("tenant-a", [rsa, ed]);
        var original = Encoding.UTF8.GetBytes(Messages[index]);

        var headers = Service().Sign("tenant-a", "alice@tenant-a.example", new ReadOnlySequence<byte>(original), "s1", signingRequired: true);
        var signed = headers.Concat(original).ToArray();
        var text = Encoding.UTF8.GetString(headers);
        Assert.Equal(2, text.Split("DKIM-Signature:").Length - 1);
        Assert.DoesNotContain("l=", text, StringComparison.Ordinal);
        Assert.Contains("t=", text, StringComparison.Ordinal);
        Assert.DoesNotMatch("[^\r]\n", text); // CRLF only

        Assert.Equal([true, true], PythonDkim.Verify(signed, PythonDkim.Records(rsa, ed)));

        var message = MimeMessage.Load(new MemoryStream(signed));
        var locator = new Locator(PythonDkim.Records(rsa, ed));
        var verifier = new DkimVerifier(locator);
        verifier.Enable(DkimSignatureAlgorithm.Ed25519Sha256);
        foreach (var header in message.Headers.Where(h => h.Id == HeaderId.DkimSignature))
        {
            Assert.True(verifier.Verify(message, header));
        }
    }

    [Fact]
    public void From_to_subject_date_and_message_id_are_over_signed()
    {
        var ed = _keys.AddEd25519("tenant-a.example", "e1");
        _store.Save("tenant-a", [ed]);
        var headers = Encoding.ASCII.GetString(Service(TimeSpan.FromDays(7)).Sign("tenant-a", "alice@tenant-a.example", new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(Messages[0])), "s1", signingRequired: true));
        var unfolded = headers.Replace("\r\n\t", " ", StringComparison.Ordinal);
        Assert.Contains("h=from:from:to:to:subject:subject:date:date:message-id:message-id;", unfolded, StringComparison.Ordinal);
        Assert.Contains($"t={_clock.GetUtcNow().ToUnixTimeSeconds()};", unfolded, StringComparison.Ordinal);
        Assert.Contains($"x={_clock.GetUtcNow().AddDays(7).ToUnixTimeSeconds()};", unfolded, StringComparison.Ordinal);
        Assert.Contains("c=relaxed/relaxed", unfolded, StringComparison.Ordinal);
        Assert.Contains("a=ed25519-sha256", unfolded, StringComparison.Ordinal);
    }

    [Fact]
    public void No_active_selector_for_the_domain_means_no_signature_and_no_key_use_for_an_unsigned_tenant()
    {
        var pending = _keys.AddRsa("tenant-a.example", "p1") with { State = SelectorState.Pending };
        _store.Save("tenant-a", [pending]);
        Assert.Empty(Service().Sign("tenant-a", "alice@tenant-a.example", new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(Messages[0])), "s1", signingRequired: false));
        Assert.Empty(Service().Sign("tenant-b", "x@tenant-b.example", new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(Messages[0])), "s1", signingRequired: false));
        Assert.Empty(_keys.SignedData);
        Assert.Empty(_audit.Events);
    }

    [Fact]
    public void Keys_come_from_the_session_tenant_only()
    {
        // tenant-b has a key for tenant-a's domain in its own store file: a tenant-a session must not find it, and vice versa.
        var bKey = _keys.AddRsa("tenant-a.example", "b-owned");
        _store.Save("tenant-b", [bKey]);
        Assert.Empty(Service().Sign("tenant-a", "alice@tenant-a.example", new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(Messages[0])), "s1", signingRequired: false));
        Assert.Throws<SigningException>(() => Service().Sign("tenant-a", "alice@tenant-a.example", new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(Messages[0])), "s1", signingRequired: true));
        Assert.Empty(_keys.SignedData);
    }

    [Fact]
    public void Hsm_failure_is_a_signing_exception_and_an_audit_event()
    {
        var rsa = _keys.AddRsa("tenant-a.example", "r1");
        _store.Save("tenant-a", [rsa]);
        _keys.Fail = true;
        Assert.Throws<SigningException>(() => Service().Sign("tenant-a", "alice@tenant-a.example", new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(Messages[0])), "s9", signingRequired: true));
        var e = Assert.Single(_audit.Events);
        Assert.Equal(("dkim-sign", "failed", "tenant-a", "s9"), (e.Action, e.Result, e.Tenant, e.SessionId));
    }

    [Fact]
    public void Canonicalisation_matches_the_rfc6376_section_3_4_5_example()
    {
        // RFC 6376 section 3.4.5: headers "A: X" and "B : Y<HTAB><CRLF><HTAB>Z  " relax to "a:X" and "b:Y Z";
        // the body " C <CRLF>D <HTAB> E <CRLF><CRLF><CRLF>" relaxes to " C<CRLF>D E<CRLF>".
        var bytes = Encoding.ASCII.GetBytes("A: X\r\nB : Y\t\r\n\tZ  \r\nFrom: x@tenant-a.example\r\n\r\n C \r\nD \t E \r\n\r\n\r\n");
        var section = HeaderSection.Parse(bytes, out var consumed);
        var headers = new ArrayBufferWriter<byte>();
        foreach (var field in section.Fields)
        {
            DkimHeaders.AppendRelaxed(headers, field.Raw.Span);
        }

        Assert.Equal("a:X\r\nb:Y Z\r\nfrom:x@tenant-a.example\r\n", Encoding.ASCII.GetString(headers.WrittenSpan));

        using var body = new DkimBodyHash();
        foreach (var line in Encoding.ASCII.GetString(bytes, consumed, bytes.Length - consumed).Split("\r\n")[..^1])
        {
            body.AppendLine(Encoding.ASCII.GetBytes(line));
        }

        var bh = Convert.ToBase64String(SHA256.HashData(Encoding.ASCII.GetBytes(" C\r\nD E\r\n")));
        Assert.Equal(bh, Convert.ToBase64String(body.Finish()));

        // Through the service: the data handed to the HSM is the selected fields' relaxed forms, then the signature field's own.
        var ed = _keys.AddEd25519("tenant-a.example", "e1");
        _store.Save("tenant-a", [ed]);
        var signature = Encoding.ASCII.GetString(Service().Sign("tenant-a", "x@tenant-a.example", new ReadOnlySequence<byte>(bytes), "s1", signingRequired: true));
        var data = Encoding.ASCII.GetString(Assert.Single(_keys.SignedData));
        Assert.StartsWith("from:x@tenant-a.example\r\ndkim-signature:v=1; a=ed25519-sha256;", data);
        Assert.EndsWith("b=", data);
        Assert.Contains($"bh={bh};", signature, StringComparison.Ordinal);
    }

    /// <summary>RFC 8463 Appendix A: the published example message, keys and signatures.</summary>
    const string Rfc8463Signed = """
        DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;
         d=football.example.com; i=@football.example.com;
         q=dns/txt; s=brisbane; t=1528637909; h=from : to :
         subject : date : message-id : from : subject : date;
         bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
         b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus
         Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==
        DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;
         d=football.example.com; i=@football.example.com;
         q=dns/txt; s=test; t=1528637909; h=from : to : subject :
         date : message-id : from : subject : date;
         bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
         b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3
         DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz
         dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=
        From: Joe SixPack <joe@football.example.com>
        To: Suzie Q <suzie@shopping.example.net>
        Subject: Is dinner ready?
        Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)
        Message-ID: <20030712040037.46341.5F8J@football.example.com>

        Hi.

        We lost the game.  Are you hungry yet?

        Joe.

        """;

    static readonly Dictionary<string, string> Rfc8463Records = new()
    {
        ["brisbane._domainkey.football.example.com."] = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        ["test._domainkey.football.example.com."] = "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB",
    };

    [Fact]
    public void The_rfc8463_example_verifies_and_our_signature_of_it_has_the_published_body_hash()
    {
        var published = PythonDkim.Crlf(Rfc8463Signed);

        // The verifiers we rely on agree with the RFC's own signatures (so their canonicalisation is the RFC's).
        Assert.Equal([true, true], PythonDkim.Verify(published, Rfc8463Records));
        var parsed = MimeMessage.Load(new MemoryStream(published));
        var verifier = new DkimVerifier(new Locator(Rfc8463Records));
        verifier.Enable(DkimSignatureAlgorithm.Ed25519Sha256);
        Assert.All(parsed.Headers.Where(h => h.Id == HeaderId.DkimSignature), h => Assert.True(verifier.Verify(parsed, h)));

        // Our signer, with the RFC's Ed25519 secret key (RFC 8032 test 1), over the unsigned example message.
        var unsigned = published[(Encoding.ASCII.GetString(published).IndexOf("From: Joe", StringComparison.Ordinal))..];
        var ed = _keys.AddEd25519("football.example.com", "brisbane", Convert.FromBase64String("nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="));
        Assert.Equal("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", ed.PublicKey);
        _store.Save("tenant-f", [ed]);
        var ours = Service().Sign("tenant-f", "joe@football.example.com", new ReadOnlySequence<byte>(unsigned), "s1", signingRequired: true);
        Assert.Contains("bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;", Encoding.ASCII.GetString(ours).Replace("\r\n\t", "", StringComparison.Ordinal), StringComparison.Ordinal);
        Assert.Equal([true], PythonDkim.Verify([.. ours, .. unsigned], Rfc8463Records));
    }

    [Fact]
    public void Dns_records_are_published_exactly_and_long_rsa_keys_are_split_into_255_octet_strings()
    {
        var rsa = _keys.AddRsa("tenant-a.example", "r1");
        var record = DkimDnsRecord.Format(rsa);
        Assert.StartsWith("r1._domainkey.tenant-a.example. IN TXT \"v=DKIM1; k=rsa; p=MII", record);
        var strings = System.Text.RegularExpressions.Regex.Matches(record, "\"([^\"]*)\"").Select(m => m.Groups[1].Value).ToList();
        Assert.True(strings.Count >= 2);
        Assert.All(strings, s => Assert.True(s.Length <= 255));
        Assert.Equal(DkimDnsRecord.Value(rsa), string.Concat(strings));
        var ed = _keys.AddEd25519("tenant-a.example", "e1");
        Assert.Equal($"e1._domainkey.tenant-a.example. IN TXT \"v=DKIM1; k=ed25519; p={ed.PublicKey}\"", DkimDnsRecord.Format(ed));
    }

    sealed class Locator(IReadOnlyDictionary<string, string> records) : DkimPublicKeyLocatorBase
    {
        public override Org.BouncyCastle.Crypto.AsymmetricKeyParameter LocatePublicKey(string methods, string domain, string selector, CancellationToken cancellationToken = default) =>
            GetPublicKey(records[$"{selector}._domainkey.{domain}."]);

        public override Task<Org.BouncyCastle.Crypto.AsymmetricKeyParameter> LocatePublicKeyAsync(string methods, string domain, string selector, CancellationToken cancellationToken = default) =>
            Task.FromResult(LocatePublicKey(methods, domain, selector, cancellationToken));
    }

    public void Dispose() => _data.Delete(true);
}
