namespace SmtpGateway.Bounces;

/// <summary>
/// An operator's own suppressions, as `smtpgw suppression add` and the admin API make them: one validation and one way
/// of recording them (reason "manual", the operator's note as the detail), so both doors agree.
/// </summary>
public static class ManualSuppression
{
    public const string Reason = "manual";
    public const string DefaultNote = "added by operator";

    /// <summary>Longest note kept (the list keeps at most 300 characters of detail).</summary>
    public const int MaxNoteLength = 300;

    /// <summary>Null for a usable address, else why not.</summary>
    public static string? AddressError(string? address) =>
        string.IsNullOrWhiteSpace(address) ? "an address is required."
        : SuppressionList.Normalize(address) is null ? $"'{Shown(address)}' is not an address."
        : null;

    /// <summary>Null for a usable note (or none), else why not.</summary>
    public static string? NoteError(string? note) =>
        note is null ? null
        : note.Length > MaxNoteLength || note.Any(char.IsControl) ? $"the reason must be at most {MaxNoteLength} characters, without control characters."
        : null;

    /// <summary>Adds the address (checked by <see cref="AddressError"/> first); false when it was already suppressed.</summary>
    public static bool Add(SuppressionList list, string tenant, string address, string? note) =>
        list.Add(tenant, address, Reason, note ?? DefaultNote);

    /// <summary>An address as echoed in an error: bounded and printable, since it is client input.</summary>
    static string Shown(string text) => new([.. text.Take(100).Select(c => char.IsControl(c) ? '?' : c)]);
}
