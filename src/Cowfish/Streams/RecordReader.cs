using System.Buffers;
using System.Buffers.Binary;
using Cowfish.Format;

namespace Cowfish.Streams;

/// <summary>
/// Reads and validates the framing of a send stream: the header, then one record at a time. Every
/// length is checked against its bound before anything is read or allocated for it; the record's
/// CRC32C, its type and its reserved flags are checked before the payload is handed out. Errors are
/// <see cref="InvalidStreamException"/>s naming the offset (in this input) of the record at fault.
/// </summary>
internal sealed class RecordReader : IDisposable
{
    private readonly Stream _in;
    private readonly byte[] _buf = ArrayPool<byte>.Shared.Rent(StreamFormat.RecordHeaderSize + StreamFormat.MaxPayload);
    private int _length;

    // Small records are read as a 20-byte header and a payload: an unbuffered input (stdin, a pipe)
    // would cost two system calls per record. The wrapper is never disposed, so the caller's stream stays open.
    public RecordReader(Stream input) =>
        _in = input is MemoryStream or BufferedStream or FileStream ? input : new BufferedStream(input, 1 << 16);

    /// <summary>Bytes read from the input so far.</summary>
    public long Position { get; private set; }

    /// <summary>The current record: type, sequence number, offset in the input, payload.</summary>
    public RecordType Type { get; private set; }
    public ulong Sequence { get; private set; }
    public long RecordOffset { get; private set; }
    public ReadOnlySpan<byte> Payload => _buf.AsSpan(StreamFormat.RecordHeaderSize, _length);
    /// <summary>The whole current record, header and payload, as it was read.</summary>
    public ReadOnlySpan<byte> Raw => _buf.AsSpan(0, StreamFormat.RecordHeaderSize + _length);

    /// <summary>Reads and checks the stream header; returns its bytes (they count in the end record's CRC).</summary>
    public byte[] ReadHeader()
    {
        var h = new byte[StreamFormat.HeaderSize];
        Fill(h, h.Length, "stream header");
        if (!h.AsSpan(0, 8).SequenceEqual(StreamFormat.Magic))
            throw new InvalidStreamException(0, "not a Cowfish send stream (bad magic)");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(8));
        if (version != StreamFormat.Version)
            throw new InvalidStreamException(8, $"stream format version {version} is not supported (this build reads version {StreamFormat.Version})");
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(12));
        if (flags != 0) throw new InvalidStreamException(12, $"unknown header flags 0x{flags:X8}");
        return h;
    }

    /// <summary>Reads the next record; throws if the input ends first.</summary>
    public void Next()
    {
        RecordOffset = Position;
        var head = _buf.AsSpan(0, StreamFormat.RecordHeaderSize);
        Fill(_buf, StreamFormat.RecordHeaderSize, "record header");
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(head);
        ushort type = BinaryPrimitives.ReadUInt16LittleEndian(head[4..]);
        ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(head[6..]);
        // The length is checked before a byte of the payload is read.
        if (length > StreamFormat.MaxPayload)
            throw new InvalidStreamException(RecordOffset, $"record length {length} is over the limit of {StreamFormat.MaxPayload}");
        _length = 0;
        Fill(_buf.AsSpan(StreamFormat.RecordHeaderSize, (int)length), (int)length, "record payload");
        _length = (int)length;
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(head[StreamFormat.CrcOffset..]);
        BinaryPrimitives.WriteUInt32LittleEndian(head[StreamFormat.CrcOffset..], 0);
        uint actual = Crc32C.Compute(Raw);
        BinaryPrimitives.WriteUInt32LittleEndian(head[StreamFormat.CrcOffset..], stored);
        if (actual != stored)
            throw new InvalidStreamException(RecordOffset, $"record checksum mismatch: stored 0x{stored:X8}, computed 0x{actual:X8}");
        if (!Enum.IsDefined((RecordType)type)) throw new InvalidStreamException(RecordOffset, $"unknown record type {type}");
        if (flags != 0) throw new InvalidStreamException(RecordOffset, $"unknown record flags 0x{flags:X4}");
        Type = (RecordType)type;
        Sequence = BinaryPrimitives.ReadUInt64LittleEndian(head[8..]);
    }

    /// <summary>True if the input has nothing after the current record.</summary>
    public bool AtEnd()
    {
        Span<byte> one = stackalloc byte[1];
        return _in.Read(one) == 0;
    }

    private void Fill(byte[] buffer, int count, string what) => Fill(buffer.AsSpan(0, count), count, what);

    private void Fill(Span<byte> dst, int count, string what)
    {
        int got = 0;
        while (got < count)
        {
            int n = _in.Read(dst[got..count]);
            if (n == 0)
                throw new InvalidStreamException(Position, $"truncated: the input ends {got} bytes into a {what} of {count} bytes");
            got += n;
            Position += n;
        }
    }

    public void Dispose() => ArrayPool<byte>.Shared.Return(_buf);
}
