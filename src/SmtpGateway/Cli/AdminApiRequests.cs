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
    /// <remarks>Sent by <see cref="AdminApiCalls.SendAsync"/>, the one transport of every verb (its timeout handling included).</remarks>
    public static T? Send<T>(AdminApiClient api, HttpMethod method, string path, object? body = null)
        where T : class
    {
        var bytes = body is null ? null : JsonSerializer.SerializeToUtf8Bytes(body, body.GetType(), Json);
        var answer = AdminApiCalls.SendAsync(api, method, path, bytes).GetAwaiter().GetResult();
        if (answer.Ok)
        {
            return answer.Body.ValueKind == JsonValueKind.Undefined ? throw new InvalidDataException($"the gateway answered {method} {path} with an empty body.")
                : answer.Body.Deserialize<T>(Json) ?? throw new InvalidDataException($"the gateway answered {method} {path} with an empty body.");
        }

        PrintErrors(answer.Errors().Select(e => e.Error));
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
}
