namespace SmtpGateway.Mcp;

/// <summary>
/// Client input echoed in a tool error: short, and with no control character (which could forge a line in a log or a
/// UI) or lone surrogate (which JSON cannot carry) left in it.
/// </summary>
internal static class McpText
{
    public static string Printable(string value, int max = 60)
    {
        var shown = new string([.. value.Take(max).Select(c => char.IsControl(c) || char.IsSurrogate(c) ? '?' : c)]);
        return value.Length > max ? shown + "..." : shown;
    }
}
