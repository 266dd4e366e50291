using System.Collections;
using System.Globalization;

namespace SmtpGateway.Diagnostics;

/// <summary>
/// A logging scope of named values (SessionId, TenantId, QueueId, …). The JSON console logger writes each pair as a field
/// of the scope object, and <see cref="ToString"/> as its "Message": "QueueId=…, TenantId=…" rather than a type name.
/// </summary>
internal sealed class LogScope(params KeyValuePair<string, object?>[] values) : IReadOnlyList<KeyValuePair<string, object?>>
{
    public int Count => values.Length;

    public KeyValuePair<string, object?> this[int index] => values[index];

    public static KeyValuePair<string, object?> Of(string name, object? value) => new(name, value);

    public IEnumerator<KeyValuePair<string, object?>> GetEnumerator() => ((IEnumerable<KeyValuePair<string, object?>>)values).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    public override string ToString() =>
        string.Join(", ", values.Select(v => string.Create(CultureInfo.InvariantCulture, $"{v.Key}={v.Value}")));
}
