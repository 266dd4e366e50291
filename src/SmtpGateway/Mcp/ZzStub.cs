using System.Text.Json;
using SmtpGateway.Smtp;
namespace SmtpGateway.Mcp;
public sealed record EmailLimits(long MaxAttachmentSize, int MaxAttachments, int MaxRecipients, IReadOnlyCollection<string> AllowedHeaders);
public sealed record EmailRequest(string X);
public sealed record ComposedMessage(byte[] Message, SmtpPath MailFrom, IReadOnlyList<SmtpPath> Recipients, bool SmtpUtf8, string MessageId);
public static class EmailRequestParser { public static EmailRequest? Parse(IReadOnlyDictionary<string, JsonElement>? arguments, EmailLimits limits, out IReadOnlyList<string> errors) { errors = []; return null; } }
public static class MessageComposer { public static ComposedMessage Compose(EmailRequest request, DateTimeOffset date) => throw new NotSupportedException(); }
public static class SendEmailSchema { public static JsonElement Input { get; } = JsonDocument.Parse("{\"type\":\"object\"}").RootElement.Clone(); }
