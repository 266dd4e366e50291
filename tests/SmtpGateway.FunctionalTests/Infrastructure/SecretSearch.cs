using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>
/// A secret the test knows (an upstream password, a legacy token or VERP key, a refresh token) and the byte forms it
/// may take where the gateway writes or holds it: UTF-8, UTF-16LE (a .NET string), its base64 (as a client or a JSON
/// file would carry it; as bytes and as a .NET string), JSON-escaped and, when the secret is itself base64 of 16+ bytes (a key), the raw key bytes.
/// </summary>
internal sealed record KnownSecret(string Name, string Value)
{
    public IReadOnlyList<(string Form, byte[] Bytes)> Forms()
    {
        var forms = new List<(string, byte[])>
        {
            ("UTF-8", Encoding.UTF8.GetBytes(Value)),
            ("UTF-16LE", Encoding.Unicode.GetBytes(Value)),
            ("base64", Encoding.ASCII.GetBytes(Convert.ToBase64String(Encoding.UTF8.GetBytes(Value)))),
            // The base64 as a .NET string (e.g. an AUTH command line built as text).
            ("base64 UTF-16LE", Encoding.Unicode.GetBytes(Convert.ToBase64String(Encoding.UTF8.GetBytes(Value)))),
        };
        // System.Text.Json's default encoder writes '+', '<', '&', ... as \uXXXX: a secret in a JSON file the gateway wrote.
        var escaped = JsonSerializer.Serialize(Value)[1..^1];
        if (escaped != Value)
        {
            forms.Add(("JSON-escaped", Encoding.UTF8.GetBytes(escaped)));
        }

        if (SecretSearch.DecodeBase64(Value) is { Length: >= 16 } raw)
        {
            forms.Add(("raw key bytes", raw));
        }

        return forms;
    }

    // The value must never reach a test log.
    public override string ToString() => Name;
}

/// <summary>
/// Searches where the gateway writes and holds things for secrets: every file of a (copied) data directory, byte for
/// byte in every form of <see cref="KnownSecret"/>, and every JSON field named like a secret or key whose value is base64
/// of 16 bytes or more (key material, whoever made it); and a core file of the process.
/// </summary>
internal static partial class SecretSearch
{
    // Small enough that the all-zero stretches of a core (most of a .NET process's: committed, untouched pages) are skipped whole.
    const int ChunkSize = 1024 * 1024;

    /// <summary>Copies <paramref name="source"/> recursively (files that vanish meanwhile are skipped) to <paramref name="destination"/>.</summary>
    public static void CopyDirectory(string source, string destination)
    {
        Directory.CreateDirectory(destination);
        foreach (var dir in Directory.EnumerateDirectories(source, "*", SearchOption.AllDirectories))
        {
            Directory.CreateDirectory(Path.Combine(destination, Path.GetRelativePath(source, dir)));
        }

        foreach (var file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
        {
            if (file.EndsWith(".sock", StringComparison.Ordinal))
            {
                // The admin endpoint's unix socket (admin/admin.sock) is no file to copy: like cp and tar, leave it out.
                continue;
            }

            try
            {
                File.Copy(file, Path.Combine(destination, Path.GetRelativePath(source, file)), overwrite: true);
            }
            catch (FileNotFoundException)
            {
                // delivered and removed from the spool meanwhile
            }
        }
    }

    /// <summary>"&lt;file&gt; contains &lt;secret&gt; (&lt;form&gt;) at offset N" for each secret found in any form in any file below <paramref name="directory"/>.</summary>
    public static IReadOnlyList<string> FindInDirectory(string directory, IReadOnlyList<KnownSecret> secrets)
    {
        var hits = new List<string>();
        foreach (var path in Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories))
        {
            hits.AddRange(FindInFile(path, secrets));
        }

        return hits;
    }

    /// <summary>Streams <paramref name="path"/> (a core file may be hundreds of MB) and reports every secret form it contains.</summary>
    public static IReadOnlyList<string> FindInFile(string path, IReadOnlyList<KnownSecret> secrets)
    {
        var patterns = secrets.SelectMany(s => s.Forms().Select(f => (Secret: s, f.Form, f.Bytes))).ToList();
        if (patterns.Count == 0)
        {
            return [];
        }

        var overlap = patterns.Max(p => p.Bytes.Length) - 1;
        var found = new Dictionary<(string, string), long>();
        var buffer = new byte[ChunkSize + overlap];
        try
        {
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.SequentialScan);
            long offset = 0;
            var kept = 0;
            while (true)
            {
                var read = file.Read(buffer, kept, ChunkSize);
                if (read == 0)
                {
                    break;
                }

                var span = buffer.AsSpan(0, kept + read);
                // New bytes all zero: only a form that starts in the kept tail can end here (a UTF-16 form ends in 0).
                var searched = span.Slice(kept).IndexOfAnyExcept((byte)0) < 0 ? span[..Math.Min(span.Length, kept + overlap)] : span;
                foreach (var (secret, form, bytes) in patterns)
                {
                    if (!found.ContainsKey((secret.Name, form)) && searched.IndexOf(bytes) is var at and >= 0)
                    {
                        found[(secret.Name, form)] = offset - kept + at;
                    }
                }

                // Keep the tail so a secret across two chunks is still seen.
                kept = Math.Min(overlap, span.Length);
                span[^kept..].CopyTo(buffer);
                offset += read;
            }
        }
        catch (FileNotFoundException)
        {
            return [];
        }

        return [.. found.Select(f => $"{path} contains {f.Key.Item1} ({f.Key.Item2}) at offset {f.Value}")];
    }

    /// <summary>
    /// Every JSON field below <paramref name="directory"/> whose name says secret, key, password or token and whose value
    /// is base64 of 16+ bytes: "&lt;file&gt;: &lt;json path&gt; holds N base64 bytes". Files that are not JSON (or JSON lines) are
    /// skipped. <paramref name="allowed"/> names fields that are known not to be plaintext key material (e.g. a key sealed
    /// by the HSM, a public key): the default allows names saying public, sealed, wrapped, encrypted or cipher.
    /// </summary>
    public static IReadOnlyList<string> FindKeyLikeJsonFields(string directory, Func<string, bool>? allowed = null)
    {
        allowed ??= name => AllowedFieldName().IsMatch(name);
        var hits = new List<string>();
        foreach (var path in Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories))
        {
            string text;
            try
            {
                if (new FileInfo(path).Length > 64 * 1024 * 1024)
                {
                    continue;
                }

                text = File.ReadAllText(path, Encoding.UTF8);
            }
            catch (FileNotFoundException)
            {
                continue;
            }

            var documents = new List<JsonDocument>();
            try
            {
                documents.Add(JsonDocument.Parse(text));
            }
            catch (JsonException)
            {
                // JSON lines (audit.jsonl, tokens.jsonl, events): each line a document.
                foreach (var line in text.Split('\n'))
                {
                    try
                    {
                        if (line.TrimStart().StartsWith('{'))
                        {
                            documents.Add(JsonDocument.Parse(line));
                        }
                    }
                    catch (JsonException)
                    {
                    }
                }
            }

            foreach (var document in documents)
            {
                using (document)
                {
                    Walk(document.RootElement, "$", null);
                }
            }

            void Walk(JsonElement element, string where, string? name)
            {
                switch (element.ValueKind)
                {
                    case JsonValueKind.Object:
                        foreach (var property in element.EnumerateObject())
                        {
                            Walk(property.Value, $"{where}.{property.Name}", property.Name);
                        }

                        break;
                    case JsonValueKind.Array:
                        var i = 0;
                        foreach (var item in element.EnumerateArray())
                        {
                            Walk(item, $"{where}[{i++}]", name);
                        }

                        break;
                    case JsonValueKind.String when name is not null && SecretFieldName().IsMatch(name) && !allowed(name):
                        if (DecodeBase64(element.GetString()!) is { Length: >= 16 } bytes)
                        {
                            hits.Add($"{path}: {where} holds {bytes.Length} base64 bytes");
                        }

                        break;
                }
            }
        }

        return hits;
    }

    /// <summary>The bytes of standard or URL-safe base64 (padded or not), or null when <paramref name="text"/> is not base64.</summary>
    public static byte[]? DecodeBase64(string text)
    {
        if (text.Length < 4 || !Base64Text().IsMatch(text))
        {
            return null;
        }

        var normal = text.Replace('-', '+').Replace('_', '/').TrimEnd('=');
        normal = normal.PadRight(normal.Length + ((4 - (normal.Length % 4)) % 4), '=');
        try
        {
            return Convert.FromBase64String(normal);
        }
        catch (FormatException)
        {
            return null;
        }
    }

    [GeneratedRegex("secret|key|password|passwd|token", RegexOptions.IgnoreCase)]
    private static partial Regex SecretFieldName();

    [GeneratedRegex("public|sealed|wrapped|encrypted|cipher|fingerprint|(^|[a-z])(key|token)(id|label|s)$|^(kid|keyid|tokenid)$", RegexOptions.IgnoreCase)]
    private static partial Regex AllowedFieldName();

    [GeneratedRegex(@"^[A-Za-z0-9+/_-]+={0,2}$")]
    private static partial Regex Base64Text();
}
