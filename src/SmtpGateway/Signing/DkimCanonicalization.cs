using System.Buffers;
using System.Security.Cryptography;

namespace SmtpGateway.Signing;

/// <summary>
/// RFC 6376 section 3.4.4 "relaxed" body canonicalisation, fed one line at a time while the body arrives, and hashed as it
/// goes (SHA-256): the body is never read again to sign it, wherever it ends up (memory or a scratch file).
/// </summary>
public sealed class DkimBodyHash : IDisposable
{
    /// <summary>
    /// Canonical bytes are gathered up to this size before they reach the hash: one AppendData per body line (and one per
    /// CRLF) was a native call each, about two thirds of the hash's cost for a 4 KiB body of 78-character lines.
    /// </summary>
    const int BufferSize = 4096;

    readonly IncrementalHash _sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    byte[]? _buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
    int _buffered;
    long _pendingEmptyLines;
    byte[]? _hash;

    /// <summary>One body line without its CRLF.</summary>
    public void AppendLine(in ReadOnlySequence<byte> line)
    {
        if (line.IsSingleSegment)
        {
            AppendLine(line.FirstSpan);
            return;
        }

        var copy = ArrayPool<byte>.Shared.Rent(checked((int)line.Length));
        try
        {
            line.CopyTo(copy);
            AppendLine(copy.AsSpan(0, (int)line.Length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(copy, clearArray: true);
        }
    }

    /// <summary>One body line without its CRLF.</summary>
    public void AppendLine(ReadOnlySpan<byte> line)
    {
        if (_hash is not null)
        {
            throw new InvalidOperationException("The body hash is already finished.");
        }

        ObjectDisposedException.ThrowIf(_buffer is null, this);

        // Step a: white space at the end of a line is ignored. An empty line is held back: step c ignores empty lines at the
        // end of the body, and only a later non-empty line proves these were not at the end.
        var end = line.Length;
        while (end > 0 && line[end - 1] is (byte)' ' or (byte)'\t')
        {
            end--;
        }

        if (end == 0)
        {
            _pendingEmptyLines++;
            return;
        }

        for (; _pendingEmptyLines > 0; _pendingEmptyLines--)
        {
            Write("\r\n"u8);
        }

        line = line[..end];
        if (line.IndexOf((byte)'\t') < 0 && line.IndexOf("  "u8) < 0)
        {
            Write(line);
        }
        else if (line.Length <= BufferSize)
        {
            // Step b: every run of white space within the line becomes one SP (never longer than the line).
            Reserve(line.Length);
            _buffered += CollapseWhiteSpace(line, _buffer.AsSpan(_buffered));
        }
        else
        {
            var collapsed = ArrayPool<byte>.Shared.Rent(line.Length);
            try
            {
                Write(collapsed.AsSpan(0, CollapseWhiteSpace(line, collapsed)));
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(collapsed, clearArray: true);
            }
        }

        Write("\r\n"u8);
    }

    /// <summary>The SHA-256 of the canonical body (an empty body hashes as the empty string, RFC 6376 section 3.4.4).</summary>
    public byte[] Finish()
    {
        if (_hash is null)
        {
            ObjectDisposedException.ThrowIf(_buffer is null, this);
            Drain();
            _hash = _sha.GetHashAndReset();
        }

        return _hash;
    }

    public void Dispose()
    {
        if (_buffer is { } buffer)
        {
            _buffer = null;
            ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
        }

        _sha.Dispose();
    }

    void Write(ReadOnlySpan<byte> data)
    {
        if (data.Length > BufferSize)
        {
            Drain();
            _sha.AppendData(data);
            return;
        }

        Reserve(data.Length);
        data.CopyTo(_buffer.AsSpan(_buffered));
        _buffered += data.Length;
    }

    /// <summary>Makes room for <paramref name="length"/> (at most <see cref="BufferSize"/>) bytes in the buffer.</summary>
    void Reserve(int length)
    {
        if (_buffered + length > BufferSize)
        {
            Drain();
        }
    }

    void Drain()
    {
        if (_buffered > 0)
        {
            _sha.AppendData(_buffer.AsSpan(0, _buffered));
            _buffered = 0;
        }
    }

    internal static int CollapseWhiteSpace(ReadOnlySpan<byte> input, Span<byte> output)
    {
        var n = 0;
        var inRun = false;
        foreach (var b in input)
        {
            if (b is (byte)' ' or (byte)'\t')
            {
                if (!inRun)
                {
                    output[n++] = (byte)' ';
                    inRun = true;
                }
            }
            else
            {
                output[n++] = b;
                inRun = false;
            }
        }

        return n;
    }
}

/// <summary>RFC 6376 section 3.4.2 "relaxed" header canonicalisation.</summary>
public static class DkimHeaders
{
    /// <summary>
    /// Appends the relaxed form of <paramref name="field"/> (RFC 6376 section 3.4.2): the name lower-cased, no white space
    /// around the colon, continuation lines unfolded, each run of white space one SP, none at the end of the value; then
    /// CRLF unless <paramref name="withCrlf"/> is false (the DKIM-Signature field itself is hashed without it).
    /// </summary>
    public static void AppendRelaxed(ArrayBufferWriter<byte> output, ReadOnlySpan<byte> field, bool withCrlf = true)
    {
        ArgumentNullException.ThrowIfNull(output);
        var colon = field.IndexOf((byte)':');
        var name = (colon < 0 ? field : field[..colon]).TrimEnd(" \t"u8);
        var nameOut = output.GetSpan(name.Length);
        for (var i = 0; i < name.Length; i++)
        {
            nameOut[i] = name[i] is >= (byte)'A' and <= (byte)'Z' ? (byte)(name[i] | 0x20) : name[i];
        }

        output.Advance(name.Length);
        output.Write(":"u8);
        if (colon >= 0)
        {
            var value = field[(colon + 1)..];
            var buffer = output.GetSpan(value.Length);
            var n = 0;
            var pendingSpace = false;
            foreach (var b in value)
            {
                if (b is (byte)'\r' or (byte)'\n')
                {
                    continue; // unfold: the CRLF goes, the white space after it is a run like any other
                }

                if (b is (byte)' ' or (byte)'\t')
                {
                    pendingSpace = n > 0; // leading white space of the value is dropped
                    continue;
                }

                if (pendingSpace)
                {
                    buffer[n++] = (byte)' ';
                    pendingSpace = false;
                }

                buffer[n++] = b;
            }

            output.Advance(n); // a run at the very end was never written: trailing white space is gone
        }

        if (withCrlf)
        {
            output.Write("\r\n"u8);
        }
    }
}
