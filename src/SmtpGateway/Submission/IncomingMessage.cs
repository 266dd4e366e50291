using System.Buffers;
using SmtpGateway.Envelope;
using SmtpGateway.Signing;

namespace SmtpGateway.Submission;

/// <summary>Why a message could not be taken in whole (the reply is chosen by the pipeline).</summary>
public enum IncomingProblem
{
    None,

    /// <summary>The header section is over Limits:MaxHeaderSectionSize.</summary>
    HeaderTooLarge,

    /// <summary>The gateway-wide memory budget could not hold even the header section.</summary>
    NoMemory,

    /// <summary>The scratch file could not be written (disk full, I/O error).</summary>
    StorageFailed,

    /// <summary>
    /// The first line is a continuation line: under our Received field it would continue that field, and every field
    /// after it would reach recipients unseen by hygiene and sender binding.
    /// </summary>
    LeadingContinuation,
}

/// <summary>
/// One message as it arrives, line by line: the header section in memory (sender binding, hygiene and DKIM need it), the
/// body in memory up to Limits:MessageMemoryThreshold and then in a scratch file beside the spool. Memory comes from the
/// gateway-wide <see cref="MessageMemoryBudget"/> in chunks; when the budget is spent the body goes to disk from its first
/// octet. Disposing returns the memory and deletes the scratch file.
/// </summary>
public sealed class IncomingMessage : IDisposable
{
    /// <summary>Memory is taken from the budget in steps of this size (MessageBuffer's chunk), not per line.</summary>
    const int Step = 64 * 1024;

    static readonly byte[] Crlf = "\r\n"u8.ToArray();

    readonly MessageMemoryBudget _budget;
    readonly Func<FileStream> _createScratch;
    readonly int _memoryThreshold;
    readonly int _maxHeaderSection;
    readonly MessageBuffer _memory = new();

    /// <summary>Where each header field starts (octet offset): the one split of the header section, made as lines arrive.</summary>
    readonly List<int> _fieldStarts = [];
    long _received;
    long _headerCopy;
    long _fieldsEnd;
    HeaderSection? _headers;
    long _reserved;
    bool _inHeader = true;
    bool _firstLine = true;
    FileStream? _scratch;
    long _scratchLength;
    bool _scratchEightBit;

    readonly DkimBodyHash? _bodyHash;

    internal IncomingMessage(string id, string receivedHeader, MessageMemoryBudget budget, Func<FileStream> createScratch, int memoryThreshold, int maxHeaderSection,
        DkimBodyHash? bodyHash = null)
    {
        _bodyHash = bodyHash;
        Id = id;
        ReceivedHeader = receivedHeader;
        _budget = budget;
        _createScratch = createScratch;
        _memoryThreshold = memoryThreshold;
        _maxHeaderSection = maxHeaderSection;
    }

    /// <summary>Queue id, chosen when DATA began (it is in the Received header).</summary>
    public string Id { get; }

    /// <summary>Our Received trace field (RFC 5321 section 4.4), CRLF-terminated; it goes on top, outside the DKIM signature.</summary>
    public string ReceivedHeader { get; }

    /// <summary>The most octets this message may have: Gateway:Limits:MaxMessageSize, or the tenant's MaxMessageSize when lower.</summary>
    public long MaxSize { get; init; } = long.MaxValue;

    /// <summary>When DATA began (the Received field's date and the spool's arrival time).</summary>
    public DateTimeOffset ReceivedAt { get; init; }

    /// <summary>Octets held so far (after dot-unstuffing, CRLF included), excluding our Received field.</summary>
    public long Length => _memory.Length + _scratchLength;

    /// <summary>Octets the client sent in this DATA so far, kept or not: the size limit counts these, refused or not.</summary>
    public long Received => _received;

    /// <summary>Octets of the header section, including the empty line that ends it when there is one.</summary>
    public long HeaderLength { get; private set; }

    public IncomingProblem Problem { get; private set; }

    /// <summary>True when part of the body is in the scratch file (tests and logs).</summary>
    public bool Spilled => _scratch is not null;

    /// <summary>The header section's octets (RFC 5322 section 2.1): every field line, plus the empty line after it when present.</summary>
    public ReadOnlySequence<byte> HeaderBytes => _memory.ToSequence().Slice(0, HeaderLength);

    /// <summary>
    /// The header section split into fields, from the split the reader made as the lines arrived (one contiguous copy of the
    /// section's octets, no second scan). Valid until the message is disposed or discarded.
    /// </summary>
    public HeaderSection Headers => _headers ?? throw new InvalidOperationException("Complete() the message first.");

    /// <summary>
    /// The end of DATA: the scratch file flushed (a full disk often shows only here) and the header section made contiguous
    /// for its split (in place when it is in one chunk, as it nearly always is; otherwise one copy, paid from the budget).
    /// False when that fails; <see cref="Problem"/> says why.
    /// </summary>
    public bool Complete()
    {
        if (Problem != IncomingProblem.None)
        {
            return false;
        }

        try
        {
            _scratch?.Flush();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            Fail(IncomingProblem.StorageFailed);
            return false;
        }

        var octets = HeaderBytes;
        if (!octets.IsSingleSegment)
        {
            if (!_budget.TryTake(octets.Length))
            {
                Fail(IncomingProblem.NoMemory);
                return false;
            }

            _headerCopy = octets.Length;
        }

        _headers = HeaderSection.FromFieldStarts(octets.IsSingleSegment ? octets.First : octets.ToArray(), _fieldStarts, (int)_fieldsEnd);
        return true;
    }

    /// <summary>The body held in memory (all of it, unless <see cref="Spilled"/>).</summary>
    public ReadOnlySequence<byte> MemoryBody => _memory.ToSequence().Slice(HeaderLength);

    /// <summary>Header section and in-memory body as one sequence: the whole message when nothing spilled.</summary>
    public ReadOnlySequence<byte> InMemory => _memory.ToSequence();

    /// <summary>
    /// SHA-256 of the relaxed canonical body (RFC 6376 section 3.4.4), computed as the body arrived; null when nobody asked
    /// for it (mail that is not signed). Hygiene changes only the header section, so this is the hash of the body as queued.
    /// </summary>
    public byte[]? BodyHash => _bodyHash?.Finish();

    /// <summary>Whether the scratch part has octets over 127 (the in-memory part is scanned by whoever writes it).</summary>
    public bool ScratchEightBit => _scratchEightBit;

    /// <summary>
    /// The spilled rest of the body, positioned at its start; null when everything is in memory. Owned by this message.
    /// </summary>
    public Stream? OpenScratch()
    {
        if (_scratch is null)
        {
            return null;
        }

        _scratch.Position = 0;
        return _scratch;
    }

    public long ScratchLength => _scratchLength;

    /// <summary>Appends one line (without its CRLF; dot-stuffing already removed) and a CRLF.</summary>
    public void AppendLine(in ReadOnlySequence<byte> line)
    {
        _received += line.Length + 2;
        if (Problem != IncomingProblem.None)
        {
            return;
        }

        if (_inHeader)
        {
            if (_firstLine && line.Length > 0 && line.FirstSpan[0] is (byte)' ' or (byte)'\t')
            {
                Fail(IncomingProblem.LeadingContinuation);
                return;
            }

            var field = ContinuesHeader(line);
            _firstLine = false;
            if (field || line.Length == 0)
            {
                // A field line, or (RFC 5322 section 2.1) the empty line that ends the header section: both belong to it.
                if (field && line.FirstSpan[0] is not ((byte)' ' or (byte)'\t'))
                {
                    _fieldStarts.Add((int)_memory.Length);
                }

                _inHeader = field;
                AppendHeader(line);
                if (field)
                {
                    _fieldsEnd = _memory.Length;
                }

                return;
            }

            // A line that is no field ends the header section without an empty line (an mbox "From " line, text). Every
            // parser downstream must split where we did, or a field after it would reach recipients unseen by hygiene and
            // sender binding: the empty line goes in, as Postfix's cleanup puts it in (the line itself starts the body).
            _inHeader = false;
            AppendHeader(ReadOnlySequence<byte>.Empty);
            if (Problem != IncomingProblem.None)
            {
                return;
            }
        }

        AppendBody(line);
    }

    void AppendHeader(in ReadOnlySequence<byte> line)
    {
        var octets = line.Length + 2;
        if (_memory.Length + octets > _maxHeaderSection)
        {
            Fail(IncomingProblem.HeaderTooLarge);
            return;
        }

        if (!Reserve(octets))
        {
            Fail(IncomingProblem.NoMemory);
            return;
        }

        _memory.Append(line);
        _memory.Append(Crlf);
        HeaderLength = _memory.Length;
    }

    void AppendBody(in ReadOnlySequence<byte> line)
    {
        _bodyHash?.AppendLine(line);
        var octets = line.Length + 2;
        if (_scratch is null && _memory.Length + octets <= _memoryThreshold && Reserve(octets, _budget.Capacity / 4))
        {
            _memory.Append(line);
            _memory.Append(Crlf);
            return;
        }

        try
        {
            _scratch ??= _createScratch();
            foreach (var segment in line)
            {
                _scratch.Write(segment.Span);
                _scratchEightBit |= segment.Span.IndexOfAnyInRange((byte)0x80, (byte)0xFF) >= 0;
            }

            _scratch.Write(Crlf);
            _scratchLength += octets;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            Fail(IncomingProblem.StorageFailed);
        }
    }

    /// <summary>
    /// Whether the line still belongs to the header section: a field ("name:") or the continuation of one (a leading
    /// continuation line was refused before this is asked). Anything else (the empty line, an mbox "From " line, text)
    /// starts the body: the rule of <see cref="HeaderSection.Parse"/>.
    /// </summary>
    static bool ContinuesHeader(in ReadOnlySequence<byte> line) =>
        line.Length > 0 && (line.FirstSpan[0] is (byte)' ' or (byte)'\t' || HeaderSection.IsFieldStart(line));

    /// <param name="keep">Octets of the budget this reservation must leave free (bodies leave a quarter for header sections,
    /// so slow bodies cannot lock out every new message: a body that finds no room spills to disk instead).</param>
    bool Reserve(long octets, long keep = 0)
    {
        var needed = _memory.Length + octets - _reserved;
        if (needed <= 0)
        {
            return true;
        }

        var step = (needed + Step - 1) / Step * Step;
        if (!_budget.TryTake(step, keep))
        {
            return false;
        }

        _reserved += step;
        return true;
    }

    void Fail(IncomingProblem problem)
    {
        Problem = problem;
        Release();
    }

    /// <summary>Drops what was taken in (the transaction is refused) and keeps refusing further lines.</summary>
    public void Discard() => Fail(Problem == IncomingProblem.None ? IncomingProblem.StorageFailed : Problem);

    void Release()
    {
        _memory.Clear();
        if (_reserved > 0)
        {
            _budget.Return(_reserved);
            _reserved = 0;
        }

        _scratch?.Dispose();
        _scratch = null;
        _scratchLength = 0;
        HeaderLength = 0;
        _fieldStarts.Clear();
        _fieldsEnd = 0;
        _headers = null;
        if (_headerCopy > 0)
        {
            _budget.Return(_headerCopy);
            _headerCopy = 0;
        }
    }

    public void Dispose()
    {
        Release();
        _bodyHash?.Dispose();
    }
}
