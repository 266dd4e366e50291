using System.Text.RegularExpressions;

namespace SmtpGateway.Tests.Architecture;

/// <summary>
/// The house plan as tests (ARCHITECTURE.md section 2): stage folders talk one way, Policy and Configuration know nothing
/// of the Listener, and the Listener stays protocol only. Read from the source, so a new `using` that closes a cycle fails
/// the build's tests, not a later review.
/// </summary>
public sealed partial class StageDependencyTests
{
    static readonly string Source = Path.Combine(RepoRoot(), "src", "SmtpGateway");

    static readonly string[] Folders = [.. Directory.GetDirectories(Source)
        .Select(Path.GetFileName)
        .OfType<string>()
        .Where(d => d is not ("bin" or "obj"))];

    [GeneratedRegex(@"using SmtpGateway\.(\w+)")]
    private static partial Regex UsingDirective();

    static Dictionary<string, HashSet<string>> Dependencies()
    {
        var qualified = new Regex(@"(?<![\w.])(" + string.Join('|', Folders) + @")\.[A-Z]\w+");
        var deps = Folders.ToDictionary(f => f, _ => new HashSet<string>(StringComparer.Ordinal));
        foreach (var folder in Folders)
        {
            foreach (var file in Directory.EnumerateFiles(Path.Combine(Source, folder), "*.cs", SearchOption.AllDirectories))
            {
                var text = File.ReadAllText(file);
                foreach (Match m in UsingDirective().Matches(text).Concat(qualified.Matches(text)))
                {
                    var target = m.Groups[1].Value;
                    if (target != folder && deps.ContainsKey(target))
                    {
                        deps[folder].Add(target);
                    }
                }
            }
        }

        return deps;
    }

    [Fact]
    public void No_two_stage_folders_depend_on_each_other_directly_or_through_others()
    {
        var deps = Dependencies();
        var cycles = new List<string>();
        foreach (var start in deps.Keys)
        {
            var stack = new Stack<(string Node, List<string> Path)>();
            stack.Push((start, [start]));
            var seen = new HashSet<string>();
            while (stack.Count > 0)
            {
                var (node, path) = stack.Pop();
                foreach (var next in deps[node])
                {
                    if (next == start)
                    {
                        cycles.Add(string.Join(" -> ", path.Append(next)));
                    }
                    else if (seen.Add(next))
                    {
                        stack.Push((next, [.. path, next]));
                    }
                }
            }
        }

        Assert.True(cycles.Count == 0, "cycles between stage folders:\n" + string.Join("\n", cycles.Distinct()));
    }

    [Theory]
    [InlineData("Policy")]
    [InlineData("Configuration")]
    [InlineData("Identity")]
    [InlineData("Envelope")]
    [InlineData("Signing")]
    [InlineData("Spool")]
    [InlineData("Delivery")]
    [InlineData("Submission")]
    public void Stages_do_not_import_the_listener(string folder) =>
        Assert.DoesNotContain("Listener", Dependencies()[folder]);

    [Fact]
    public void Nothing_but_hosting_and_the_cli_imports_hosting()
    {
        var importers = Dependencies().Where(kv => kv.Value.Contains("Hosting") && kv.Key is not ("Cli" or "Hosting")).Select(kv => kv.Key);
        Assert.Empty(importers);
    }

    [Fact]
    public void The_listener_stays_protocol_only_and_small()
    {
        var listener = Path.Combine(Source, "Listener");
        foreach (var file in Directory.EnumerateFiles(listener, "*.cs"))
        {
            var lines = File.ReadLines(file).Count();
            Assert.True(lines <= 600, $"{Path.GetFileName(file)} has {lines} lines (a protocol-only listener file stays under about 600)");
        }

        // The stages' own services are reached through the pipeline, never called from the session.
        var session = string.Concat(Directory.EnumerateFiles(listener, "SmtpSession*.cs").Select(File.ReadAllText));
        foreach (var stage in new[] { "SenderPolicy", "HeaderHygiene", "HeaderFrom", "IMessageSigner", "IMessageSpool", "TraceHeader", "SuppressionList" })
        {
            Assert.DoesNotContain(stage, session, StringComparison.Ordinal);
        }
    }

    static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SmtpGateway.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("SmtpGateway.sln not found above " + AppContext.BaseDirectory);
    }
}
