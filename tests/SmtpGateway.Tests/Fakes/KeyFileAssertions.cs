using System.Runtime.InteropServices;
using System.Text.Json;

namespace SmtpGateway.Tests.Fakes;

/// <summary>Checks shared by the token and return-path key tests: what a key metadata file may hold, and shredding.</summary>
internal static class KeyFileAssertions
{
    /// <summary>No string anywhere in the JSON decodes as base64 to 16 bytes or more (a key would), and no "secret" field.</summary>
    public static void HoldsNoKeyMaterial(string path)
    {
        var text = File.ReadAllText(path);
        Assert.DoesNotContain("\"secret\"", text, StringComparison.OrdinalIgnoreCase);
        using var json = JsonDocument.Parse(text);
        foreach (var value in Strings(json.RootElement))
        {
            var buffer = new byte[value.Length];
            Assert.False(Convert.TryFromBase64String(value, buffer, out var n) && n >= 16, $"'{path}' holds a base64 value of {n} bytes");
        }
    }

    /// <summary>A second name for <paramref name="path"/>'s inode: after the file is replaced it still shows the old bytes, unless they were shredded.</summary>
    public static string HardLink(string path)
    {
        var link = path + ".witness";
        Assert.Equal(0, Link(path, link));
        return link;
    }

    public static void IsZeros(string path)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.NotEmpty(bytes);
        Assert.All(bytes, b => Assert.Equal(0, b));
    }

    static IEnumerable<string> Strings(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.String => [element.GetString()!],
        JsonValueKind.Object => element.EnumerateObject().SelectMany(p => Strings(p.Value)),
        JsonValueKind.Array => element.EnumerateArray().SelectMany(Strings),
        _ => [],
    };

#pragma warning disable SYSLIB1054 // LibraryImport needs AllowUnsafeBlocks; this signature marshals without it.
    [DllImport("libc", EntryPoint = "link", SetLastError = true)]
    static extern int Link(string oldPath, string newPath);
#pragma warning restore SYSLIB1054
}
