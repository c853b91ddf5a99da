using System.Buffers.Binary;
using Cowfish.Files;
using Cowfish.Transactions;
using Cowfish.Trees;

namespace Cowfish.Streams;

/// <summary>
/// Applies received commands to the partial volume inside one write transaction. Inode numbers are
/// the sender's, so each command changes the keys the sender's change did. Every command is checked
/// against the volume as it stands (the inode it names exists and has the right type, the entry it
/// removes exists, a clone's source holds blocks with the checksums the stream expects); a command
/// that does not fit is an <see cref="InvalidStreamException"/> at its record's offset.
/// </summary>
/// <remarks>
/// File data commands come grouped by file, so the file's extent tree stays open across them and is
/// written once, when another command comes or the batch ends (<see cref="FlushOpen"/>).
/// </remarks>
internal sealed class Applier(WriteTransaction tx, VolumeRecord partial)
{
    private readonly VolumeWriter _v = new(partial, tx);
    private readonly TreeWriter _tree = tx.TreeWriterFor(partial.Tree);
    private ulong _openIno;
    private Inode? _openInode;
    private TreeWriter? _openTree;

    private ITreeSpace Space => tx.SharedSpace;

    public void Apply(ReceiveCommand c)
    {
        switch (c.Type)
        {
            case RecordType.VolumeHeader:
            {
                FlushOpen();
                var v = new byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(v, c.NextIno);
                _tree.Put(FileKeys.HeaderKey, v);
                break;
            }
            case RecordType.Inode: PutInode(c); break;
            case RecordType.RemoveInode:
                FlushOpen();
                // Deleting the value releases the inode's extent tree, as an unlink of the last name does.
                if (!_tree.Delete(FileKeys.InodeKey(c.Ino))) throw Bad(c, $"removes inode {c.Ino}, which does not exist");
                break;
            case RecordType.Link: Link(c); break;
            case RecordType.Unlink:
            {
                FlushOpen();
                if (!_v.TryLookup(c.Dir, c.Name, out ulong ino, out _)) throw Bad(c, $"removes an entry of directory {c.Dir} that does not exist");
                _tree.Delete(FileKeys.DirEntryKey(c.Dir, c.Name));
                _tree.Delete(FileKeys.InodeRefKey(ino, c.Dir, c.Name));
                break;
            }
            case RecordType.SetXattr:
                FlushOpen();
                Need(c, c.Ino);
                _tree.Put(FileKeys.XattrKey(c.Ino, c.Name), c.Value);
                break;
            case RecordType.RemoveXattr:
                FlushOpen();
                if (!_tree.Delete(FileKeys.XattrKey(c.Ino, c.Name))) throw Bad(c, $"removes an extended attribute of inode {c.Ino} that does not exist");
                break;
            case RecordType.Write:
            {
                var t = OpenFile(c);
                ExtentMap.Replace(t, Space, c.Block, c.Block + c.Count, [(c.Block, new Extent(c.Disk, (uint)c.Count, 0, (uint)c.Count, false, c.Crcs))]);
                break;
            }
            case RecordType.Clone: Clone(c); break;
            case RecordType.Punch:
            {
                var t = OpenFile(c);
                ExtentMap.Replace(t, Space, c.Block, Math.Min(c.Block + c.Count, StreamFormat.MaxFileBlocks), []);
                break;
            }
            case RecordType.Prealloc:
            {
                var t = OpenFile(c);
                ulong disk = tx.Pool.Space.Allocate((uint)c.Count);
                ExtentMap.Replace(t, Space, c.Block, c.Block + c.Count, [(c.Block, new Extent(disk, (uint)c.Count, 0, (uint)c.Count, true, []))]);
                break;
            }
            case RecordType.CloneFile: CloneFile(c); break;
            default: throw Bad(c, $"a {c.Type} record cannot be applied");
        }
    }

    private static InvalidStreamException Bad(ReceiveCommand c, string what) => new(c.Offset, $"{c.Type} {what}");

    private Inode Need(ReceiveCommand c, ulong ino, FileType? type = null)
    {
        if (_openTree is not null && ino == _openIno) return _openInode!;
        if (!_v.TryGetInode(ino, out var inode)) throw Bad(c, $"names inode {ino}, which does not exist");
        if (type is { } t && inode.Type != t) throw Bad(c, $"names inode {ino}, a {inode.Type}, where a {t} is needed");
        return inode;
    }

    private void PutInode(ReceiveCommand c)
    {
        FlushOpen();
        var incoming = c.Inode!;
        var extents = Format.BlockRef.None;
        if (_v.TryGetInode(c.Ino, out var existing))
        {
            if (existing.Type == FileType.File && incoming.Type == FileType.File) extents = existing.Extents;
            else if (!existing.Extents.IsNone)
            {
                // Make the leaf private before giving up the root (a parent is shadowed before its child).
                _v.PutInode(c.Ino, existing);
                Space.ReleaseSubtree(existing.Extents);
            }
        }
        _v.PutInode(c.Ino, incoming with { Extents = extents });
    }

    private void Link(ReceiveCommand c)
    {
        FlushOpen();
        Need(c, c.Dir, FileType.Directory);
        Need(c, c.Ino, c.FileType);
        var key = FileKeys.DirEntryKey(c.Dir, c.Name);
        if (_v.TryLookup(c.Dir, c.Name, out ulong old, out _)) _tree.Delete(FileKeys.InodeRefKey(old, c.Dir, c.Name));
        var v = new byte[9];
        BinaryPrimitives.WriteUInt64LittleEndian(v, c.Ino);
        v[8] = (byte)c.FileType;
        _tree.Put(key, v);
        _tree.Put(FileKeys.InodeRefKey(c.Ino, c.Dir, c.Name), []);
    }

    /// <summary>The extent tree of a file, kept open for the data commands that follow.</summary>
    private TreeWriter OpenFile(ReceiveCommand c)
    {
        if (_openTree is not null && _openIno == c.Ino) return _openTree;
        FlushOpen();
        var inode = Need(c, c.Ino, FileType.File);
        _openIno = c.Ino;
        _openInode = inode;
        _openTree = _v.OpenExtents(c.Ino, inode);
        return _openTree;
    }

    /// <summary>Writes the open file's extent tree and stores its root in the inode (size and times come from the INODE record).</summary>
    public void FlushOpen()
    {
        if (_openTree is null) return;
        _v.PutInode(_openIno, VolumeWriter.SaveExtents(_openTree, _openInode!));
        _openTree = null;
        _openInode = null;
    }

    public void Finish() => FlushOpen();

    /// <summary>
    /// Shares blocks the receiver already has: the source range must be written data whose
    /// checksums are the ones the stream carries, so a clone can never make up content.
    /// </summary>
    private void Clone(ReceiveCommand c)
    {
        TreeReader? src;
        if (_openTree is not null && _openIno == c.SrcIno) src = _openTree;
        else
        {
            var s = Need(c, c.SrcIno, FileType.File);
            src = _v.Extents(s);
        }
        if (src is null) throw Bad(c, $"clones from inode {c.SrcIno}, which has no data");
        var records = ExtentMap.Overlapping(src, c.SrcBlock, c.SrcBlock + c.Count);
        var fresh = new List<(ulong Block, Extent Extent)>(records.Count);
        ulong expect = c.SrcBlock;
        foreach (var (start, e) in records)
        {
            ulong from = Math.Max(start, c.SrcBlock), to = Math.Min(start + e.Count, c.SrcBlock + c.Count);
            if (from != expect || e.Unwritten) break;
            var piece = e.Slice((uint)(from - start), (uint)(to - from));
            for (int i = 0; i < piece.Count; i++)
                if (piece.Crcs[i] != c.Crcs[from - c.SrcBlock + (ulong)i])
                    throw Bad(c, $"source block {from + (ulong)i} of inode {c.SrcIno} does not hold the data the stream expects");
            fresh.Add((c.Block + (from - c.SrcBlock), piece));
            expect = to;
        }
        if (expect != c.SrcBlock + c.Count) throw Bad(c, $"source blocks {c.SrcBlock}+{c.Count} of inode {c.SrcIno} are not all written data");
        foreach (var (_, piece) in fresh) Space.AddRef(piece.DiskStart, piece.DiskBlocks);
        var dst = OpenFile(c);
        ExtentMap.Replace(dst, Space, c.Block, c.Block + c.Count, fresh);
    }

    /// <summary>Makes a file share another's whole extent tree: O(1), as a whole-file clone.</summary>
    private void CloneFile(ReceiveCommand c)
    {
        FlushOpen();
        var src = Need(c, c.SrcIno, FileType.File);
        var dst = Need(c, c.Ino, FileType.File);
        _v.PutInode(c.Ino, dst); // make the leaf private first, as ShareExtents does
        if (!dst.Extents.IsNone) Space.ReleaseSubtree(dst.Extents);
        if (!src.Extents.IsNone) Space.AddRef(src.Extents.Address, 1);
        _v.PutInode(c.Ino, dst with { Extents = src.Extents });
    }

    /// <summary>Before publishing: the volume has what every volume has, a header and a root directory.</summary>
    public void CheckComplete(long endOffset)
    {
        if (!_tree.TryGet(FileKeys.HeaderKey, out var h) || h.Length != 8)
            throw new InvalidStreamException(endOffset, "the stream ended without a volume header");
        if (!_v.TryGetInode(VolumeReader.RootIno, out var root) || root.Type != FileType.Directory)
            throw new InvalidStreamException(endOffset, "the stream ended without a root directory");
    }
}
