using FsCheck;
using FsCheck.Fluent;

namespace SmtpGateway.Tests.Fuzz;

/// <summary>
/// How hard the property tests (issue 12, "fuzzing") try. ./test.sh runs a bounded set (<see cref="DefaultIterations"/>
/// cases per property, the whole set in seconds); SMTPGW_FUZZ_ITERATIONS raises it for a long run, e.g.
/// <c>SMTPGW_FUZZ_ITERATIONS=200000 dotnet test tests/SmtpGateway.Tests -c Release --filter "FullyQualifiedName~Fuzz"</c>.
/// A failure prints the shrunk counterexample and the seed (Replay) to reproduce it.
/// </summary>
static class FuzzConfig
{
    public const int DefaultIterations = 1000;

    public static int Iterations =>
        int.TryParse(Environment.GetEnvironmentVariable("SMTPGW_FUZZ_ITERATIONS"), out var n) && n > 0 ? n : DefaultIterations;

    public static void Check(Property property) =>
        FsCheck.Check.One(Config.QuickThrowOnFailure.WithMaxTest(Iterations).WithQuietOnSuccess(true), property);

    /// <summary>Characters that matter to the parsers under test, mixed with ordinary ones: what a hostile client sends.</summary>
    static readonly char[] Hostile =
    [
        '<', '>', '@', '"', '\\', ' ', '\t', '.', ':', ';', '=', ',', '(', ')', '[', ']', '%', '!', '+', '-', '*',
        '\r', '\n', '\0', '\u0001', '\u007f', '\u0085', '\u00a0', '\u00e9', '\u2028', '\u202e', '\ufeff', '\ud800', '\udc00',
        'a', 'b', 'Z', '0', '9', 'x', 'I', 'P', 'v', '6',
    ];

    /// <summary>Strings over <see cref="Hostile"/>, with FsCheck's own strings (any UTF-16, lone surrogates included) mixed in.</summary>
    public static Arbitrary<string> HostileString { get; } = Gen.OneOf(
            Gen.Elements(Hostile).ArrayOf().Select(a => new string(a)),
            ArbMap.Default.GeneratorFor<string>().Where(s => s is not null))
        .ToArbitrary();

    /// <summary>Arbitrary octets, biased towards the ones that delimit mail syntax.</summary>
    public static Arbitrary<byte[]> HostileBytes { get; } = Gen.OneOf(
            ArbMap.Default.GeneratorFor<byte[]>().Where(b => b is not null),
            Gen.Elements("\r\n:; \t-=\"<>@\0\u00ff\u0080abcXYZ0125"u8.ToArray()).ArrayOf())
        .ToArbitrary();

    /// <summary>One DNS label of letters, digits and inner hyphens (RFC 5321 sub-domain).</summary>
    public static Gen<string> Label { get; } =
        Gen.Choose(1, 12).SelectMany(n => Gen.Elements("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-".ToCharArray()).ArrayOf(n))
            .Select(a => new string(a))
            .Where(s => s[0] != '-' && s[^1] != '-');

    // Lengths are chosen first rather than filtered afterwards: a filter on a list length rejects most large cases, and
    // FsCheck then retries at ever larger sizes (slow).
    public static Gen<string> Domain { get; } = Gen.Choose(1, 5).SelectMany(n => Label.ListOf(n)).Select(l => string.Join('.', l));

    /// <summary>RFC 5321 Dot-string of atext (ASCII), at most 64 characters.</summary>
    public static Gen<string> DotString { get; } =
        Gen.Choose(1, 10).SelectMany(n => Gen.Elements("abcxyzABC0189!#$%&'*+-/=?^_`{|}~".ToCharArray()).ArrayOf(n))
            .Select(a => new string(a))
            .ListOf(4)
            .SelectMany(atoms => Gen.Choose(1, 4), (atoms, n) => string.Join('.', atoms.Take(n)));
}
