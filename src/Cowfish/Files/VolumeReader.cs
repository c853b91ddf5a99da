using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Cowfish.Format;
using Cowfish.Trees;

namespace Cowfish.Files;

/// <summary>
/// Read access to one volume tree: inodes, directories, extended attributes and file data.
/// Works over a pinned read transaction or over the writer's own view.
/// </summary>
internal class VolumeReader
{
    public const ulong RootIno = 1;
    public const int BlockSize = Layout.BlockSize;

    protected readonly TreeReader Tree;
    protected readonly NodeStore Store;

    public VolumeReader(VolumeRecord record, TreeReader tree, NodeStore store)
    {
        Record = record;
        Tree = tree;
        Store = store;
    }

    public VolumeRecord Record { get; }

    public bool TryGetInode(ulong ino, out Inode inode)
    {
        inode = null!;
        if (!Tree.TryGet(FileKeys.InodeKey(ino), out var v)) return false;
        inode = Inode.Decode(v, 0, ino);
        return true;
    }

    public Inode GetInode(ulong ino)
    {
        // Missing means removed by a concurrent operation (check reports entries that point nowhere).
        if (!TryGetInode(ino, out var inode)) throw new NotFoundException($"inode {ino} of volume '{Record.Name}' no longer exists");
        return inode;
    }

    public bool TryLookup(ulong dir, byte[] name, out ulong ino, out FileType type)
    {
        ino = 0;
        type = 0;
        if (!Tree.TryGet(FileKeys.DirEntryKey(dir, name), out var v)) return false;
        if (v.Length != 9) throw new CorruptionException(0, "directory entry length", "9", v.Length.ToString());
        ino = BinaryPrimitives.ReadUInt64LittleEndian(v);
        type = (FileType)v[8];
        return true;
    }

    /// <summary>The inode a path names. Pool paths are literal: symlinks are not followed.</summary>
    public ulong Resolve(PoolPath path)
    {
        ulong ino = RootIno;
        for (int i = 0; i < path.Components.Length; i++)
        {
            var name = FileKeys.Name(path.Components[i]);
            if (!TryLookup(ino, name, out ulong child, out var type))
                throw new NotFoundException($"{path}: no such file or directory");
            if (i < path.Components.Length - 1 && type != FileType.Directory)
                throw new InvalidRequestException($"{path}: '{path.Components[i]}' is not a directory");
            ino = child;
        }
        return ino;
    }

    public bool TryResolve(PoolPath path, out ulong ino)
    {
        try { ino = Resolve(path); return true; }
        catch (NotFoundException) { ino = 0; return false; }
    }

    public IEnumerable<DirectoryEntry> List(ulong dir)
    {
        var (from, to) = FileKeys.DirRange(dir);
        foreach (var kv in Tree.Scan(from, to))
        {
            if (kv.Value.Length != 9) throw new CorruptionException(0, "directory entry length", "9", kv.Value.Length.ToString());
            yield return new DirectoryEntry(Encoding.UTF8.GetString(FileKeys.NameOf(kv.Key)), BinaryPrimitives.ReadUInt64LittleEndian(kv.Value), (FileType)kv.Value[8]);
        }
    }

    public IEnumerable<(string Name, byte[] Value)> Xattrs(ulong ino)
    {
        var (from, to) = FileKeys.XattrRange(ino);
        foreach (var kv in Tree.Scan(from, to)) yield return (Encoding.UTF8.GetString(FileKeys.NameOf(kv.Key)), kv.Value);
    }

    public bool TryGetXattr(ulong ino, byte[] name, out byte[] value) => Tree.TryGet(FileKeys.XattrKey(ino, name), out value);

    public IEnumerable<(ulong Parent, byte[] Name)> Parents(ulong ino)
    {
        var (from, to) = FileKeys.InodeRefRange(ino);
        foreach (var kv in Tree.Scan(from, to)) yield return FileKeys.ParseInodeRef(kv.Key);
    }

    public TreeReader? Extents(Inode inode) => inode.Extents.IsNone ? null : new TreeReader(Store, inode.Extents, TreeKind.FileExtents);

    /// <summary>
    /// Reads file data at <paramref name="offset"/>; returns the bytes read (short at end of file).
    /// Every block read from disk is checked against its CRC32C; holes and unwritten extents read as zeros.
    /// </summary>
    public int ReadData(Inode inode, ulong ino, long offset, Span<byte> buffer)
    {
        if (inode.Type != FileType.File) throw new InvalidRequestException($"inode {ino} is not a regular file");
        if (offset < 0) throw new InvalidRequestException("negative offset");
        if ((ulong)offset >= inode.Size || buffer.IsEmpty) return 0;
        int n = (int)Math.Min((ulong)buffer.Length, inode.Size - (ulong)offset);
        var dst = buffer[..n];
        var tree = Extents(inode);
        if (tree is null) { dst.Clear(); return n; }
        ulong b0 = (ulong)offset / BlockSize, b1 = ((ulong)offset + (ulong)n + BlockSize - 1) / BlockSize;
        long filled = 0; // dst[..filled] is final; holes are cleared as the extents go by
        foreach (var (start, e) in ExtentMap.Overlapping(tree, b0, b1))
        {
            if (e.Unwritten) continue;
            ulong from = Math.Max(start, b0), to = Math.Min(start + e.Count, b1);
            long at = (long)(from * BlockSize) - offset;
            if (at > filled) dst[(int)filled..(int)at].Clear();
            ReadBlocks(e, (uint)(from - start), (uint)(to - from), at, dst);
            filled = Math.Min(n, (long)(to * BlockSize) - offset);
        }
        if (filled < n) dst[(int)filled..].Clear();
        return n;
    }

    /// <summary>
    /// Reads <paramref name="count"/> blocks of an extent record into dst at byte <paramref name="dstOffset"/>
    /// (negative, or past the end, for the parts that fall outside it), checking every block's CRC32C.
    /// Whole blocks inside dst are read straight into it, up to 1 MiB per read; the (at most two)
    /// partial blocks at its edges go through a bounce block.
    /// </summary>
    private void ReadBlocks(Extent e, uint first, uint count, long dstOffset, Span<byte> dst)
    {
        const int Batch = 256;
        byte[]? rented = null;
        try
        {
            uint i = 0;
            while (i < count)
            {
                long at = dstOffset + (long)i * BlockSize;
                ulong disk = e.DiskBlock(first + i);
                if (at >= 0 && at + BlockSize <= dst.Length)
                {
                    // A run of whole blocks: straight into the caller's buffer.
                    uint k = 1;
                    while (k < Batch && i + k < count && at + (long)(k + 1) * BlockSize <= dst.Length) k++;
                    var span = dst.Slice((int)at, (int)k * BlockSize);
                    Store.Device.Read(Layout.ByteOffset(disk), span);
                    for (uint j = 0; j < k; j++) Verify(span.Slice((int)j * BlockSize, BlockSize), e.Crcs[first + i + j], disk + j);
                    i += k;
                    continue;
                }
                rented ??= ArrayPool<byte>.Shared.Rent(BlockSize);
                var block = rented.AsSpan(0, BlockSize);
                Store.Device.Read(Layout.ByteOffset(disk), block);
                Verify(block, e.Crcs[first + i], disk);
                int skip = at < 0 ? (int)-at : 0;
                long startAt = Math.Max(at, 0);
                int len = (int)Math.Min(BlockSize - skip, dst.Length - startAt);
                if (len > 0) block.Slice(skip, len).CopyTo(dst[(int)startAt..]);
                i++;
            }
        }
        finally
        {
            if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    internal static void Verify(ReadOnlySpan<byte> block, uint want, ulong disk)
    {
        uint got = Crc32C.Compute(block);
        if (got != want) throw new CorruptionException(disk, "data block checksum", $"0x{want:X8}", $"0x{got:X8}");
    }
}
