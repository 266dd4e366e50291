using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using SmtpGateway.Smtp;
using SmtpGateway.Submission;

namespace SmtpGateway.Listener;

public sealed partial class SmtpSession
{
    CancellationTokenSource? _lineTimer;
    CancellationTokenSource? _lineLinked;
    CancellationTokenSource? _lineLinkedDraining;
    CancellationToken _lineSession;

    enum LineStatus
    {
        Ok,
        TooLong,
        BareLineEnding,
        BadEncoding,
        Closed,
    }

    enum DataOutcome
    {
        Ok,
        TooBig,
        BareLineEnding,
        NulCharacter,
        LineTooLong,
        Closed,
    }

    readonly record struct Line(LineStatus Status, string Text);

    ValueTask<Line> ReadCommandLineAsync(CancellationToken sessionToken)
    {
        // On SIGTERM an idle session (no transaction open) is told 421 at once; a session mid-transaction
        // may finish its message first (issue #2: "lets in-flight sessions finish up to a timeout").
        if (_draining.IsCancellationRequested && !InTransaction)
        {
            Reply(SmtpReplies.ShuttingDown);
            return ValueTask.FromResult(new Line(LineStatus.Closed, ""));
        }

        return ReadLineAsync(MaxAuthLineLength, _services.Limits.CommandTimeout, sessionToken, allowDrain: !InTransaction);
    }

    /// <summary>
    /// Reads one CRLF-terminated line of at most <paramref name="maxLength"/> octets including CRLF. Replies are
    /// flushed only when the client has nothing more buffered (RFC 2920 section 3.2: pipelined replies may be batched).
    /// </summary>
    async ValueTask<Line> ReadLineAsync(int maxLength, TimeSpan timeout, CancellationToken sessionToken, bool allowDrain)
    {
        var token = ArmLineTimeout(timeout, sessionToken, allowDrain);
        var discarding = false;
        try
        {
            while (true)
            {
                ReadResult result;
                if (_mustWait || !_reader.TryRead(out result))
                {
                    await FlushAsync(token).ConfigureAwait(false);
                    if (!_mustWait)
                    {
                        // Nothing buffered: wait for the client with a zero-byte read, which holds no buffer (as Kestrel
                        // waits before it allocates one). An idle session then keeps no 4 KiB pipe segment, which is most of
                        // what 10,000 idle connections cost (issue 15: 200 MB for 10,000).
                        await _stream.ReadAsync(Memory<byte>.Empty, token).ConfigureAwait(false);
                    }

                    result = await _reader.ReadAsync(token).ConfigureAwait(false);
                }

                _mustWait = false;
                var buffer = result.Buffer;
                var lf = buffer.PositionOf((byte)'\n');
                if (lf is { } position)
                {
                    var line = buffer.Slice(0, position);
                    var status = LineStatus.Ok;
                    var text = "";
                    if (discarding || line.Length + 1 > maxLength)
                    {
                        status = LineStatus.TooLong;
                    }
                    else if (line.Length == 0 || LastByte(line) != (byte)'\r')
                    {
                        status = LineStatus.BareLineEnding;
                    }
                    else
                    {
                        var content = line.Slice(0, line.Length - 1);
                        if (content.PositionOf((byte)'\r') is not null)
                        {
                            status = LineStatus.BareLineEnding;
                        }
                        else
                        {
                            try
                            {
                                text = StrictUtf8.GetString(content);
                            }
                            catch (DecoderFallbackException)
                            {
                                status = LineStatus.BadEncoding;
                            }
                        }
                    }

                    _reader.AdvanceTo(buffer.GetPosition(1, position));
                    return new Line(status, text);
                }

                if (result.IsCompleted)
                {
                    _reader.AdvanceTo(buffer.End);
                    return new Line(LineStatus.Closed, "");
                }

                if (buffer.Length >= maxLength)
                {
                    // Keep memory bounded: drop the overlong line as it arrives, answer once its end is seen.
                    discarding = true;
                    _reader.AdvanceTo(buffer.End);
                }
                else
                {
                    _reader.AdvanceTo(buffer.Start, buffer.End);
                }

                _mustWait = true;
            }
        }
        catch (OperationCanceledException)
        {
            Reply(TimeoutReply(sessionToken, allowDrain));
            return new Line(LineStatus.Closed, "");
        }
        finally
        {
            // Disarmed while the command runs (a DATA has its own timer; signing and the spool are not the client's time).
            _lineTimer?.CancelAfter(Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>
    /// The token one command line is read under: the session's cap, shutdown, and the command timeout on the injected
    /// clock (tests move time instead of waiting). One timer and two linked sources serve the whole session, re-armed per
    /// line with CancelAfter, where a new timer and linked source per command cost allocations and registrations on the
    /// runtime's shared timer queue for every command of every session (issue 15).
    /// </summary>
    CancellationToken ArmLineTimeout(TimeSpan timeout, CancellationToken sessionToken, bool allowDrain)
    {
        if (_lineTimer is null || _lineTimer.IsCancellationRequested || _lineSession != sessionToken)
        {
            // First line, another session token (the handshake's), or a timer that fired after its line was read.
            DisposeLineTimeout();
            // Created with the clock and no due time, so CancelAfter runs on that clock's timer (not the system's).
            _lineTimer = new CancellationTokenSource(Timeout.InfiniteTimeSpan, _services.Time);
            _lineSession = sessionToken;
        }

        var linked = allowDrain
            ? _lineLinkedDraining ??= CancellationTokenSource.CreateLinkedTokenSource(sessionToken, _hardStop, _draining, _lineTimer.Token)
            : _lineLinked ??= CancellationTokenSource.CreateLinkedTokenSource(sessionToken, _hardStop, _lineTimer.Token);
        _lineTimer.CancelAfter(timeout);
        return linked.Token;
    }

    void DisposeLineTimeout()
    {
        _lineLinked?.Dispose();
        _lineLinkedDraining?.Dispose();
        _lineTimer?.Dispose();
        _lineLinked = _lineLinkedDraining = _lineTimer = null;
    }

    SmtpReply TimeoutReply(CancellationToken sessionToken, bool allowDrain) =>
        _hardStop.IsCancellationRequested || (allowDrain && _draining.IsCancellationRequested) ? SmtpReplies.ShuttingDown
        : sessionToken.IsCancellationRequested ? SmtpReplies.SessionTooLong
        : SmtpReplies.CommandTimeout;

    /// <summary>
    /// Reads the DATA body (RFC 5321 section 4.1.1.4). Only CRLF "." CRLF ends it; a bare CR or LF anywhere marks the
    /// message as refused (so "\n.\n" can never smuggle a second message, CVE-2023-51766 class); dot-stuffing is
    /// removed (section 4.5.2). After a refusal the rest of the body is read and discarded, so the session stays in sync.
    /// </summary>
    async ValueTask<DataOutcome> ReadDataAsync(IncomingMessage message, CancellationToken sessionToken)
    {
        var limits = _services.Limits;
        using var timer = new CancellationTokenSource(limits.DataTimeout, _services.Time);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(sessionToken, _hardStop, timer.Token);
        bool tooBig = false, bare = false, nul = false, longLine = false, inLongLine = false;
        var rate = new DataRate(limits.DataTimeout, limits.MinDataRate, _services.Time);
        long carried = 0; // octets of the buffer seen by an earlier read and left unconsumed (a partial line)

        // The terminator is CRLF "." CRLF: the dot line ends DATA only if the line before it ended in CRLF (the
        // 354 reply's line counts). "\n.\r\n" is a bare LF followed by ".\r\n", not an end of data.
        var previousEndedInCrlf = true;
        try
        {
            while (true)
            {
                ReadResult result;
                var waited = false;
                if (_mustWait || !_reader.TryRead(out result))
                {
                    result = await _reader.ReadAsync(cts.Token).ConfigureAwait(false);
                    waited = true;
                }

                _mustWait = false;
                var buffer = result.Buffer;
                rate.Arrived(buffer.Length - carried);
                if (waited)
                {
                    // RFC 5321 section 4.5.3.2.5: the limit is per block, not per message; but never past the minimum rate's deadline.
                    timer.CancelAfter(rate.NextTimeout());
                }

                var reader = new SequenceReader<byte>(buffer);
                while (reader.TryReadTo(out ReadOnlySequence<byte> line, (byte)'\n'))
                {
                    if (inLongLine)
                    {
                        inLongLine = false;
                        previousEndedInCrlf = line.Length > 0 && LastByte(line) == (byte)'\r';
                        continue;
                    }

                    if (line.Length + 1 > limits.MaxTextLineLength)
                    {
                        longLine = true;
                    }

                    var crlf = line.Length > 0 && LastByte(line) == (byte)'\r';
                    var content = crlf ? line.Slice(0, line.Length - 1) : line;
                    if (!crlf || content.PositionOf((byte)'\r') is not null)
                    {
                        bare = true;
                    }
                    else if (content.PositionOf((byte)0) is not null)
                    {
                        // RFC 5322 section 2.1: a NUL is refused here, before any stage sees the message, never relayed.
                        nul = true;
                    }

                    var endedInCrlf = previousEndedInCrlf;
                    previousEndedInCrlf = crlf;
                    if (crlf && endedInCrlf && content.Length == 1 && content.FirstSpan[0] == (byte)'.')
                    {
                        _reader.AdvanceTo(reader.Position);
                        return tooBig ? DataOutcome.TooBig : bare ? DataOutcome.BareLineEnding : nul ? DataOutcome.NulCharacter : longLine ? DataOutcome.LineTooLong : DataOutcome.Ok;
                    }

                    if (tooBig || bare || nul || longLine)
                    {
                        // Refused already: keep reading to the end of DATA (to stay in sync), holding nothing.
                        message.Discard();
                        continue;
                    }

                    if (content.Length > 0 && content.FirstSpan[0] == (byte)'.')
                    {
                        content = content.Slice(1);
                    }

                    if (message.Received + content.Length + 2 > Math.Min(limits.MaxMessageSize, message.MaxSize))
                    {
                        tooBig = true;
                        message.Discard();
                        continue;
                    }

                    message.AppendLine(content);
                }

                if (result.IsCompleted)
                {
                    return DataOutcome.Closed;
                }

                if (reader.UnreadSequence.Length >= limits.MaxTextLineLength)
                {
                    longLine = true;
                    inLongLine = true;
                    message.Discard();
                    _reader.AdvanceTo(buffer.End);
                    carried = 0;
                }
                else
                {
                    _reader.AdvanceTo(reader.Position, buffer.End);
                    carried = reader.Remaining;
                }

                _mustWait = true;
            }
        }
        catch (OperationCanceledException)
        {
            var reply = TimeoutReply(sessionToken, allowDrain: false);
            Reply(timer.IsCancellationRequested && reply == SmtpReplies.CommandTimeout && rate.TooSlow ? SmtpReplies.DataTooSlow : reply);
            return DataOutcome.Closed;
        }
    }

    /// <summary>
    /// The whole-DATA deadline of Limits:MinDataRate: DataTimeout of grace from the 354, plus 1/MinDataRate seconds for every
    /// octet received (Kestrel's MinRequestBodyDataRate, with DataTimeout as its grace period). The block timeout restarts
    /// with every read; this one does not, so a client trickling an octet every few seconds is closed instead of holding
    /// the session until SessionTimeout.
    /// </summary>
    sealed class DataRate(TimeSpan grace, int minRate, TimeProvider time)
    {
        readonly long _started = time.GetTimestamp();
        long _octets;

        /// <summary>True when the last timeout handed out was the rate's deadline (shorter than the block timeout).</summary>
        public bool TooSlow { get; private set; }

        public void Arrived(long octets) => _octets += Math.Max(0, octets);

        /// <summary>Time left before the session is closed: the block timeout, or less when the rate's deadline comes first.</summary>
        public TimeSpan NextTimeout()
        {
            if (minRate <= 0)
            {
                return grace;
            }

            var allowed = grace + TimeSpan.FromSeconds((double)_octets / minRate);
            var left = allowed - time.GetElapsedTime(_started);
            TooSlow = left < grace;
            return left <= TimeSpan.Zero ? TimeSpan.Zero : TooSlow ? left : grace;
        }
    }

    static byte LastByte(in ReadOnlySequence<byte> sequence) => sequence.Slice(sequence.Length - 1).FirstSpan[0];

    /// <summary>Thrown when a TLS handshake fails; the session ends without a reply (there is no channel to reply on).</summary>
    sealed class AuthenticationFailure(Exception inner) : Exception("TLS handshake failed", inner);
}
