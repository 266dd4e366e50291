using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace SmtpGateway.Admin;

/// <summary>
/// A request body read by the handler itself rather than by parameter binding, whose refusal of malformed JSON is a bare
/// 400 without a body: here it is a problem+json naming what is wrong, like every other bad input.
/// </summary>
public static class AdminRequestBody
{
    /// <summary>The body as <typeparamref name="T"/> (null when empty), or the 400 to answer.</summary>
    public static async Task<(T? Body, IResult? Error)> ReadAsync<T>(HttpContext context)
        where T : class
    {
        if (context.Request.ContentLength == 0 || (context.Request.ContentLength is null && !context.Request.Headers.ContainsKey("Transfer-Encoding")))
        {
            return (null, null);
        }

        if (!context.Request.HasJsonContentType())
        {
            return (null, AdminResults.Invalid("body", "The body must be JSON (Content-Type: application/json)."));
        }

        var options = context.RequestServices.GetRequiredService<IOptions<JsonOptions>>().Value.SerializerOptions;
        try
        {
            return (await JsonSerializer.DeserializeAsync<T>(context.Request.Body, options, context.RequestAborted).ConfigureAwait(false), null);
        }
        catch (JsonException ex)
        {
            // The parser's message names the path and position (never echoes the body): enough to find the mistake.
            return (null, AdminResults.Invalid("body", $"The body is not a valid request: {ex.Message}"));
        }
    }
}
