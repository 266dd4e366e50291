using System.Text.Json;
using System.Text.Json.Nodes;
using SmtpGateway.Mcp;

namespace SmtpGateway.Tests.Mcp;

/// <summary>send_email arguments as an MCP client delivers them: a dictionary of JSON values, built from JSON text.</summary>
public static class McpArguments
{
    public static readonly EmailLimits Limits = new(10 * 1024 * 1024, 10, 50, EmailLimits.DefaultAllowedHeaders);

    public static IReadOnlyDictionary<string, JsonElement> Args(string json) =>
        JsonDocument.Parse(json).RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.Clone());

    public static IReadOnlyDictionary<string, JsonElement> Args(JsonObject arguments) => Args(arguments.ToJsonString());

    /// <summary>A call that uses every argument and passes every check; tests change one thing in it.</summary>
    public static JsonObject Full() => new()
    {
        ["from"] = "\"Agent Smith\" <agent@tenant-a.example>",
        ["to"] = new JsonArray("Alice <alice@example.net>", "bob@example.org"),
        ["cc"] = new JsonArray("carol@example.net"),
        ["bcc"] = new JsonArray("dave@example.com"),
        ["reply_to"] = new JsonArray("support@tenant-a.example"),
        ["subject"] = "Quarterly report",
        ["text"] = "Hello,\nthe report is attached.\n",
        ["html"] = "<p>Hello,</p><p>the report is attached.</p>",
        ["attachments"] = new JsonArray(new JsonObject
        {
            ["filename"] = "report.pdf",
            ["content_type"] = "application/pdf",
            ["content_base64"] = Convert.ToBase64String("%PDF-1.7 fake"u8),
        }),
        ["headers"] = new JsonObject { ["In-Reply-To"] = "<123@example.net>", ["X-Entity-Ref-ID"] = "ref-42" },
    };

    /// <summary>The smallest call that passes.</summary>
    public static JsonObject Minimal() => new()
    {
        ["from"] = "agent@tenant-a.example",
        ["to"] = new JsonArray("alice@example.net"),
        ["subject"] = "Hi",
        ["text"] = "Hello",
    };

    public static EmailRequest ParseValid(JsonObject arguments, EmailLimits? limits = null)
    {
        var request = EmailRequestParser.Parse(Args(arguments), limits ?? Limits, out var errors);
        Assert.True(request is not null, "unexpected errors: " + string.Join(" | ", errors));
        Assert.Empty(errors);
        return request;
    }

    public static IReadOnlyList<string> ParseErrors(JsonObject arguments, EmailLimits? limits = null) => ParseErrors(Args(arguments), limits);

    public static IReadOnlyList<string> ParseErrors(IReadOnlyDictionary<string, JsonElement> arguments, EmailLimits? limits = null)
    {
        var request = EmailRequestParser.Parse(arguments, limits ?? Limits, out var errors);
        Assert.Null(request);
        Assert.NotEmpty(errors);
        return errors;
    }
}
