using System.Net;
using System.Text.Json;

namespace SmtpGateway.Cli;

/// <summary>An admin API answer as a CLI verb needs it: the status, and the JSON body (a problem for errors).</summary>
internal sealed record AdminApiAnswer(HttpStatusCode Status, JsonElement Body)
{
    public bool Ok => (int)Status is >= 200 and < 300;

    /// <summary>
    /// What a problem says, as one line for "error: ...": its detail, or for a 400 every error it lists
    /// ("field: error; field: error"), so the operator sees all of them at once, as from the API.
    /// </summary>
    public string Problem() => string.Join("; ", Errors().Select(e => e.Field is null ? e.Error : $"{e.Field}: {e.Error}"));

    /// <summary>
    /// Every error a problem (RFC 9457) states: each validation error with its field, else the detail, else the title,
    /// else the status; one reader for every CLI verb, whether it prints them on one line or one per line.
    /// </summary>
    public IReadOnlyList<(string? Field, string Error)> Errors()
    {
        var status = $"the gateway answered {(int)Status} {Status}";
        if (Body.ValueKind != JsonValueKind.Object)
        {
            return [(null, status)];
        }

        if (Body.TryGetProperty("errors", out var errors) && errors.ValueKind == JsonValueKind.Object)
        {
            var list = errors.EnumerateObject()
                .SelectMany(f => f.Value.ValueKind == JsonValueKind.Array ? f.Value.EnumerateArray().Select(e => ((string?)f.Name, e.GetString() ?? "")) : [])
                .Where(e => e.Item2.Length > 0)
                .ToList();
            if (list.Count > 0)
            {
                return list;
            }
        }

        return [(null, String("detail") is { Length: > 0 } detail ? detail : String("title") is { Length: > 0 } title ? title : status)];
    }

    /// <summary>
    /// A 404 for the tenant itself (the running gateway has no such tenant, e.g. one removed from its config), not for
    /// the message, address or credential asked about: the CLI must not answer it with "not suppressed" or "no such message".
    /// </summary>
    public bool IsNoSuchTenant => Status == HttpStatusCode.NotFound && String("detail") == SmtpGateway.Admin.AdminResults.NoSuchTenant;

    /// <summary>The line a CLI verb prints for <see cref="IsNoSuchTenant"/>.</summary>
    public static string NoSuchTenantError(string tenant) =>
        $"error: the running gateway has no tenant '{tenant}' (is it still in the gateway's config? `smtpgw reload` after adding it back)";

    public string? String(string property) => Body.ValueKind == JsonValueKind.Object && Body.TryGetProperty(property, out var value) && value.ValueKind == JsonValueKind.String
        ? value.GetString()
        : null;
}

/// <summary>The CLI's calls to a running gateway's admin API over the local socket (<see cref="AdminApiClient"/>).</summary>
internal static class AdminApiCalls
{
    /// <summary>Tenant, name, address or id as one path segment.</summary>
    public static string Segment(string value) => Uri.EscapeDataString(value);

    /// <summary>
    /// Sends one request; <paramref name="body"/> is JSON, its first <paramref name="length"/> bytes (all by default). The
    /// bytes stay the caller's (sent from the array itself, not copied): a secret body is zeroed by the caller after.
    /// </summary>
    public static async Task<AdminApiAnswer> SendAsync(AdminApiClient api, HttpMethod method, string path, byte[]? body = null, int? length = null)
    {
        using var request = new HttpRequestMessage(method, path.TrimStart('/'));
        if (body is not null)
        {
            request.Content = new ByteArrayContent(body, 0, length ?? body.Length);
            request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        }

        try
        {
            using var response = await api.Http.SendAsync(request).ConfigureAwait(false);
            var bytes = await response.Content.ReadAsByteArrayAsync().ConfigureAwait(false);
            return new AdminApiAnswer(response.StatusCode, Parse(bytes));
        }
        catch (TaskCanceledException ex)
        {
            // The client's timeout: one line for every verb's "error: ..." (they all catch HttpRequestException), no stack trace.
            throw new HttpRequestException($"the running gateway did not answer within {api.Http.Timeout.TotalSeconds:0} seconds", ex);
        }
    }

    static JsonElement Parse(byte[] bytes)
    {
        if (bytes.Length > 0)
        {
            try
            {
                using var document = JsonDocument.Parse(bytes);
                return document.RootElement.Clone();
            }
            catch (JsonException)
            {
                // Not JSON (a proxy's page, an empty 204): only the status counts.
            }
        }

        return default;
    }

    /// <summary>The body of a JSON object with string properties (null values left out), for requests that carry no secret.</summary>
    public static byte[] Json(params (string Name, string? Value)[] properties)
    {
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream))
        {
            writer.WriteStartObject();
            foreach (var (name, value) in properties)
            {
                if (value is not null)
                {
                    writer.WriteString(name, value);
                }
            }

            writer.WriteEndObject();
        }

        return stream.ToArray();
    }
}
