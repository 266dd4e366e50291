using System.Buffers;
using System.Net.Sockets;

namespace SmtpGateway.Delivery;

/// <summary>
/// The stream MailKit talks SMTP over (in place of its own socket stream, via SmtpClient.ConnectAsync(Stream)). Two
/// differences, both for the per-message cost of a relayed message (issue 15):
/// <list type="bullet">
/// <item>Writes are gathered until a flush, or until a read, which flushes first (a reply is only ever awaited after the
/// peer has everything sent before it). MailKit writes a message in 4 KiB blocks and then the end of data, so a 4.2 KB
/// message went out in two sendto(2) calls and a 40 KB one in eleven; now in one per 64 KiB. TLS (STARTTLS or implicit,
/// SslStream over this stream) gathers its records the same way; the handshake's writes are flushed by its reads.</item>
/// <item>A read or a flush times out after <see cref="ReadTimeout"/> / <see cref="WriteTimeout"/> (MailKit sets both to
/// Delivery:CommandTimeout) with one cancellation source per direction, reset and reused, where MailKit's stream made a
/// timer, a linked source and a task source per call. A timeout closes the socket and throws
/// <see cref="TimeoutException"/>, as MailKit's stream does, so the session ends as before.</item>
/// </list>
/// </summary>
internal sealed class OutboundSocketStream : Stream
{
    /// <summary>Gathered octets beyond this go out at once: one large message is never held whole in memory.</summary>
    internal const int MaxGathered = 64 * 1024;

    readonly Socket _socket;
    readonly TimeProvider _time;

    /// <summary>Guards the gathered buffer between a send in flight and Dispose (the pool may close a connection at any time).</summary>
    readonly Lock _bufferGate = new();
    byte[] _pending = [];
    int _pendingLength;
    bool _sending;
    CancellationTokenSource? _readTimer;
    CancellationTokenSource? _writeTimer;
    int _readTimeout = Timeout.Infinite;
    int _writeTimeout = Timeout.Infinite;
    bool _disposed;

    public OutboundSocketStream(Socket socket, TimeProvider time)
    {
        _socket = socket;
        _time = time;
    }

    /// <summary>Octets written and not yet sent (tests).</summary>
    internal int Pending => _pendingLength;

    public override bool CanRead => !_disposed;

    public override bool CanWrite => !_disposed;

    public override bool CanSeek => false;

    public override bool CanTimeout => true;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    /// <summary>Milliseconds a read may wait for the peer; <see cref="Timeout.Infinite"/> for no limit.</summary>
    public override int ReadTimeout
    {
        get => _readTimeout;
        set => _socket.ReceiveTimeout = SocketTimeout(_readTimeout = Limit(value));
    }

    /// <summary>Milliseconds a send may wait for room in the peer's window; <see cref="Timeout.Infinite"/> for no limit.</summary>
    public override int WriteTimeout
    {
        get => _writeTimeout;
        set => _socket.SendTimeout = SocketTimeout(_writeTimeout = Limit(value));
    }

    /// <summary>A timeout as Stream takes it (0 or <see cref="Timeout.Infinite"/>: none), as this stream keeps it.</summary>
    static int Limit(int milliseconds)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(milliseconds, Timeout.Infinite);
        return milliseconds == 0 ? Timeout.Infinite : milliseconds;
    }

    /// <summary>The same limit as SO_RCVTIMEO/SO_SNDTIMEO take it for MailKit's synchronous calls (0: none).</summary>
    static int SocketTimeout(int limit) => limit == Timeout.Infinite ? 0 : limit;

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Flush();
        try
        {
            return _socket.Receive(buffer, SocketFlags.None);
        }
        catch (SocketException ex)
        {
            throw Failed(ex, _readTimeout);
        }
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_pendingLength > 0)
        {
            await FlushAsync(cancellationToken).ConfigureAwait(false);
        }

        var timer = Arm(ref _readTimer, _readTimeout);
        var registration = Link(timer, cancellationToken);
        try
        {
            return await _socket.ReceiveAsync(buffer, SocketFlags.None, timer?.Token ?? cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException)
        {
            // The link goes before Failed disposes the timer: a cancel of the caller's token must never reach a disposed source.
            await registration.DisposeAsync().ConfigureAwait(false);
            throw Failed(ex, timer, cancellationToken, _readTimeout);
        }
        finally
        {
            await registration.DisposeAsync().ConfigureAwait(false);
        }
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Gather(buffer);
        if (_pendingLength >= MaxGathered)
        {
            Flush();
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        cancellationToken.ThrowIfCancellationRequested();
        Gather(buffer.Span);
        return _pendingLength >= MaxGathered ? new ValueTask(FlushAsync(cancellationToken)) : ValueTask.CompletedTask;
    }

    public override void Flush()
    {
        byte[] pending;
        int length;
        lock (_bufferGate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            (pending, length, _sending) = (_pending, _pendingLength, true);
        }

        try
        {
            for (var sent = 0; sent < length;)
            {
                sent += _socket.Send(pending.AsSpan(sent, length - sent), SocketFlags.None);
            }
        }
        catch (SocketException ex)
        {
            throw Failed(ex, _writeTimeout);
        }
        finally
        {
            // Every way out gives the buffer back, cleared (Failed's Dispose leaves it to this while the send is marked).
            Release();
        }
    }

    public override async Task FlushAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_pendingLength == 0)
        {
            return;
        }

        ReadOnlyMemory<byte> pending;
        lock (_bufferGate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _sending = true;
            pending = _pending.AsMemory(0, _pendingLength);
        }

        var timer = Arm(ref _writeTimer, _writeTimeout);
        var registration = Link(timer, cancellationToken);
        try
        {
            // One send(2) for all of it unless the peer's window is full; SendAsync loops on a partial send itself.
            await _socket.SendAsync(pending, SocketFlags.None, timer?.Token ?? cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException)
        {
            // The link goes before Failed disposes the timer: a cancel of the caller's token must never reach a disposed source.
            await registration.DisposeAsync().ConfigureAwait(false);
            throw Failed(ex, timer, cancellationToken, _writeTimeout);
        }
        finally
        {
            // Every way out (a socket disposed elsewhere throws ObjectDisposedException) gives the buffer back, cleared.
            await registration.DisposeAsync().ConfigureAwait(false);
            Release();
        }
    }

    /// <summary>Under the gate, so that a Dispose meanwhile can never have the octets land in a buffer back in the pool.</summary>
    void Gather(ReadOnlySpan<byte> buffer)
    {
        lock (_bufferGate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_pending.Length - _pendingLength < buffer.Length)
            {
                var larger = ArrayPool<byte>.Shared.Rent(Math.Max(_pendingLength + buffer.Length, 8 * 1024));
                var length = _pendingLength;
                _pending.AsSpan(0, length).CopyTo(larger);
                ReturnBuffer();
                _pending = larger;
                _pendingLength = length;
            }

            buffer.CopyTo(_pending.AsSpan(_pendingLength));
            _pendingLength += buffer.Length;
        }
    }

    /// <summary>Sent (or failed): the buffer goes back to the pool, so an idle pooled connection holds none.</summary>
    void Release()
    {
        lock (_bufferGate)
        {
            _sending = false;
            ReturnBuffer();
        }
    }

    /// <summary>
    /// Cleared before it goes back: the pool is shared, and the octets are mail, or an AUTH exchange with a smarthost
    /// (UpstreamSasl pins and zeroes its own copy of the credentials).
    /// </summary>
    void ReturnBuffer()
    {
        var buffer = _pending;
        var used = _pendingLength;
        _pending = [];
        _pendingLength = 0;
        if (buffer.Length > 0)
        {
            buffer.AsSpan(0, used).Clear();
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>This direction's timer, reset and started for <paramref name="timeout"/>; null when there is no limit.</summary>
    CancellationTokenSource? Arm(ref CancellationTokenSource? timer, int timeout)
    {
        if (timeout == Timeout.Infinite)
        {
            return null;
        }

        if (timer is null || !timer.TryReset())
        {
            timer?.Dispose();
            timer = new CancellationTokenSource(Timeout.InfiniteTimeSpan, _time);
        }

        timer.CancelAfter(TimeSpan.FromMilliseconds(timeout));
        return timer;
    }

    /// <summary>The caller's cancellation cancels the timer's token too, so one token serves the socket call.</summary>
    static CancellationTokenRegistration Link(CancellationTokenSource? timer, CancellationToken cancellationToken) =>
        timer is not null && cancellationToken.CanBeCanceled
            ? cancellationToken.UnsafeRegister(static state => CancelQuietly((CancellationTokenSource)state!), timer)
            : default;

    /// <summary>Runs on whoever cancels the caller's token (a timer, another request): it must not throw there.</summary>
    static void CancelQuietly(CancellationTokenSource timer)
    {
        try
        {
            timer.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The stream failed or was disposed meanwhile; the operation has ended.
        }
    }

    /// <summary>
    /// What a failed read or send throws, after closing the socket (the session is unusable after a partial exchange):
    /// the caller's cancellation as itself, a timeout as TimeoutException, a socket error as IOException (as MailKit's stream).
    /// </summary>
    Exception Failed(Exception ex, CancellationTokenSource? timer, CancellationToken cancellationToken, int timeout)
    {
        Close();
        if (cancellationToken.IsCancellationRequested)
        {
            return new OperationCanceledException(cancellationToken);
        }

        if (timer is { IsCancellationRequested: true })
        {
            return new TimeoutException($"Operation timed out after {timeout} milliseconds", ex);
        }

        return ex is SocketException ? new IOException(ex.Message, ex) : ex;
    }

    /// <summary>A failed blocking call (MailKit's synchronous API), which SO_RCVTIMEO/SO_SNDTIMEO bound.</summary>
    Exception Failed(SocketException ex, int timeout)
    {
        Close();
        return ex.SocketErrorCode is SocketError.TimedOut or SocketError.WouldBlock
            ? new TimeoutException($"Operation timed out after {timeout} milliseconds", ex)
            : new IOException(ex.Message, ex);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && !_disposed)
        {
            _disposed = true;
            _socket.Dispose();
            _readTimer?.Dispose();
            _writeTimer?.Dispose();
            lock (_bufferGate)
            {
                // A send in flight still reads the buffer: its own Release returns it when the send ends.
                if (!_sending)
                {
                    ReturnBuffer();
                }
            }
        }

        base.Dispose(disposing);
    }
}
