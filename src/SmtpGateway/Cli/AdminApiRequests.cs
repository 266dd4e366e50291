using System.Net.Http.Json;
using System.Text.Json;

namespace SmtpGateway.Cli;

/// <summary>
/// A CLI verb's call to the running gateway's admin API: JSON in, JSON out; a refusal is printed as the verb's own errors
/// would be (`error: ...`, every validation error on its own line) and the verb exits 1.
/// </summary>
internal static class AdminApiRequests
{
    static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>The parsed response on success; null (errors printed) when the gateway refused.</summary>
    public static T? Send<T>(AdminApiClient api, HttpMethod method, string path, object? body = null)
        where T : class
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            request.Content = JsonContent.Create(body, body.GetType(), options: Json);
        }

        using var response = api.Http.SendAsync(request).GetAwaiter().GetResult();
        var text = response.Content.ReadAsStringAsync().GetAwaiter().GetResult();
        if (response.IsSuccessStatusCode)
        {
            return JsonSerializer.Deserialize<T>(text, Json) ?? throw new InvalidDataException($"the gateway answered {method} {path} with an empty body.");
        }

        PrintErrors(Errors(text, (int)response.StatusCode));
        return null;
    }

    /// <summary>Each error as `error: ...` on stderr, whether the gateway or the verb itself found it; returns the exit code 1.</summary>
    public static int PrintErrors(IEnumerable<string> errors)
    {
        foreach (var error in errors)
        {
            Console.Error.WriteLine($"error: {error}");
        }

        return 1;
    }

    /// <summary>Problem details (RFC 9457): each validation error, else the detail, else the title and status.</summary>
    static IEnumerable<string> Errors(string body, int status)
    {
        JsonElement root;
        try
        {
            root = JsonDocument.Parse(body).RootElement;
        }
        catch (JsonException)
        {
            return [$"the gateway answered {status}."];
        }

        if (root.ValueKind != JsonValueKind.Object)
        {
            return [$"the gateway answered {status}."];
        }

        if (root.TryGetProperty("errors", out var errors) && errors.ValueKind == JsonValueKind.Object)
        {
            var list = errors.EnumerateObject()
                .SelectMany(field => field.Value.ValueKind == JsonValueKind.Array ? field.Value.EnumerateArray().Select(e => e.GetString() ?? "") : [])
                .Where(e => e.Length > 0)
                .ToList();
            if (list.Count > 0)
            {
                return list;
            }
        }

        return root.TryGetProperty("detail", out var detail) && detail.GetString() is { Length: > 0 } d ? [d]
            : root.TryGetProperty("title", out var title) && title.GetString() is { Length: > 0 } t ? [$"{t} ({status})"]
            : [$"the gateway answered {status}."];
    }
}
