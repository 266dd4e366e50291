using SmtpGateway.Smtp;

namespace SmtpGateway.Tests.Listener;

/// <summary>The grammar is pure: these run without sockets.</summary>
public sealed class SmtpGrammarTests
{
    [Theory]
    [InlineData("ehlo x", SmtpVerb.Ehlo, "x")]
    [InlineData("MAIL FROM:<a@b.c>", SmtpVerb.Mail, "FROM:<a@b.c>")]
    [InlineData("StartTLS", SmtpVerb.StartTls, "")]
    [InlineData("GET / HTTP/1.1", SmtpVerb.Http, "/ HTTP/1.1")]
    [InlineData("POST /x HTTP/1.0", SmtpVerb.Http, "/x HTTP/1.0")]
    [InlineData("GET something", SmtpVerb.Unknown, "something")]
    [InlineData("", SmtpVerb.Unknown, "")]
    public void Commands_split_into_verb_and_argument(string line, SmtpVerb verb, string argument)
    {
        var command = SmtpGrammar.ParseCommand(line);
        Assert.Equal(verb, command.Verb);
        Assert.Equal(argument, command.Argument);
    }

    [Theory]
    [InlineData("FROM:<a@b.example>", "a", "b.example")]
    [InlineData("FROM: <a@b.example>", "a", "b.example")]
    [InlineData("FROM:<\"john doe\"@b.example>", "\"john doe\"", "b.example")]
    [InlineData("FROM:<a@[192.0.2.1]>", "a", "[192.0.2.1]")]
    [InlineData("FROM:<a@[IPv6:2001:db8::1]>", "a", "[IPv6:2001:db8::1]")]
    [InlineData("FROM:<>", "", "")]
    public void Valid_reverse_paths_parse(string argument, string local, string domain)
    {
        Assert.Equal(PathError.None, SmtpGrammar.TryParsePath(argument, "FROM:", allowNull: true, out var path));
        Assert.Equal(local, path!.LocalPart);
        Assert.Equal(domain, path.Domain);
    }

    [Theory]
    [InlineData("TO:<@a.example,@b.example:u@c.example>", PathError.SourceRoute)]
    [InlineData("TO:<u@c.example.>", PathError.Syntax)]
    [InlineData("TO:<u.@c.example>", PathError.Syntax)]
    [InlineData("TO:<u@-c.example>", PathError.Syntax)]
    [InlineData("TO:<u@c.example", PathError.Syntax)]
    [InlineData("TO:<u@c.example>>", PathError.Syntax)]
    [InlineData("TO:<<u@c.example>", PathError.Syntax)]
    [InlineData("TO:<u@[999.1.1.1]>", PathError.Syntax)]
    [InlineData("TO:<\"unterminated@c.example>", PathError.Syntax)]
    [InlineData("TO:<u@c.example> A=1 A=2", PathError.Parameter)]
    [InlineData("TO:<u@c.example>  X", PathError.Syntax)]
    [InlineData("TO:<>", PathError.Syntax)]
    [InlineData("TO:<someone>", PathError.Syntax)]
    public void Hostile_or_malformed_forward_paths_are_refused(string argument, PathError expected)
    {
        Assert.Equal(expected, SmtpGrammar.TryParsePath(argument, "TO:", allowNull: false, out _));
    }

    [Fact]
    public void Postmaster_without_domain_is_a_valid_recipient()
    {
        // RFC 5321 section 4.1.1.3
        Assert.Equal(PathError.None, SmtpGrammar.TryParsePath("TO:<Postmaster>", "TO:", allowNull: false, out var path));
        Assert.Equal("Postmaster", path!.Address);
    }

    [Fact]
    public void Over_long_local_part_is_refused()
    {
        // RFC 5321 section 4.5.3.1.1: 64 octets
        Assert.Equal(PathError.Syntax, SmtpGrammar.TryParsePath($"TO:<{new string('a', 65)}@b.example>", "TO:", false, out _));
        Assert.Equal(PathError.None, SmtpGrammar.TryParsePath($"TO:<{new string('a', 64)}@b.example>", "TO:", false, out _));
    }
}
