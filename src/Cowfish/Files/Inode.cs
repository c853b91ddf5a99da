using System.Buffers.Binary;
using Cowfish.Format;

namespace Cowfish.Files;

/// <summary>What an inode is.</summary>
public enum FileType : byte
{
    File = 1,
    Directory = 2,
    Symlink = 3,
}

/// <summary>
/// An inode record as stored in a volume tree (layout in docs/format.md). A regular file's data
/// lives in its own extent tree, whose root the inode holds: cloning a whole file shares that root.
/// </summary>
internal sealed record Inode
{
    public const int FixedSize = 88;
    public const int MaxSymlinkTarget = 1024;

    public FileType Type { get; init; }
    public uint Mode { get; init; }
    public uint Uid { get; init; }
    public uint Gid { get; init; }
    public uint Nlink { get; init; }
    public ulong Size { get; init; }
    public long AtimeNs { get; init; }
    public long MtimeNs { get; init; }
    public long CtimeNs { get; init; }
    public long BtimeNs { get; init; }
    /// <summary>Root of the extent tree; none for a file that never had data.</summary>
    public BlockRef Extents { get; init; }
    /// <summary>Bumped by every change to the file's data (send uses it to spot changed files).</summary>
    public ulong DataVersion { get; init; }
    public byte[] SymlinkTarget { get; init; } = [];

    public byte[] Encode()
    {
        var v = new byte[FixedSize + SymlinkTarget.Length];
        v[0] = (byte)Type;
        BinaryPrimitives.WriteUInt32LittleEndian(v.AsSpan(4), Mode);
        BinaryPrimitives.WriteUInt32LittleEndian(v.AsSpan(8), Uid);
        BinaryPrimitives.WriteUInt32LittleEndian(v.AsSpan(12), Gid);
        BinaryPrimitives.WriteUInt32LittleEndian(v.AsSpan(16), Nlink);
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(24), Size);
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(32), AtimeNs);
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(40), MtimeNs);
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(48), CtimeNs);
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(56), BtimeNs);
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(64), Extents.Address);
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(72), Extents.Generation);
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(80), DataVersion);
        SymlinkTarget.CopyTo(v, FixedSize);
        return v;
    }

    public static Inode Decode(ReadOnlySpan<byte> v, ulong nodeAddress, ulong ino)
    {
        if (v.Length < FixedSize || v.Length > FixedSize + MaxSymlinkTarget)
            throw new CorruptionException(nodeAddress, $"inode {ino} record length", $"{FixedSize}..{FixedSize + MaxSymlinkTarget}", v.Length.ToString());
        var type = (FileType)v[0];
        if (type is not (FileType.File or FileType.Directory or FileType.Symlink))
            throw new CorruptionException(nodeAddress, $"inode {ino} type", "1, 2 or 3", v[0].ToString());
        var ext = new BlockRef(BinaryPrimitives.ReadUInt64LittleEndian(v[64..]), BinaryPrimitives.ReadUInt64LittleEndian(v[72..]));
        if (type != FileType.File && !ext.IsNone)
            throw new CorruptionException(nodeAddress, $"inode {ino} extent root", "none for a non-file", ext.ToString());
        return new Inode
        {
            Type = type,
            Mode = BinaryPrimitives.ReadUInt32LittleEndian(v[4..]),
            Uid = BinaryPrimitives.ReadUInt32LittleEndian(v[8..]),
            Gid = BinaryPrimitives.ReadUInt32LittleEndian(v[12..]),
            Nlink = BinaryPrimitives.ReadUInt32LittleEndian(v[16..]),
            Size = BinaryPrimitives.ReadUInt64LittleEndian(v[24..]),
            AtimeNs = BinaryPrimitives.ReadInt64LittleEndian(v[32..]),
            MtimeNs = BinaryPrimitives.ReadInt64LittleEndian(v[40..]),
            CtimeNs = BinaryPrimitives.ReadInt64LittleEndian(v[48..]),
            BtimeNs = BinaryPrimitives.ReadInt64LittleEndian(v[56..]),
            Extents = ext,
            DataVersion = BinaryPrimitives.ReadUInt64LittleEndian(v[80..]),
            SymlinkTarget = v[FixedSize..].ToArray(),
        };
    }

    /// <summary>The extent-tree root an inode value references, without decoding the rest.</summary>
    public static BlockRef ExtentRootOf(ReadOnlySpan<byte> v) =>
        v.Length >= FixedSize && v[0] == (byte)FileType.File
            ? new BlockRef(BinaryPrimitives.ReadUInt64LittleEndian(v[64..]), BinaryPrimitives.ReadUInt64LittleEndian(v[72..]))
            : BlockRef.None;

    public static long NowNs() => (DateTimeOffset.UtcNow - DateTimeOffset.UnixEpoch).Ticks * 100;
}
