using System.CommandLine;
using System.Text;
using System.Text.Json.Nodes;
using SmtpGateway.Cli;
using SmtpGateway.Vault;

namespace SmtpGateway.Tests.Vault;

public sealed class VaultCommandsTests : IDisposable
{
    readonly VaultTestKit _kit = new();
    readonly string _config;
    readonly StringWriter _out = new();
    readonly StringWriter _error = new();

    public VaultCommandsTests()
    {
        _config = Path.Combine(_kit.DataDirectory, "gateway.json");
        File.WriteAllText(_config, new JsonObject
        {
            ["Gateway"] = new JsonObject { ["DataDirectory"] = _kit.DataDirectory },
            ["Tenants"] = new JsonObject
            {
                ["tenant-a"] = new JsonObject { ["Domains"] = new JsonArray("a.example") },
                ["tenant-b"] = new JsonObject { ["Domains"] = new JsonArray("b.example") },
            },
        }.ToJsonString());
    }

    public void Dispose() => _kit.Dispose();

    int Run(string stdin, params string[] args)
    {
        var env = new VaultCliEnvironment(() => new MemoryStream(Encoding.UTF8.GetBytes(stdin)), false, _out, _error, _ => (_kit.Keys, new MemoryStream()));
        var command = VaultCommands.Build(() => new Option<string?>("--config"), env);
        return command.Parse([.. args, "--config", _config]).Invoke();
    }

    async Task<string> Open(string tenant, string name, int index = 0)
    {
        using var secret = await _kit.Vault.OpenAsync(_kit.Vault.Usable(tenant, name)[index], CredentialVault.PurposeSmtpAuth, null, CancellationToken.None);
        return Encoding.UTF8.GetString(secret.Secret);
    }

    [Fact]
    public async Task Set_reads_the_first_line_of_stdin_and_verifies_it_once()
    {
        Assert.Equal(0, Run("s3cret-pass\r\nignored\n", "set", "--tenant", "tenant-a", "--name", "smarthost", "--user", "relay@a.example", "--password-stdin"));

        Assert.Contains("stored smarthost#v1 (password for relay@a.example)", _out.ToString(), StringComparison.Ordinal);
        Assert.Equal("s3cret-pass", await Open("tenant-a", "smarthost"));
        var audit = File.ReadAllText(Path.Combine(_kit.DataDirectory, "audit", "audit.jsonl"));
        Assert.Contains("\"action\":\"vault-set\"", audit, StringComparison.Ordinal);
        Assert.Contains("\"reason\":\"cli-verify\"", audit, StringComparison.Ordinal);
        Assert.DoesNotContain("s3cret-pass", audit, StringComparison.Ordinal);
    }

    [Fact]
    public void Set_refuses_an_existing_name_and_an_empty_or_missing_secret()
    {
        Assert.Equal(0, Run("one\n", "set", "--tenant", "tenant-a", "--name", "smarthost", "--user", "u", "--password-stdin"));
        Assert.Equal(1, Run("two\n", "set", "--tenant", "tenant-a", "--name", "smarthost", "--user", "u", "--password-stdin"));
        Assert.Contains("use `vault rotate`", _error.ToString(), StringComparison.Ordinal);

        Assert.Equal(1, Run("\r\n", "set", "--tenant", "tenant-a", "--name", "other", "--user", "u", "--password-stdin"));
        Assert.Equal(1, Run("", "set", "--tenant", "tenant-a", "--name", "other", "--user", "u", "--password-stdin"));
        Assert.Contains("stdin is empty", _error.ToString(), StringComparison.Ordinal);
        Assert.Equal(1, Run("x\n", "set", "--tenant", "tenant-a", "--name", "other", "--user", "u"));
        Assert.Equal(2, Run("x\n", "set", "--tenant", "nobody", "--name", "other", "--user", "u", "--password-stdin"));
        Assert.Empty(_kit.Vault.Usable("tenant-a", "other"));
    }

    [Fact]
    public void An_http_token_endpoint_is_refused_before_stdin_is_read()
    {
        var read = false;
        var env = new VaultCliEnvironment(() => { read = true; return new MemoryStream("rt\n"u8.ToArray()); }, false, _out, _error, _ => (_kit.Keys, new MemoryStream()));
        var code = VaultCommands.Build(() => new Option<string?>("--config"), env).Parse(["set", "--tenant", "tenant-a", "--name", "o365", "--user", "me@a.example",
            "--oauth2-refresh-token-stdin", "--token-endpoint", "http://login.example/token", "--client-id", "c1", "--config", _config]).Invoke();

        Assert.Equal(1, code);
        Assert.False(read);
        Assert.Contains("https", _error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void A_refresh_token_takes_the_client_secret_from_line_two_and_list_shows_no_secret()
    {
        Assert.Equal(0, Run("refresh-7c1d\nclient-sec-99\n", "set", "--tenant", "tenant-a", "--name", "o365", "--user", "me@a.example",
            "--oauth2-refresh-token-stdin", "--token-endpoint", "https://login.example/token", "--client-id", "c1"));
        Assert.Equal(0, Run("", "list", "--tenant", "tenant-a"));
        Assert.Equal(0, Run("", "list", "--tenant", "tenant-a", "--json"));

        var output = _out.ToString();
        Assert.Contains("refresh-token https://login.example/token client c1", output, StringComparison.Ordinal);
        Assert.Contains("\"tokenEndpoint\": \"https://login.example/token\"", output, StringComparison.Ordinal);
        Assert.DoesNotContain("refresh-7c1d", output, StringComparison.Ordinal);
        Assert.DoesNotContain("client-sec-99", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Rotate_and_delete()
    {
        Assert.Equal(0, Run("old\n", "set", "--tenant", "tenant-a", "--name", "smarthost", "--user", "u", "--password-stdin"));
        Assert.Equal(0, Run("new\n", "rotate", "--tenant", "tenant-a", "--name", "smarthost", "--user", "u", "--password-stdin", "--grace", "30m"));

        Assert.Equal([2, 1], _kit.Vault.Usable("tenant-a", "smarthost").Select(v => v.Version));
        Assert.Equal("new", await Open("tenant-a", "smarthost"));
        Assert.Equal("old", await Open("tenant-a", "smarthost", 1));
        var retires = _kit.Vault.Usable("tenant-a", "smarthost")[1].RetiresAt!.Value - DateTimeOffset.UtcNow;
        Assert.InRange(retires, TimeSpan.FromMinutes(29), TimeSpan.FromMinutes(31));

        Assert.Equal(0, Run("", "delete", "--tenant", "tenant-a", "--name", "smarthost", "--version", "1"));
        // The test's vault stands for the running gateway: it sees the CLI's write once its cache is due for a check.
        _kit.Clock.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal([2], _kit.Vault.Usable("tenant-a", "smarthost").Select(v => v.Version));
        Assert.Equal(1, Run("", "delete", "--tenant", "tenant-a", "--name", "smarthost", "--version", "1"));
        Assert.Equal(0, Run("", "delete", "--tenant", "tenant-a", "--name", "smarthost"));
        _kit.Clock.Advance(TimeSpan.FromSeconds(2));
        Assert.Empty(_kit.Vault.Usable("tenant-a", "smarthost"));
        Assert.Contains("\"action\":\"vault-delete\"", File.ReadAllText(Path.Combine(_kit.DataDirectory, "audit", "audit.jsonl")), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("pw", "pw", null)]
    [InlineData("pw\n", "pw", null)]
    [InlineData("pw\r\n", "pw", null)]
    [InlineData("pw\r\r\n\r\n", "pw", null)]
    [InlineData("rt\r\ncs\r\nmore\n", "rt", "cs")]
    [InlineData("rt\n\n", "rt", null)]
    [InlineData(" spaced pw \n", " spaced pw ", null)]
    public void Stdin_lines_lose_only_their_line_ends(string stdin, string first, string? second)
    {
        var (a, b) = VaultCommands.ReadSecretLines(new MemoryStream(Encoding.UTF8.GetBytes(stdin)));
        Assert.Equal(first, Encoding.UTF8.GetString(a));
        Assert.Equal(second, b is null ? null : Encoding.UTF8.GetString(b));
    }

    [Theory]
    [InlineData("")]
    [InlineData("\n")]
    [InlineData("\r\nsecond\n")]
    public void An_empty_first_line_is_refused(string stdin) =>
        Assert.Throws<FormatException>(() => VaultCommands.ReadSecretLines(new MemoryStream(Encoding.UTF8.GetBytes(stdin))));

    [Fact]
    public void Oversized_stdin_is_refused() =>
        Assert.Throws<FormatException>(() => VaultCommands.ReadSecretLines(new MemoryStream(new byte[VaultCommands.MaxStdinBytes + 1])));

    [Fact]
    public void The_vault_verb_is_registered_with_no_secret_option()
    {
        var vault = GatewayCli.Build().Subcommands.Single(c => c.Name == "vault");
        Assert.Equal(["set", "rotate", "list", "delete"], vault.Subcommands.Select(c => c.Name));
        var options = vault.Subcommands.SelectMany(c => c.Options).Select(o => o.Name).Distinct().ToList();
        Assert.DoesNotContain(options, o => o is "--password" or "--secret" or "--token" or "--client-secret" or "--refresh-token");
        Assert.All(options.Where(o => o.Contains("token", StringComparison.Ordinal) && o != "--token-endpoint"), o => Assert.EndsWith("-stdin", o, StringComparison.Ordinal));
    }
}
