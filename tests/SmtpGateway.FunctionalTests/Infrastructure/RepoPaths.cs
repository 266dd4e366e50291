using System.Reflection;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>Finds the checkout and the built <c>smtpgw</c> from wherever the test assembly runs.</summary>
internal static class RepoPaths
{
    /// <summary>Set to a path of an smtpgw apphost or smtpgw.dll to test another build.</summary>
    public const string BinaryOverrideVariable = "SMTPGW_FUNCTIONAL_BIN";

    static readonly Lazy<string> s_root = new(FindRoot);

    /// <summary>The directory holding SmtpGateway.sln.</summary>
    public static string Root => s_root.Value;

    public static string GenDevCertScript => Path.Combine(Root, "certs", "gen-dev-cert.sh");

    public static string FixturePath(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name);

    /// <summary>
    /// The smtpgw build to run: $SMTPGW_FUNCTIONAL_BIN, else src/SmtpGateway.Host/bin/&lt;this test build's
    /// configuration&gt;/&lt;tfm&gt;/, else the newest build of any configuration.
    /// Returns the file to execute and the arguments to put before the verb.
    /// </summary>
    public static (string FileName, string[] PrefixArgs) Smtpgw()
    {
        var overridden = Environment.GetEnvironmentVariable(BinaryOverrideVariable);
        if (!string.IsNullOrEmpty(overridden))
        {
            return Launch(Path.GetFullPath(overridden));
        }

        var metadata = typeof(RepoPaths).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().ToDictionary(a => a.Key, a => a.Value);
        var configuration = metadata.GetValueOrDefault("BuildConfiguration") ?? "Release";
        var tfm = metadata.GetValueOrDefault("TargetFramework") ?? "net10.0";
        var binRoot = Path.Combine(Root, "src", "SmtpGateway.Host", "bin");
        var preferred = Path.Combine(binRoot, configuration, tfm, "smtpgw.dll");
        if (File.Exists(preferred))
        {
            return Launch(preferred);
        }

        var newest = Directory.Exists(binRoot)
            ? Directory.EnumerateFiles(binRoot, "smtpgw.dll", SearchOption.AllDirectories)
                .Where(p => p.Contains(Path.DirectorySeparatorChar + tfm + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                .OrderByDescending(File.GetLastWriteTimeUtc)
                .FirstOrDefault()
            : null;
        return newest is not null
            ? Launch(newest)
            : throw new InvalidOperationException(
                $"smtpgw is not built: expected {preferred}. Run `dotnet build SmtpGateway.sln -c {configuration}` (./test.sh does), " +
                $"or set {BinaryOverrideVariable}.");
    }

    static (string, string[]) Launch(string path)
    {
        if (path.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
        {
            var apphost = Path.Combine(Path.GetDirectoryName(path)!, "smtpgw");
            return File.Exists(apphost) ? (apphost, []) : ("dotnet", [path]);
        }

        return File.Exists(path) ? (path, []) : throw new FileNotFoundException($"{BinaryOverrideVariable} points at a missing file", path);
    }

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SmtpGateway.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"SmtpGateway.sln not found above {AppContext.BaseDirectory}");
    }
}
