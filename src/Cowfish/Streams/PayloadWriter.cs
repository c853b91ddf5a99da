using System.Buffers.Binary;

namespace Cowfish.Streams;

/// <summary>Appends little-endian fields to a record payload.</summary>
internal ref struct PayloadWriter(Span<byte> payload)
{
    private readonly Span<byte> _p = payload;

    public int Length { get; private set; }

    public void U8(byte v) { _p[Length] = v; Length += 1; }
    public void U16(ushort v) { BinaryPrimitives.WriteUInt16LittleEndian(_p[Length..], v); Length += 2; }
    public void U32(uint v) { BinaryPrimitives.WriteUInt32LittleEndian(_p[Length..], v); Length += 4; }
    public void U64(ulong v) { BinaryPrimitives.WriteUInt64LittleEndian(_p[Length..], v); Length += 8; }
    public void I64(long v) { BinaryPrimitives.WriteInt64LittleEndian(_p[Length..], v); Length += 8; }
    public void Uuid(Guid g) { g.TryWriteBytes(_p.Slice(Length, 16)); Length += 16; }
    public void Bytes(ReadOnlySpan<byte> b) { b.CopyTo(_p[Length..]); Length += b.Length; }

    /// <summary>A name: u8 length, then the bytes.</summary>
    public void Name(ReadOnlySpan<byte> b) { U8((byte)b.Length); Bytes(b); }

    /// <summary>Room for <paramref name="n"/> bytes filled by the caller (file data read straight into the record).</summary>
    public Span<byte> Reserve(int n) { var s = _p.Slice(Length, n); Length += n; return s; }
}
