namespace Cowfish.Format;

/// <summary>Sizes and fixed positions of format version 1. See docs/format.md.</summary>
internal static class Layout
{
    public const uint FormatVersion = 1;
    public const int BlockSize = 4096;
    public const int BlockShift = 12;

    /// <summary>Blocks 0 and 1 hold the two superblock slots.</summary>
    public const ulong SuperblockSlots = 2;

    /// <summary>The first block the allocator may hand out.</summary>
    public const ulong FirstDataBlock = SuperblockSlots;

    /// <summary>Bytes of the common header at the start of every metadata block.</summary>
    public const int BlockHeaderSize = 32;

    /// <summary>Bitmap bytes in one space-map page, after its header.</summary>
    public const int BitmapBytesPerPage = BlockSize - BlockHeaderSize;
    public const ulong BitsPerPage = BitmapBytesPerPage * 8UL;

    /// <summary>Largest key a tree accepts.</summary>
    public const int MaxKeySize = 512;

    /// <summary>Largest value a tree accepts; with the key limit, two entries always fit in a leaf.</summary>
    public const int MaxValueSize = 1500;

    /// <summary>No tree is deeper than this; a deeper pointer chain on disk is corruption.</summary>
    public const int MaxTreeDepth = 24;

    /// <summary>Largest pool: 2^36 blocks (256 TiB), so that in-memory bitmaps stay indexable.</summary>
    public const ulong MaxBlocks = 1UL << 36;

    public static long ByteOffset(ulong block) => (long)(block << BlockShift);
}

/// <summary>Magic numbers at offset 0 of each kind of block (little-endian ASCII).</summary>
internal static class Magic
{
    /// <summary>"CowfishP" as a little-endian u64, at offset 0 of a superblock.</summary>
    public const ulong Superblock = 0x5068736966776F43UL;
    /// <summary>"CFND": a B+tree node.</summary>
    public const uint Node = 0x444E4643u;
    /// <summary>"CFBM": a space-map bitmap page.</summary>
    public const uint Bitmap = 0x4D424643u;
}
