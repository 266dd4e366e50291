using System.Collections.Concurrent;
using System.Security.Cryptography;
using SmtpGateway.Hsm;

namespace SmtpGateway.Tests.Fakes;

/// <summary>
/// <see cref="ITenantKeys"/> in process, for unit tests of pure logic (key ids, rotation windows, file formats). Keys
/// are per tenant, so a label of tenant A is unknown to tenant B, as in separate tokens. The real thing is
/// <c>HsmTenantKeys</c> over SoftHSM2, exercised by the Hsm tests and the functional tests.
/// </summary>
internal sealed class InMemoryTenantKeys : ITenantKeys
{
    readonly ConcurrentDictionary<(string Tenant, string Label), (bool Wrapping, byte[] Value)> _keys = new();

    public int MacCalls => _macCalls;

    public int OpenCalls => _openCalls;

    int _macCalls;
    int _openCalls;

    /// <summary>Makes every call fail as an unreachable token would (HSM down).</summary>
    public bool Unavailable { get; set; }

    public void CreateMacKey(string tenantId, string keyLabel) => Add(tenantId, keyLabel, false, RandomNumberGenerator.GetBytes(32));

    public void ImportMacKey(string tenantId, string keyLabel, ReadOnlySpan<byte> secret) => Add(tenantId, keyLabel, false, secret.ToArray());

    public byte[] Mac(string tenantId, string keyLabel, ReadOnlySpan<byte> data)
    {
        Interlocked.Increment(ref _macCalls);
        return HMACSHA256.HashData(Get(tenantId, keyLabel, wrapping: false), data);
    }

    public void CreateWrappingKey(string tenantId, string keyLabel) => Add(tenantId, keyLabel, true, RandomNumberGenerator.GetBytes(32));

    public byte[] Seal(string tenantId, string keyLabel, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> associatedData)
    {
        var key = Get(tenantId, keyLabel, wrapping: true);
        var output = new byte[12 + plaintext.Length + 16];
        RandomNumberGenerator.Fill(output.AsSpan(0, 12));
        using var aes = new AesGcm(key, 16);
        aes.Encrypt(output.AsSpan(0, 12), plaintext, output.AsSpan(12, plaintext.Length), output.AsSpan(12 + plaintext.Length), associatedData);
        return output;
    }

    public byte[] Open(string tenantId, string keyLabel, ReadOnlySpan<byte> sealedData, ReadOnlySpan<byte> associatedData)
    {
        Interlocked.Increment(ref _openCalls);
        var key = Get(tenantId, keyLabel, wrapping: true);
        if (sealedData.Length < 28)
        {
            throw new HsmException(HsmErrorKind.DataInvalid, tenantId, $"sealed data under '{keyLabel}' is too short");
        }

        var plaintext = new byte[sealedData.Length - 28];
        using var aes = new AesGcm(key, 16);
        try
        {
            aes.Decrypt(sealedData[..12], sealedData[12..^16], sealedData[^16..], plaintext, associatedData);
        }
        catch (AuthenticationTagMismatchException ex)
        {
            throw new HsmException(HsmErrorKind.DataInvalid, tenantId, $"sealed data under '{keyLabel}' did not authenticate", null, ex);
        }

        return plaintext;
    }

    public bool HasKey(string tenantId, string keyLabel)
    {
        ThrowIfUnavailable(tenantId);
        return _keys.ContainsKey((tenantId, keyLabel));
    }

    public bool DeleteKey(string tenantId, string keyLabel)
    {
        ThrowIfUnavailable(tenantId);
        return _keys.TryRemove((tenantId, keyLabel), out _);
    }

    void Add(string tenantId, string keyLabel, bool wrapping, byte[] value)
    {
        ThrowIfUnavailable(tenantId);
        if (!_keys.TryAdd((tenantId, keyLabel), (wrapping, value)))
        {
            throw new HsmException(HsmErrorKind.KeyExists, tenantId, $"label '{keyLabel}' is taken");
        }
    }

    byte[] Get(string tenantId, string keyLabel, bool wrapping)
    {
        ThrowIfUnavailable(tenantId);
        if (!_keys.TryGetValue((tenantId, keyLabel), out var key))
        {
            throw new HsmException(HsmErrorKind.KeyNotFound, tenantId, $"no secret key labelled '{keyLabel}'");
        }

        if (key.Wrapping != wrapping)
        {
            throw new HsmException(HsmErrorKind.KeyMismatch, tenantId, $"key '{keyLabel}' is not a {(wrapping ? "wrapping" : "MAC")} key");
        }

        return key.Value;
    }

    void ThrowIfUnavailable(string tenantId)
    {
        if (Unavailable)
        {
            throw new HsmException(HsmErrorKind.TokenUnavailable, tenantId, "token unavailable (test)");
        }
    }
}
