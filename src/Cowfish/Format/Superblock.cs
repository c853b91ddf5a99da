using System.Buffers.Binary;

namespace Cowfish.Format;

/// <summary>
/// One superblock slot. The pool keeps two (blocks 0 and 1); a commit writes the slot that does
/// not hold the newest valid copy, so a torn superblock write always leaves the previous commit.
/// All fields fit in the first 512-byte sector. Layout in docs/format.md.
/// </summary>
internal sealed record Superblock
{
    public const int EncodedSize = 512;
    public const int CrcOffset = 508;

    public uint Version { get; init; } = Layout.FormatVersion;
    public Guid PoolId { get; init; }
    public ulong Generation { get; init; }
    public ulong TotalBlocks { get; init; }
    /// <summary>Root node of the catalog tree: tree roots and the drop queue.</summary>
    public BlockRef CatalogRoot { get; init; }
    /// <summary>Root node of the reference-count tree: blocks referenced more than once.</summary>
    public BlockRef RefCountRoot { get; init; }
    /// <summary>Root node of the space-map tree: page index to bitmap page.</summary>
    public BlockRef SpaceMapRoot { get; init; }
    public ulong NextTreeId { get; init; }
    public ulong NextDropSeq { get; init; }
    public long CreatedUnixSeconds { get; init; }

    public void Encode(Span<byte> dst)
    {
        dst[..EncodedSize].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(dst[0..], Magic.Superblock);
        BinaryPrimitives.WriteUInt32LittleEndian(dst[8..], Version);
        BinaryPrimitives.WriteUInt32LittleEndian(dst[12..], (uint)Layout.BlockSize);
        PoolId.TryWriteBytes(dst[16..32]);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[32..], Generation);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[40..], TotalBlocks);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[48..], CatalogRoot.Address);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[56..], RefCountRoot.Address);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[64..], SpaceMapRoot.Address);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[72..], NextTreeId);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[80..], NextDropSeq);
        BinaryPrimitives.WriteInt64LittleEndian(dst[88..], CreatedUnixSeconds);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[96..], CatalogRoot.Generation);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[104..], RefCountRoot.Generation);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[112..], SpaceMapRoot.Generation);
        BinaryPrimitives.WriteUInt32LittleEndian(dst[CrcOffset..], Crc32C.Compute(dst[..CrcOffset]));
    }

    /// <summary>Outcome of reading one slot.</summary>
    public enum SlotState { Valid, NotAPool, BadChecksum, BadVersion, BadGeometry }

    public static SlotState TryDecode(ReadOnlySpan<byte> src, out Superblock? sb, out string why)
    {
        sb = null;
        ulong magic = BinaryPrimitives.ReadUInt64LittleEndian(src);
        if (magic != Magic.Superblock) { why = $"magic 0x{magic:X16}"; return SlotState.NotAPool; }
        // The version comes before the checksum: a later format may place its checksum elsewhere.
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(src[8..]);
        if (version != Layout.FormatVersion) { why = $"version {version}"; return SlotState.BadVersion; }
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(src[CrcOffset..]);
        uint actual = Crc32C.Compute(src[..CrcOffset]);
        if (crc != actual) { why = $"checksum 0x{crc:X8}, computed 0x{actual:X8}"; return SlotState.BadChecksum; }
        uint bs = BinaryPrimitives.ReadUInt32LittleEndian(src[12..]);
        var s = new Superblock
        {
            Version = version,
            PoolId = new Guid(src[16..32]),
            Generation = BinaryPrimitives.ReadUInt64LittleEndian(src[32..]),
            TotalBlocks = BinaryPrimitives.ReadUInt64LittleEndian(src[40..]),
            CatalogRoot = new BlockRef(BinaryPrimitives.ReadUInt64LittleEndian(src[48..]), BinaryPrimitives.ReadUInt64LittleEndian(src[96..])),
            RefCountRoot = new BlockRef(BinaryPrimitives.ReadUInt64LittleEndian(src[56..]), BinaryPrimitives.ReadUInt64LittleEndian(src[104..])),
            SpaceMapRoot = new BlockRef(BinaryPrimitives.ReadUInt64LittleEndian(src[64..]), BinaryPrimitives.ReadUInt64LittleEndian(src[112..])),
            NextTreeId = BinaryPrimitives.ReadUInt64LittleEndian(src[72..]),
            NextDropSeq = BinaryPrimitives.ReadUInt64LittleEndian(src[80..]),
            CreatedUnixSeconds = BinaryPrimitives.ReadInt64LittleEndian(src[88..]),
        };
        if (bs != Layout.BlockSize || s.TotalBlocks < Layout.FirstDataBlock || s.TotalBlocks > Layout.MaxBlocks
            || !Valid(s.CatalogRoot, s) || !Valid(s.RefCountRoot, s) || !Valid(s.SpaceMapRoot, s))
        {
            why = $"block size {bs}, total blocks {s.TotalBlocks}, roots {s.CatalogRoot}/{s.RefCountRoot}/{s.SpaceMapRoot}";
            return SlotState.BadGeometry;
        }
        sb = s;
        why = "";
        return SlotState.Valid;
    }

    private static bool Valid(BlockRef r, Superblock s) =>
        r.Address >= Layout.FirstDataBlock && r.Address < s.TotalBlocks && r.Generation <= s.Generation;
}
