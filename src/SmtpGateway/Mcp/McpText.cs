namespace SmtpGateway.Mcp;

/// <summary>Client input echoed in a tool error: short, and no control character that could forge a line in a log or a UI.</summary>
internal static class McpText
{
    public static string Printable(string value, int max = 60)
    {
        var clipped = value.Length > max ? value[..max] + "…" : value;
        return string.Create(clipped.Length, clipped, (span, s) =>
        {
            for (var i = 0; i < s.Length; i++)
            {
                span[i] = char.IsControl(s[i]) ? '?' : s[i];
            }
        });
    }
}
