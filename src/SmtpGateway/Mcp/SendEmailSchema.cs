using System.Text.Json;

namespace SmtpGateway.Mcp;

/// <summary>The input schema of the send_email tool, as MCP clients show it to the model; <see cref="EmailRequestParser"/> enforces it.</summary>
public static class SendEmailSchema
{
    public static JsonElement Input { get; } = Parse();

    static JsonElement Parse()
    {
        using var document = JsonDocument.Parse("""
            {
              "$schema": "https://json-schema.org/draft/2020-12/schema",
              "type": "object",
              "additionalProperties": false,
              "required": ["from", "to", "subject"],
              "properties": {
                "from": {
                  "type": "string",
                  "maxLength": 320,
                  "description": "Sender, one address: a@b.example or \"Name\" <a@b.example>. Must be in one of the caller's own domains."
                },
                "to": {
                  "type": "array",
                  "minItems": 1,
                  "items": { "type": "string", "maxLength": 320 },
                  "description": "Recipients, one address per string."
                },
                "cc": {
                  "type": "array",
                  "items": { "type": "string", "maxLength": 320 },
                  "description": "Copy recipients, one address per string."
                },
                "bcc": {
                  "type": "array",
                  "items": { "type": "string", "maxLength": 320 },
                  "description": "Blind copy recipients: they receive the mail but never appear in its headers. to, cc and bcc together are capped by the gateway's recipient limit."
                },
                "reply_to": {
                  "type": "array",
                  "items": { "type": "string", "maxLength": 320 },
                  "description": "Reply-To addresses, one per string."
                },
                "subject": {
                  "type": "string",
                  "maxLength": 998,
                  "description": "Subject line, may be empty. No line breaks."
                },
                "text": {
                  "type": "string",
                  "description": "Plain text body. At least one of text and html is required."
                },
                "html": {
                  "type": "string",
                  "description": "HTML body. At least one of text and html is required."
                },
                "attachments": {
                  "type": "array",
                  "description": "Files to attach. The gateway caps their number and their total decoded size (Gateway:Mcp:MaxAttachments, Gateway:Mcp:MaxAttachmentSize); a call over the cap is refused with the limit in the error.",
                  "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["filename", "content_base64"],
                    "properties": {
                      "filename": { "type": "string", "minLength": 1, "maxLength": 255, "description": "File name without a path." },
                      "content_type": { "type": "string", "description": "MIME type, default application/octet-stream; multipart/* and message/* are refused." },
                      "content_base64": { "type": "string", "contentEncoding": "base64", "description": "The file's content, base64." }
                    }
                  }
                },
                "headers": {
                  "type": "object",
                  "maxProperties": 20,
                  "additionalProperties": { "type": "string", "maxLength": 998 },
                  "description": "Extra header fields, name to value, from the gateway's allowlist only (threading and list headers such as In-Reply-To, References, List-Unsubscribe). Address, subject, date, MIME and trace fields can never be set here."
                }
              }
            }
            """);
        return document.RootElement.Clone();
    }
}
