using System.Buffers.Binary;

namespace Cowfish.Format;

/// <summary>
/// The 32-byte header shared by every metadata block:
/// magic u32, crc32c u32 (of the whole block with this field zero), own address u64, generation u64,
/// and 8 bytes the block kind uses for itself.
/// </summary>
internal static class BlockHeader
{
    public const int MagicOffset = 0, CrcOffset = 4, AddressOffset = 8, GenerationOffset = 16, KindSpecificOffset = 24;

    public static void Seal(Span<byte> block, uint magic, ulong address, ulong generation)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(block[MagicOffset..], magic);
        BinaryPrimitives.WriteUInt64LittleEndian(block[AddressOffset..], address);
        BinaryPrimitives.WriteUInt64LittleEndian(block[GenerationOffset..], generation);
        BinaryPrimitives.WriteUInt32LittleEndian(block[CrcOffset..], 0);
        BinaryPrimitives.WriteUInt32LittleEndian(block[CrcOffset..], Crc32C.Compute(block));
    }

    /// <summary>Throws <see cref="CorruptionException"/> unless the block carries the magic, its own address and a good checksum.</summary>
    public static ulong Verify(ReadOnlySpan<byte> block, uint magic, ulong address, string what)
    {
        uint m = BinaryPrimitives.ReadUInt32LittleEndian(block[MagicOffset..]);
        if (m != magic)
            throw new CorruptionException(address, $"{what} magic", $"0x{magic:X8}", $"0x{m:X8}");
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(block[CrcOffset..]);
        uint actual = ChecksumWithZeroedField(block);
        if (stored != actual)
            throw new CorruptionException(address, $"{what} checksum", $"0x{actual:X8}", $"0x{stored:X8}");
        ulong self = BinaryPrimitives.ReadUInt64LittleEndian(block[AddressOffset..]);
        if (self != address)
            throw new CorruptionException(address, $"{what} self address", address.ToString(), self.ToString());
        return BinaryPrimitives.ReadUInt64LittleEndian(block[GenerationOffset..]);
    }

    private static uint ChecksumWithZeroedField(ReadOnlySpan<byte> block)
    {
        uint c = Crc32C.Update(0xFFFFFFFFu, block[..CrcOffset]);
        c = Crc32C.Update(c, stackalloc byte[4]);
        c = Crc32C.Update(c, block[(CrcOffset + 4)..]);
        return ~c;
    }
}
