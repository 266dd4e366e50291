using System.Text;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>Looks for a token (in every form a client puts it on the wire) where the gateway writes things down.</summary>
internal static class SecretScan
{
    /// <summary>
    /// The token, its MAC segment (the part that makes it usable), and the base64 forms AUTH LOGIN (password line)
    /// and AUTH PLAIN (NUL user NUL token) send.
    /// </summary>
    public static IReadOnlyList<string> Forms(string user, string token)
    {
        var forms = new List<string>
        {
            token,
            Convert.ToBase64String(Encoding.UTF8.GetBytes(token)),
            Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0{user}\0{token}")),
        };
        var mac = token.Split('.');
        if (mac.Length == 3 && mac[2].Length >= 16)
        {
            forms.Add(mac[2]);
        }

        return forms;
    }

    /// <summary>Where any form of the token occurs: every file under the data directory, and the gateway's own output.</summary>
    public static IReadOnlyList<string> Find(GatewayHarness harness, string user, string token)
    {
        var forms = Forms(user, token);
        var hits = new List<string>();
        void Scan(string where, string text)
        {
            foreach (var form in forms)
            {
                if (text.Contains(form, StringComparison.Ordinal))
                {
                    hits.Add($"{where} contains {(form == token ? "the token" : "a form of the token")}");
                }
            }
        }

        if (Directory.Exists(harness.DataDirectory))
        {
            // The admin endpoint's unix socket (admin/admin.sock) holds nothing to read (opening it fails with ENXIO).
            foreach (var path in Directory.EnumerateFiles(harness.DataDirectory, "*", SearchOption.AllDirectories).Where(f => !f.EndsWith(".sock", StringComparison.Ordinal)))
            {
                try
                {
                    using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                    using var reader = new StreamReader(file, Encoding.Latin1);
                    Scan(path, reader.ReadToEnd());
                }
                catch (FileNotFoundException)
                {
                    // delivered and removed from the spool meanwhile
                }
            }
        }

        Scan("the gateway's stdout/stderr", harness.GatewayOutput);
        return hits;
    }
}
