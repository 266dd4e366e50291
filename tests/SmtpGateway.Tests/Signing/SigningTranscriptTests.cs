using System.Text;
using SmtpGateway.Signing;
using SmtpGateway.Tests.Listener;

namespace SmtpGateway.Tests.Signing;

/// <summary>Signing at end of DATA, through the real listener: signed before queueing, 451 on failure, inbound untouched.</summary>
public sealed class SigningTranscriptTests : IDisposable
{
    readonly DirectoryInfo _data = Directory.CreateTempSubdirectory("smtpgw-sign");
    readonly SoftwareKeySigner _keys = new();
    readonly DkimKeyStore _store;
    readonly RecordingAudit _audit = new();

    public SigningTranscriptTests() => _store = new DkimKeyStore(_data.FullName);

    async Task<TestGateway> StartAsync() => await TestGateway.StartAsync(signer: new DkimSigningService(_store, _keys, _audit, TimeProvider.System, null));

    static async Task<string?> SendAsync(RawSmtpClient c, string from, string to, string message)
    {
        Assert.StartsWith("250", await c.CommandAsync($"MAIL FROM:<{from}>"));
        Assert.StartsWith("250", await c.CommandAsync($"RCPT TO:<{to}>"));
        Assert.StartsWith("354", await c.CommandAsync("DATA"));
        await c.SendRawAsync(message + ".\r\n");
        return await c.ReadReplyAsync();
    }

    [Fact]
    public async Task Outbound_mail_is_queued_signed_and_verifies()
    {
        var rsa = _keys.AddRsa("tenant-a.example", "r1");
        var ed = _keys.AddEd25519("tenant-a.example", "e1");
        _store.Save("tenant-a", [rsa, ed]);
        await using var gw = await StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("250 2.0.0", await SendAsync(c, "app@tenant-a.example", "x@example.net", "From: app@tenant-a.example\r\nTo: x@example.net\r\nSubject: signed\r\n\r\nbody\r\n"));
        var stored = Assert.Single(gw.Spool.Commits).Message;
        var text = Encoding.UTF8.GetString(stored);
        Assert.StartsWith("DKIM-Signature: v=1; a=ed25519-sha256", text);
        Assert.True(text.IndexOf("Received:", StringComparison.Ordinal) > text.LastIndexOf("DKIM-Signature:", StringComparison.Ordinal));
        Assert.Equal([true, true], PythonDkim.Verify(stored, PythonDkim.Records(rsa, ed)));
    }

    [Fact]
    public async Task A_signing_failure_answers_451_and_queues_nothing()
    {
        _store.Save("tenant-a", [_keys.AddEd25519("tenant-a.example", "e1")]);
        _keys.Fail = true;
        await using var gw = await StartAsync();
        await using var c = await gw.ConnectAsync(gw.Relay);
        await c.HelloAsync();
        Assert.StartsWith("451 4.3.0", await SendAsync(c, "app@tenant-a.example", "x@example.net", "From: app@tenant-a.example\r\n\r\nbody\r\n"));
        Assert.Empty(gw.Spool.Commits);
        _keys.Fail = false;
        Assert.StartsWith("250 2.0.0", await SendAsync(c, "app@tenant-a.example", "x@example.net", "From: app@tenant-a.example\r\n\r\nbody\r\n"));
    }

    [Fact]
    public async Task A_tenant_without_keys_gets_451_unless_it_opted_out_and_the_session_survives()
    {
        // tenant-a must sign and has no selector file; tenant-b ("Dkim:Unsigned") has none either.
        await using var gw = await StartAsync();
        await using var a = await RawSmtpClient.ConnectAsync(gw.Relay);
        await a.HelloAsync();
        Assert.StartsWith("451 4.3.0", await SendAsync(a, "app@tenant-a.example", "x@example.net", "From: app@tenant-a.example\r\n\r\nbody\r\n"));
        Assert.Empty(gw.Spool.Commits);
        Assert.Single(_audit.Events, e => e.Action == "dkim-sign" && e.Result == "failed" && e.Tenant == "tenant-a");

        // A corrupt selector file: still 451 on the same connection (it used to drop the connection).
        Directory.CreateDirectory(Path.Combine(_data.FullName, "dkim"));
        File.WriteAllText(Path.Combine(_data.FullName, "dkim", "tenant-a.json"), "{ not json");
        Assert.StartsWith("451 4.3.0", await SendAsync(a, "app@tenant-a.example", "x@example.net", "From: app@tenant-a.example\r\n\r\nbody\r\n"));
        Assert.StartsWith("250", await a.CommandAsync("NOOP"));
        Assert.Empty(gw.Spool.Commits);

        await using var b = await RawSmtpClient.ConnectAsync(gw.Relay, source: System.Net.IPAddress.Parse("127.0.0.2"));
        await b.HelloAsync();
        Assert.StartsWith("250 2.0.0", await SendAsync(b, "app@tenant-b.example", "x@example.net", "From: app@tenant-b.example\r\n\r\nbody\r\n"));
        Assert.StartsWith("Received:", Encoding.UTF8.GetString(Assert.Single(gw.Spool.Commits).Message));
    }

    [Fact]
    public async Task A_selector_activated_while_a_message_arrives_gets_451_never_a_signature_without_the_body_hash()
    {
        // tenant-b ("Dkim:Unsigned") has no selector when DATA begins, so its body is not hashed (issue 15).
        await using var gw = await StartAsync();
        await using var b = await RawSmtpClient.ConnectAsync(gw.Relay, source: System.Net.IPAddress.Parse("127.0.0.2"));
        await b.HelloAsync();
        Assert.StartsWith("250", await b.CommandAsync("MAIL FROM:<app@tenant-b.example>"));
        Assert.StartsWith("250", await b.CommandAsync("RCPT TO:<x@example.net>"));
        Assert.StartsWith("354", await b.CommandAsync("DATA"));
        await b.SendRawAsync("From: app@tenant-b.example\r\nSubject: racing a keygen\r\n\r\nbody\r\n");

        var ed = _keys.AddEd25519("tenant-b.example", "e1");
        _store.Save("tenant-b", [ed]);
        await b.SendRawAsync(".\r\n");
        Assert.StartsWith("451 4.3.0", await b.ReadReplyAsync());
        Assert.Empty(gw.Spool.Commits);
        Assert.Empty(_keys.SignedData);
        Assert.Single(_audit.Events, e => e.Action == "dkim-sign" && e.Result == "failed" && e.Tenant == "tenant-b");

        // Sent again, the message is hashed and signed with the new key.
        Assert.StartsWith("250 2.0.0", await SendAsync(b, "app@tenant-b.example", "x@example.net", "From: app@tenant-b.example\r\nSubject: racing a keygen\r\n\r\nbody\r\n"));
        var stored = Assert.Single(gw.Spool.Commits).Message;
        Assert.Equal([true], PythonDkim.Verify(stored, PythonDkim.Records(ed)));
    }

    [Fact]
    public void MaySign_is_false_only_for_a_tenant_without_any_active_selector()
    {
        var signer = new DkimSigningService(_store, _keys, _audit, TimeProvider.System, null);
        Assert.False(signer.MaySign("tenant-a"));
        _store.Save("tenant-a", [_keys.AddEd25519("tenant-a.example", "p1") with { State = SelectorState.Pending }]);
        Assert.False(signer.MaySign("tenant-a"));
        _store.Save("tenant-a", [_keys.AddEd25519("other.tenant-a.example", "e1")]);
        Assert.True(signer.MaySign("tenant-a"));

        // Unreadable: true, so the body is hashed and the signature fails closed with the real reason.
        File.WriteAllText(Path.Combine(_data.FullName, "dkim", "tenant-a.json"), "{ not json");
        Assert.True(signer.MaySign("tenant-a"));
    }

    [Fact]
    public async Task Inbound_mail_and_domains_without_keys_are_not_signed()
    {
        _store.Save("tenant-a", [_keys.AddEd25519("tenant-a.example", "e1")]);
        await using var gw = await StartAsync();
        await using var c = await gw.ConnectAsync(gw.Submission);
        await c.HelloAsync();
        Assert.StartsWith("250 2.0.0", await SendAsync(c, "someone@elsewhere.example", "bob@tenant-a.example", "From: someone@elsewhere.example\r\n\r\nhi\r\n"));
        Assert.StartsWith("Received:", Encoding.UTF8.GetString(Assert.Single(gw.Spool.Commits).Message));
        Assert.Empty(_keys.SignedData);
    }

    public void Dispose() => _data.Delete(true);
}
