namespace SmtpGateway.Vault;

/// <summary>
/// Buffers for plaintext secrets. They are pinned (on the pinned object heap) because a compacting GC moves ordinary
/// arrays and leaves the old copy in freed memory: zeroing the array afterwards would then miss that copy, and a
/// secret held across an await (an AUTH round trip, a token request) lives through many collections.
/// </summary>
internal static class SecretBuffer
{
    public static byte[] Allocate(int length) => GC.AllocateArray<byte>(length, pinned: true);
}
