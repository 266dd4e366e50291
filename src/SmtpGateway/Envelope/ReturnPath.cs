using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using SmtpGateway.Identity;

namespace SmtpGateway.Envelope;

/// <summary>What a valid return-path tag says: which queued message, and a fingerprint of which recipient.</summary>
/// <param name="Tenant">The tenant whose key verified the tag (from the bounce domain, never from the tag).</param>
/// <param name="QueueId">Queue id of the message, as the spool wrote it.</param>
/// <param name="RecipientHash">Fingerprint of the recipient (8 hex digits), checked with <see cref="ReturnPath.IsRecipient"/>.</param>
/// <param name="KeyId">The tenant key the tag (and its fingerprint) was made with.</param>
public sealed record VerpTag(string Tenant, string QueueId, string RecipientHash, char KeyId);

/// <summary>
/// Per-tenant VERP return paths: <c>b+&lt;queue id&gt;.&lt;recipient hash&gt;.&lt;key id&gt;&lt;mac&gt;@&lt;bounce domain&gt;</c>.
/// <list type="bullet">
/// <item>The MAC is HMAC-SHA256 keyed from the tenant's own key (see version 2 below) over (tenant, queue id, recipient
/// hash), cut to 80 bits and written in base32: unguessable (2^-80 per try) and unforgeable without the key, yet short —
/// the local part stays at 48 octets, under RFC 5321 section 4.5.3.1.1's 64.</item>
/// <item>The tag carries a fingerprint of the recipient, not the address: an address does not fit in 64 octets, and a
/// fingerprint lets the bounce parser recognise the original recipient in any report (DSN, ARF or free text) without
/// keeping a sent-mail index.</item>
/// <item>Everything is lower case and compared case-insensitively: some MTAs change the case of local parts.</item>
/// <item>The recipient fingerprint is computed in the tenant's HSM token and remembered (it is public: part of the address).</item>
/// <item>The tag MAC (version 2) is keyed with a minute key: HMAC-SHA256 in the token over (tenant, the minute of the queue
/// id's time), made once per tenant, key and minute and held in memory only, for the current minute and its neighbours
/// (<see cref="_minuteKeys"/>); the tag MAC itself is then computed here. An HSM call per message cost about a fifth of
/// the unsigned gateway's CPU with SoftHSM2, which re-reads the key's object file under file locks on every use (issue
/// 15). A minute key opens only the tags of its minute, is never written anywhere, and sits in a process whose logged-in
/// sessions can have the token compute any MAC anyway; the tenant key itself never leaves the token. Verification also
/// accepts version 1 (the MAC computed in the token under the tenant key itself, as made before this version), so
/// bounces of mail sent earlier are still recognised.</item>
/// <item>An unreachable token is an <see cref="Hsm.HsmException"/>: callers defer, never send without a tag or treat a
/// genuine tag as forged.</item>
/// </list>
/// </summary>
public sealed partial class ReturnPath
{
    /// <summary>The fixed local-part prefix; "+" keeps the address in the sub-address form mailbox providers expect.</summary>
    public const string Prefix = "b+";

    const int MacBytes = 10;

    /// <summary>Entries per memo before it starts afresh: bounds memory under a flood of distinct recipients.</summary>
    const int MemoCapacity = 50_000;

    readonly VerpKeyStore _keys;

    /// <summary>Recipient fingerprints by (tenant, key label, normalised address).</summary>
    readonly BoundedMemo<(string, string, string)> _hashes = new(MemoCapacity);

    /// <summary>Tagged local parts by (tenant, key label, queue id, normalised address): a delivery retry makes the same one.</summary>
    readonly BoundedMemo<(string, string, string, string)> _tags = new(MemoCapacity);

    /// <summary>Local parts known to be valid tags, by (tenant, key label, lower-cased local part): made here or verified once.
    /// Only valid ones: a flood of forgeries cannot fill it.</summary>
    readonly BoundedMemo<(string, string, string)> _valid = new(MemoCapacity);

    /// <summary>
    /// Minute keys by (tenant, key label, minute), secret and in memory only, kept for the current minute and the ones
    /// either side of it (pruned whenever a tag is made or checked, so an idle gateway keeps those of its last minute of
    /// work): what a dump of this process could reveal is at most the tags of three minutes. A key for any other minute (a
    /// retry of an older message, a bounce) is made, used once and zeroed.
    /// </summary>
    readonly Dictionary<(string Tenant, string Label, long Minute), byte[]> _minuteKeys = [];

    /// <summary>
    /// Guards <see cref="_minuteKeys"/> and every use of a key in it: a key is zeroed when it leaves, and never while a MAC
    /// is being made with it (a MAC under a zeroed key would be a tag that never verifies). Held for one HMAC, never for an
    /// HSM call, so one tenant's slow token does not hold up another's return paths.
    /// </summary>
    readonly Lock _minuteGate = new();
    long _prunedFor = long.MinValue;

    /// <summary>How far ahead of this clock a queue id's minute may lie (another cluster member's clock); a tag from
    /// further ahead is no real tag and is refused without an HSM call.</summary>
    const long MaxMinutesAhead = 5;

    public ReturnPath(VerpKeyStore keys) => _keys = keys;

    /// <summary>The return path for <paramref name="recipient"/> of queued message <paramref name="queueId"/>.</summary>
    public string For(string tenant, string bounceDomain, string queueId, string recipient)
    {
        var key = _keys.Current(tenant);
        var id = queueId.ToLowerInvariant();
        var normalized = NormalizeRecipient(recipient);
        var local = Remember(_tags, (tenant, key.KeyLabel, id, normalized), () =>
        {
            var hash = RecipientHash(tenant, key, normalized);
            var made = $"{Prefix}{id}.{hash}.{key.Id}{MinuteMac(key, tenant, id, hash) ?? Mac(key, tenant, id, hash)}";
            Remember(_valid, (tenant, key.KeyLabel, made), () => made);
            return made;
        });
        return $"{local}@{bounceDomain}";
    }

    /// <summary>
    /// The tag of <paramref name="localPart"/> when it is a return path this tenant made with a key that is still valid;
    /// null for anything else (unknown shape, unknown or retired key, wrong MAC). Constant-time MAC comparison.
    /// </summary>
    public VerpTag? Verify(string tenant, string localPart)
    {
        if (localPart.Length > 64)
        {
            return null;
        }

        var match = TagPattern().Match(localPart);
        if (!match.Success)
        {
            return null;
        }

        var id = match.Groups["id"].Value.ToLowerInvariant();
        var hash = match.Groups["hash"].Value.ToLowerInvariant();
        if (MinuteOf(id) is { } minute && minute > CurrentMinute() + MaxMinutesAhead)
        {
            return null;
        }

        var key = _keys.Find(tenant, char.ToLowerInvariant(match.Groups["key"].Value[0]));
        if (key is null)
        {
            return null;
        }

        // The key (and with it the retirement check) is looked up before the memo, so a retired key's tags stop at once.
        var local = localPart.ToLowerInvariant();
        if (!_valid.Contains((tenant, key.KeyLabel, local)))
        {
            // Version 2 first (made by this version), then version 1 (tags made before it): two tries double a forger's
            // 2^-80 chance per guess, which stays negligible.
            var given = Encoding.ASCII.GetBytes(match.Groups["mac"].Value.ToLowerInvariant());
            if (!Matches(MinuteMac(key, tenant, id, hash), given) && !Matches(Mac(key, tenant, id, hash), given))
            {
                return null;
            }

            Remember(_valid, (tenant, key.KeyLabel, local), () => local);
        }

        return new VerpTag(tenant, id.ToUpperInvariant(), hash, key.Id);
    }

    /// <summary>True when <paramref name="address"/> is the recipient the tag was made for (false once its key is retired).</summary>
    public bool IsRecipient(VerpTag tag, string address) =>
        _keys.Find(tag.Tenant, tag.KeyId) is { } key && string.Equals(RecipientHash(tag.Tenant, key, NormalizeRecipient(address)), tag.RecipientHash, StringComparison.Ordinal);

    /// <summary>
    /// 32-bit fingerprint of the normalised address (local part lower-cased, domain in A-labels): enough to pick the
    /// recipient out of the handful of addresses a bounce mentions, far too little to recover the address from. Keyed
    /// with the tenant's secret: an unkeyed hash could be matched offline (2^32 tries) by an address the attacker owns,
    /// giving a valid tag that a forged report could then pin on a victim's address.
    /// </summary>
    string RecipientHash(string tenant, VerpKey key, string normalized) =>
        Remember(_hashes, (tenant, key.KeyLabel, normalized), () =>
            Convert.ToHexStringLower(_keys.Mac(tenant, key, Encoding.UTF8.GetBytes("smtpgw-verp1-rcpt\0" + normalized)).AsSpan(0, 4)));

    /// <summary>The form a recipient is fingerprinted in.</summary>
    public static string NormalizeRecipient(string address)
    {
        var a = address.Trim().Trim('<', '>');
        var at = a.LastIndexOf('@');
        return at < 0 ? a.ToLowerInvariant() : $"{a[..at].ToLowerInvariant()}@{DomainName.Normalize(a[(at + 1)..]) ?? a[(at + 1)..].ToLowerInvariant()}";
    }

    static bool Matches(string? expected, byte[] given) =>
        expected is not null && CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(expected), given);

    /// <summary>
    /// The version 2 tag MAC: HMAC-SHA256 under the minute key of the queue id's time; null when the id is not one the
    /// spool makes (20 hex digits, the first 12 Unix milliseconds), so that it has no minute: such a tag gets version 1.
    /// </summary>
    string? MinuteMac(VerpKey key, string tenant, string id, string hash)
    {
        if (MinuteOf(id) is not { } minute)
        {
            return null;
        }

        var input = Encoding.UTF8.GetBytes($"smtpgw-verp2\0{tenant}\0{id}\0{hash}");
        Span<byte> mac = stackalloc byte[HMACSHA256.HashSizeInBytes];
        var now = CurrentMinute();
        var slot = (tenant, key.KeyLabel, minute);
        if (Near(minute, now))
        {
            lock (_minuteGate)
            {
                Prune(now);
                if (_minuteKeys.TryGetValue(slot, out var known))
                {
                    HMACSHA256.HashData(known, input, mac);
                    return Base32(mac[..MacBytes]);
                }
            }
        }

        // Made outside the gate (an HSM call), copied at once into a pinned array (the collector does not move it) and the
        // returned one zeroed; zeroed itself when done, or when it leaves the cache.
        var made = GC.AllocateArray<byte>(HMACSHA256.HashSizeInBytes, pinned: true);
        var raw = _keys.Mac(tenant, key, Encoding.UTF8.GetBytes(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"smtpgw-verp2-minute\0{tenant}\0{minute}")));
        raw.CopyTo(made, 0);
        CryptographicOperations.ZeroMemory(raw);

        // The clock is read again: a minute may have turned during the HSM call, and a key is kept only while it is near.
        now = CurrentMinute();
        var kept = false;
        lock (_minuteGate)
        {
            Prune(now);
            var use = made;
            if (Near(minute, now) && !_minuteKeys.TryGetValue(slot, out use))
            {
                _minuteKeys[slot] = use = made;
                kept = true;
            }

            HMACSHA256.HashData(use!, input, mac);
        }

        if (!kept)
        {
            CryptographicOperations.ZeroMemory(made);
        }

        return Base32(mac[..MacBytes]);
    }

    /// <summary>Whether a minute key is kept: the current minute and the one either side of it.</summary>
    static bool Near(long minute, long now) => Math.Abs(minute - now) <= 1;

    /// <summary>Drops (and zeroes) the keys of minutes no longer next to <paramref name="now"/>; under the gate, once a minute.</summary>
    void Prune(long now)
    {
        if (_prunedFor == now)
        {
            return;
        }

        _prunedFor = now;
        foreach (var slot in _minuteKeys.Keys.Where(k => !Near(k.Minute, now)).ToList())
        {
            _minuteKeys.Remove(slot, out var dropped);
            CryptographicOperations.ZeroMemory(dropped);
        }
    }

    long CurrentMinute() => _keys.Time.GetUtcNow().ToUnixTimeMilliseconds() / 60_000;

    /// <summary>The minute of a queue id the spool made (its first 12 hex digits are Unix milliseconds), else null.</summary>
    static long? MinuteOf(string id) =>
        id.Length == 20 && long.TryParse(id.AsSpan(0, 12), System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out var ms)
            ? ms / 60_000
            : null;

    /// <summary>Minute keys held now (tests).</summary>
    internal int MinuteKeysHeld
    {
        get
        {
            lock (_minuteGate)
            {
                return _minuteKeys.Count;
            }
        }
    }

    string Mac(VerpKey key, string tenant, string id, string hash)
    {
        // Domain-separated input, so that this key can never produce a value valid in another context.
        var input = Encoding.UTF8.GetBytes($"smtpgw-verp1\0{tenant}\0{id}\0{hash}");
        return Base32(_keys.Mac(tenant, key, input).AsSpan(0, MacBytes));
    }

    /// <summary>
    /// A memo of values that are public once made (they are parts of addresses), keyed by the key label so that a
    /// rotation never serves an old key's value. Emptied when full rather than evicted piecemeal: simple, and the cost
    /// of forgetting is only an HSM call per entry made again.
    /// </summary>
    static string Remember<TKey>(BoundedMemo<TKey> memo, TKey key, Func<string> make)
        where TKey : notnull
    {
        if (memo.TryGetValue(key, out var known))
        {
            return known;
        }

        var value = make();
        memo.Add(key, value);
        return value;
    }

    /// <summary>RFC 4648 section 6 alphabet, lower case, no padding (10 bytes → 16 characters).</summary>
    static string Base32(ReadOnlySpan<byte> data)
    {
        const string alphabet = "abcdefghijklmnopqrstuvwxyz234567";
        var sb = new StringBuilder((data.Length * 8 + 4) / 5);
        int buffer = 0, bits = 0;
        foreach (var b in data)
        {
            buffer = (buffer << 8) | b;
            bits += 8;
            while (bits >= 5)
            {
                sb.Append(alphabet[(buffer >> (bits - 5)) & 31]);
                bits -= 5;
            }
        }

        if (bits > 0)
        {
            sb.Append(alphabet[(buffer << (5 - bits)) & 31]);
        }

        return sb.ToString();
    }

    // \z, not $: "$" also matches before a final "\n", and this is a MAC check on input anyone can send.
    [GeneratedRegex(@"^b\+(?<id>[0-9a-f]{20})\.(?<hash>[0-9a-f]{8})\.(?<key>[a-z0-9])(?<mac>[a-z2-7]{16})\z", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex TagPattern();
}
