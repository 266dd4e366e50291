using System.Buffers;
using System.Text;

namespace SmtpGateway.Listener;

public sealed partial class SmtpSession
{
    Encoder? _replyEncoder;

    async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        if (_out.Length == 0)
        {
            return;
        }

        await HoldRateLimitedAsync(cancellationToken).ConfigureAwait(false);
        // Encoded chunk by chunk into a pooled buffer: no string of the replies is made (it was two per flush).
        var buffer = ArrayPool<byte>.Shared.Rent(Encoding.UTF8.GetMaxByteCount(_out.Length));
        try
        {
            // One encoder across the chunks: a surrogate pair split between two chunks stays one character. The final
            // flush leaves it reset for the next reply.
            var encoder = _replyEncoder ??= Encoding.UTF8.GetEncoder();
            var count = 0;
            foreach (var chunk in _out.GetChunks())
            {
                count += encoder.GetBytes(chunk.Span, buffer.AsSpan(count), flush: false);
            }

            count += encoder.GetBytes([], buffer.AsSpan(count), flush: true);

            _out.Clear();
            await _stream.WriteAsync(buffer.AsMemory(0, count), cancellationToken).ConfigureAwait(false);
            await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
