namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>One self-signed pair per test run, made by the same script ./run.sh uses.</summary>
internal static class TestCertificate
{
    static readonly Lazy<Task<(string Certificate, string Key)>> s_pair = new(CreateAsync);

    public static Task<(string Certificate, string Key)> GetAsync() => s_pair.Value;

    static async Task<(string, string)> CreateAsync()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"smtpgw-ft-certs-{Environment.ProcessId}");
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (IOException)
            {
            }
        };

        var (exitCode, output) = await ChildProcess.RunAsync("bash", [RepoPaths.GenDevCertScript, dir], RepoPaths.Root,
            TimeSpan.FromSeconds(60)).ConfigureAwait(false);
        var pair = (Path.Combine(dir, "gateway.crt"), Path.Combine(dir, "gateway.key"));
        if (exitCode != 0 || !File.Exists(pair.Item1) || !File.Exists(pair.Item2))
        {
            throw new InvalidOperationException($"certs/gen-dev-cert.sh {dir} failed ({exitCode}):\n{output}");
        }

        return pair;
    }
}
