using System.Buffers;
using System.Buffers.Binary;
using Cowfish.Format;

namespace Cowfish.Streams;

/// <summary>
/// Frames records onto a stream: numbers them, checksums each one, and keeps the running CRC32C and
/// length of the logical stream for the end record. When resuming, it still frames every record (so
/// the CRC runs over the same bytes) but writes only those from the resume point on, after a fresh
/// header and a RESUME record; at the resume point it checks that the bytes skipped are exactly the
/// ones the receiver already has.
/// </summary>
internal sealed class RecordWriter : IDisposable
{
    private readonly Stream _out;
    private readonly ResumePoint? _resume;
    private readonly byte[] _buf = ArrayPool<byte>.Shared.Rent(StreamFormat.RecordHeaderSize + StreamFormat.MaxPayload);
    private uint _crc = 0xFFFFFFFFu; // running CRC32C state of the logical stream
    private byte[]? _beginPayload;
    private bool _started;

    public RecordWriter(Stream output, ResumePoint? resume)
    {
        _out = output;
        _resume = resume;
        Span<byte> header = stackalloc byte[StreamFormat.HeaderSize];
        WriteHeader(header);
        _crc = Crc32C.Update(_crc, header);
        Offset = StreamFormat.HeaderSize;
        if (resume is null) Put(header);
    }

    /// <summary>Bytes of the logical stream framed so far (sent or skipped).</summary>
    public long Offset { get; private set; }
    /// <summary>Sequence number of the next record.</summary>
    public ulong Sequence { get; private set; }
    /// <summary>Bytes actually written to the output.</summary>
    public long Written { get; private set; }
    /// <summary>CRC32C of the logical stream so far.</summary>
    public uint Crc => ~_crc;
    /// <summary>Whether the next record will only be framed, not written (it lies before the resume point).</summary>
    public bool Skipping => _resume is { } r && Sequence < r.Sequence;

    /// <summary>The payload area of the next record.</summary>
    public Span<byte> Payload => _buf.AsSpan(StreamFormat.RecordHeaderSize, StreamFormat.MaxPayload);

    private static void WriteHeader(Span<byte> h)
    {
        StreamFormat.Magic.CopyTo(h);
        BinaryPrimitives.WriteUInt32LittleEndian(h[8..], StreamFormat.Version);
        BinaryPrimitives.WriteUInt32LittleEndian(h[12..], 0);
    }

    /// <summary>Frames the record whose payload is the first <paramref name="length"/> bytes of <see cref="Payload"/>.</summary>
    public void Emit(RecordType type, int length)
    {
        System.Diagnostics.Debug.Assert(length >= 0 && length <= StreamFormat.MaxPayload, "payload over the bound");
        if (_resume is { } r && Sequence == r.Sequence && !_started) StartResumed(r);
        var record = _buf.AsSpan(0, StreamFormat.RecordHeaderSize + length);
        Frame(record, type, Sequence, length);
        if (type == RecordType.Begin) _beginPayload = record[StreamFormat.RecordHeaderSize..].ToArray();
        _crc = Crc32C.Update(_crc, record);
        Offset += record.Length;
        if (!Skipping) Put(record);
        Sequence++;
    }

    /// <summary>
    /// Frames, without writing it, a record before the resume point whose payload is
    /// <paramref name="fields"/> followed by blocks known only by their CRC32Cs: the record's CRC and
    /// the running CRC of the stream are extended block by block (<see cref="Crc32CBlocks"/>), so a
    /// resumed send does not read the data it skips.
    /// </summary>
    public void EmitSkipped(RecordType type, ReadOnlySpan<byte> fields, ReadOnlySpan<uint> blockCrcs)
    {
        System.Diagnostics.Debug.Assert(Skipping, "only records before the resume point can be framed from their CRCs");
        int length = fields.Length + blockCrcs.Length * StreamFormat.BlockSize;
        Span<byte> head = stackalloc byte[StreamFormat.RecordHeaderSize];
        BinaryPrimitives.WriteUInt32LittleEndian(head, (uint)length);
        BinaryPrimitives.WriteUInt16LittleEndian(head[4..], (ushort)type);
        BinaryPrimitives.WriteUInt16LittleEndian(head[6..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(head[8..], Sequence);
        BinaryPrimitives.WriteUInt32LittleEndian(head[StreamFormat.CrcOffset..], 0);
        uint record = Crc32C.Update(Crc32C.Update(0xFFFFFFFFu, head), fields);
        foreach (uint c in blockCrcs) record = Crc32CBlocks.AppendToState(record, c);
        BinaryPrimitives.WriteUInt32LittleEndian(head[StreamFormat.CrcOffset..], ~record);
        _crc = Crc32C.Update(Crc32C.Update(_crc, head), fields);
        foreach (uint c in blockCrcs) _crc = Crc32CBlocks.AppendToState(_crc, c);
        Offset += StreamFormat.RecordHeaderSize + length;
        Sequence++;
    }

    private static void Frame(Span<byte> record, RecordType type, ulong seq, int length)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(record, (uint)length);
        BinaryPrimitives.WriteUInt16LittleEndian(record[4..], (ushort)type);
        BinaryPrimitives.WriteUInt16LittleEndian(record[6..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(record[8..], seq);
        BinaryPrimitives.WriteUInt32LittleEndian(record[StreamFormat.CrcOffset..], 0);
        BinaryPrimitives.WriteUInt32LittleEndian(record[StreamFormat.CrcOffset..], Crc32C.Compute(record));
    }

    /// <summary>Writes the END record: the logical length before it, its own sequence number, and the CRC of everything before it.</summary>
    public void End()
    {
        if (_resume is { } r && r.Sequence > Sequence)
            throw new InvalidRequestException($"the resume token points at record {r.Sequence}, past the end of this stream ({Sequence + 1} records)");
        long at = Offset;
        uint crc = Crc;
        var p = Payload;
        BinaryPrimitives.WriteUInt64LittleEndian(p, (ulong)at);
        BinaryPrimitives.WriteUInt64LittleEndian(p[8..], Sequence);
        BinaryPrimitives.WriteUInt32LittleEndian(p[16..], crc);
        Emit(RecordType.End, 20);
        _out.Flush();
    }

    /// <summary>
    /// The first record to send after the resume point: the skipped bytes must be the ones the
    /// receiver holds, or the stream is not the one that was interrupted.
    /// </summary>
    private void StartResumed(ResumePoint r)
    {
        if (Offset != r.Offset || Crc != r.Crc)
            throw new InvalidRequestException($"the resume token does not match this stream (at record {r.Sequence}: offset {Offset}, CRC 0x{Crc:X8}; token: offset {r.Offset}, CRC 0x{r.Crc:X8}); abort the receive and send again");
        _started = true;
        Span<byte> header = stackalloc byte[StreamFormat.HeaderSize];
        WriteHeader(header);
        Put(header);
        var begin = _beginPayload ?? throw new InvalidOperationException("resuming before the begin record");
        var record = new byte[StreamFormat.RecordHeaderSize + begin.Length + 20];
        var p = record.AsSpan(StreamFormat.RecordHeaderSize);
        begin.CopyTo(p);
        BinaryPrimitives.WriteUInt64LittleEndian(p[begin.Length..], r.Sequence);
        BinaryPrimitives.WriteUInt64LittleEndian(p[(begin.Length + 8)..], (ulong)r.Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(p[(begin.Length + 16)..], r.Crc);
        Frame(record, RecordType.Resume, 0, record.Length - StreamFormat.RecordHeaderSize);
        Put(record);
    }

    private void Put(ReadOnlySpan<byte> bytes)
    {
        _out.Write(bytes);
        Written += bytes.Length;
    }

    public void Dispose() => ArrayPool<byte>.Shared.Return(_buf);
}

/// <summary>Where an interrupted stream is to go on: the next record's sequence number, the logical offset and the CRC of the bytes before it.</summary>
internal readonly record struct ResumePoint(ulong Sequence, long Offset, uint Crc);
