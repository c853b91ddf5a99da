using System.Buffers.Binary;

namespace Cowfish.Streams;

/// <summary>Decodes the fields of one payload, checking that each fits before reading it.</summary>
internal ref struct PayloadReader(ReadOnlySpan<byte> payload, long recordOffset)
{
    private readonly ReadOnlySpan<byte> _p = payload;
    private int _at;

    public readonly long RecordOffset => recordOffset;
    public readonly int Remaining => _p.Length - _at;

    private ReadOnlySpan<byte> Take(int n, string field)
    {
        if (n < 0 || n > _p.Length - _at)
            throw new InvalidStreamException(recordOffset, $"record too short for its {field} ({n} bytes needed, {_p.Length - _at} left)");
        var s = _p.Slice(_at, n);
        _at += n;
        return s;
    }

    public byte U8(string field) => Take(1, field)[0];
    public ushort U16(string field) => BinaryPrimitives.ReadUInt16LittleEndian(Take(2, field));
    public uint U32(string field) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, field));
    public ulong U64(string field) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, field));
    public long I64(string field) => BinaryPrimitives.ReadInt64LittleEndian(Take(8, field));
    public Guid Uuid(string field) => new(Take(16, field));
    public ReadOnlySpan<byte> Bytes(int n, string field) => Take(n, field);

    /// <summary>A name: a u8 length (1..255) and that many bytes, no '/' and no NUL, not "." or "..".</summary>
    public byte[] Name(string field)
    {
        int n = U8(field + " length");
        var b = Take(n, field);
        if (n == 0 || b.Contains((byte)'/') || b.Contains((byte)0) || b.SequenceEqual("."u8) || b.SequenceEqual(".."u8))
            throw new InvalidStreamException(recordOffset, $"invalid {field}");
        return b.ToArray();
    }

    /// <summary>Every byte of the payload must have been used.</summary>
    public readonly void End(string record)
    {
        if (_at != _p.Length) throw new InvalidStreamException(recordOffset, $"{_p.Length - _at} unexpected bytes at the end of a {record} record");
    }
}
