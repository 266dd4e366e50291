using System.Security.Cryptography;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using LowLevel = Net.Pkcs11Interop.LowLevelAPI80;

namespace SmtpGateway.Hsm;

/// <summary>
/// AES-GCM C_Decrypt through Pkcs11Interop's low-level API. The high-level ISession.Decrypt sizes its output with the
/// module's length query, and SoftHSM2 answers with the input length (plaintext plus tag); Pkcs11Interop then shrinks
/// the array with Array.Resize and drops the longer one, a copy of the plaintext nobody can zero. The vault's data key
/// is such a plaintext, and with a core dump and the vault file it would open every record of the tenant. Here the
/// output goes to a pinned buffer of ours, is copied out at its real length, and the buffer is zeroed.
/// </summary>
/// <remarks>Same module, same process: the library is already initialised (C_Initialize is process-wide, v2.40 §5.4),
/// and session and object handles are the high-level API's own.</remarks>
internal sealed class RawDecryptor : IDisposable
{
    readonly LowLevel.Pkcs11Library _library;

    RawDecryptor(LowLevel.Pkcs11Library library) => _library = library;

    /// <summary>The low-level API for 64-bit Unix (8-byte CK_ULONG, unpacked structs); null on other platforms.</summary>
    public static RawDecryptor? TryLoad(string modulePath) =>
        Environment.Is64BitProcess && !OperatingSystem.IsWindows() ? new RawDecryptor(new LowLevel.Pkcs11Library(modulePath)) : null;

    /// <summary>CKM_AES_GCM decryption of ciphertext ‖ tag; throws <see cref="Pkcs11Exception"/> as the high-level API does.</summary>
    public byte[] DecryptGcm(ISession session, IObjectHandle key, byte[] nonce, byte[] associatedData, byte[] body)
    {
        var iv = UnmanagedMemory.Allocate(nonce.Length);
        var aad = associatedData.Length > 0 ? UnmanagedMemory.Allocate(associatedData.Length) : IntPtr.Zero;
        var mechanism = default(LowLevel.CK_MECHANISM);
        var output = GC.AllocateArray<byte>(body.Length, pinned: true);
        try
        {
            UnmanagedMemory.Write(iv, nonce);
            if (aad != IntPtr.Zero)
            {
                UnmanagedMemory.Write(aad, associatedData);
            }

            mechanism = LowLevel.CkmUtils.CreateMechanism(CKM.CKM_AES_GCM, new LowLevel.MechanismParams.CK_GCM_PARAMS
            {
                Iv = iv,
                IvLen = (ulong)nonce.Length,
                IvBits = (ulong)nonce.Length * 8,
                AAD = aad,
                AADLen = (ulong)associatedData.Length,
                TagBits = (ulong)Pkcs11Constants.GcmTagBytes * 8,
            });
            var rv = _library.C_DecryptInit(session.SessionId, ref mechanism, key.ObjectId);
            if (rv != CKR.CKR_OK)
            {
                throw new Pkcs11Exception("C_DecryptInit", rv);
            }

            var length = (ulong)output.Length;
            rv = _library.C_Decrypt(session.SessionId, body, (ulong)body.Length, output, ref length);
            if (rv != CKR.CKR_OK)
            {
                throw new Pkcs11Exception("C_Decrypt", rv);
            }

            var plaintext = GC.AllocateArray<byte>(checked((int)length), pinned: true);
            output.AsSpan(0, plaintext.Length).CopyTo(plaintext);
            return plaintext;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(output);
            UnmanagedMemory.Free(ref mechanism.Parameter);
            UnmanagedMemory.Free(ref iv);
            UnmanagedMemory.Free(ref aad);
        }
    }

    public void Dispose() => _library.Dispose();
}
