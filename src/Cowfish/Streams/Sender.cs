using System.Buffers.Binary;
using System.Text;
using Cowfish.Files;
using Cowfish.Format;
using Cowfish.Transactions;
using Cowfish.Trees;

namespace Cowfish.Streams;

/// <summary>
/// Turns the difference between two volume trees of one pinned state (or one whole tree) into
/// stream records. Inode numbers are kept: the receiver builds the same keys, so a change to a key
/// of the volume tree becomes one record (an inode, a directory entry, an extended attribute), and
/// a rename is the unlink of one name and the link of another to the same inode.
/// </summary>
/// <remarks>
/// The records come out in the volume tree's key order: the header, the inodes (each changed file
/// followed by its data), the directory entries, the extended attributes. Back-references are not
/// sent: the receiver keeps them with the entries. File data is compared block by block where the
/// extent diff says records changed: a block that still maps the same disk block as in the parent
/// is not sent, a block whose disk extent was already sent in this stream goes as a clone from
/// where it was sent, and the rest goes as data.
/// </remarks>
internal sealed class Sender(Pool pool, ReadTransaction rt, RecordWriter w, Action<long>? progress)
{
    private const int BlockSize = Layout.BlockSize;

    /// <summary>A run of a disk extent already sent: extent blocks [Offset, Offset + Count) are at file blocks Block.. of Ino.</summary>
    private readonly record struct Piece(uint Offset, uint Count, ulong Ino, ulong Block);

    // Disk extent start → the runs of it sent so far; extent-tree root → a file sent with exactly that tree.
    private readonly Dictionary<ulong, List<Piece>> _sentExtents = new();
    private readonly Dictionary<ulong, ulong> _sentRoots = new();

    // Incremental streams only: files of the parent by extent root and by first disk extent, built
    // on first need, to send a new file that is a clone of a parent file as CLONE_FILE (plus its
    // changes since); and the inodes this stream has already changed, which can no longer be sources.
    // The index costs about one node read per parent file, so it is built only for a new file at
    // least IndexBytesPerInode times the parent's inode numbers: never more than that file's data.
    private const ulong IndexBytesPerInode = 8192;
    private TreeReader? _parentTree;
    private Dictionary<ulong, (ulong Ino, BlockRef Root)>? _parentRoots, _parentFirst;
    private readonly HashSet<ulong> _touched = new();

    public long DataBytes { get; private set; }
    public long ClonedBytes { get; private set; }

    /// <summary>Sends <paramref name="snap"/> (as <paramref name="snapId"/>), in full or as the changes from <paramref name="parent"/>.</summary>
    public void Run(VolumeRecord snap, Guid snapId, VolumeRecord? parent, Guid parentId)
    {
        var now = rt.Tree(snap.Tree);
        _parentTree = parent is null ? null : rt.Tree(parent.Tree);
        Begin(snap, snapId, parent, parentId);
        IEnumerable<TreeChange> changes = parent is null
            ? now.Scan().Select(kv => new TreeChange(kv.Key, null, kv.Value))
            : TreeDiff.Diff(rt.Tree(parent.Tree), now);
        foreach (var c in changes) Handle(c);
        w.End();
        progress?.Invoke(w.Offset);
    }

    private void Emit(RecordType type, int length)
    {
        w.Emit(type, length);
        progress?.Invoke(w.Offset);
    }

    /// <summary>CRC32C of a volume's header and root inode: two values every volume has, which change with any inode creation or root change.</summary>
    internal static uint Fingerprint(TreeReader tree)
    {
        if (!tree.TryGet(FileKeys.HeaderKey, out var h) || !tree.TryGet(FileKeys.InodeKey(VolumeReader.RootIno), out var root))
            throw new CorruptionException(0, "volume header and root inode", "present", "missing");
        return Crc32C.Update(Crc32C.Update(0xFFFFFFFFu, h), root) ^ 0xFFFFFFFFu;
    }

    private void Begin(VolumeRecord snap, Guid snapId, VolumeRecord? parent, Guid parentId)
    {
        var p = new PayloadWriter(w.Payload);
        p.U32(parent is null ? 0u : 1u);
        p.Uuid(snapId);
        p.Uuid(parent is null ? Guid.Empty : parentId);
        p.U32(parent is null ? 0 : Fingerprint(rt.Tree(parent.Tree)));
        p.I64(snap.CreatedNs);
        var name = Encoding.UTF8.GetBytes(snap.Name);
        p.U16((ushort)name.Length);
        p.Bytes(name);
        Emit(RecordType.Begin, p.Length);
    }

    private void Handle(TreeChange c)
    {
        var k = c.Key;
        switch (k.Length > 0 ? k[0] : (byte)0xFF)
        {
            case FileKeys.Header when k.Length == 1:
            {
                if (c.New is not { Length: 8 } v) throw new CorruptionException(0, "volume header", "8 bytes", c.New?.Length.ToString() ?? "missing");
                var p = new PayloadWriter(w.Payload);
                p.U64(BinaryPrimitives.ReadUInt64LittleEndian(v));
                Emit(RecordType.VolumeHeader, p.Length);
                break;
            }
            case FileKeys.Inode when k.Length == 9:
            {
                ulong ino = BinaryPrimitives.ReadUInt64BigEndian(k.AsSpan(1));
                _touched.Add(ino);
                if (c.New is null)
                {
                    var p = new PayloadWriter(w.Payload);
                    p.U64(ino);
                    Emit(RecordType.RemoveInode, p.Length);
                    break;
                }
                var inode = Inode.Decode(c.New, 0, ino);
                SendInode(ino, inode);
                if (inode.Type == FileType.File)
                {
                    var old = c.Old is null ? null : Inode.Decode(c.Old, 0, ino);
                    SendData(ino, old is { Type: FileType.File } ? old.Extents : BlockRef.None, inode.Extents, isNew: old is null, inode.Size);
                }
                break;
            }
            case FileKeys.DirEntry when k.Length > 9:
            {
                ulong dir = BinaryPrimitives.ReadUInt64BigEndian(k.AsSpan(1));
                var p = new PayloadWriter(w.Payload);
                p.U64(dir);
                p.Name(k.AsSpan(9));
                if (c.New is null) { Emit(RecordType.Unlink, p.Length); break; }
                if (c.New.Length != 9) throw new CorruptionException(0, "directory entry length", "9", c.New.Length.ToString());
                p.U64(BinaryPrimitives.ReadUInt64LittleEndian(c.New));
                p.U8(c.New[8]);
                Emit(RecordType.Link, p.Length);
                break;
            }
            case FileKeys.Xattr when k.Length > 9:
            {
                ulong ino = BinaryPrimitives.ReadUInt64BigEndian(k.AsSpan(1));
                var p = new PayloadWriter(w.Payload);
                p.U64(ino);
                p.Name(k.AsSpan(9));
                if (c.New is null) { Emit(RecordType.RemoveXattr, p.Length); break; }
                p.U16((ushort)c.New.Length);
                p.Bytes(c.New);
                Emit(RecordType.SetXattr, p.Length);
                break;
            }
            case FileKeys.InodeRef:
                break; // the receiver keeps back-references with the entries
            default:
                throw new CorruptionException(0, "volume tree key", "a header, inode, entry, xattr or back-reference key", Convert.ToHexString(k));
        }
    }

    private void SendInode(ulong ino, Inode i)
    {
        var p = new PayloadWriter(w.Payload);
        p.U64(ino);
        p.U8((byte)i.Type);
        p.U8(0); p.U16(0);
        p.U32(i.Mode);
        p.U32(i.Uid);
        p.U32(i.Gid);
        p.U32(i.Nlink);
        p.U64(i.Size);
        p.I64(i.AtimeNs);
        p.I64(i.MtimeNs);
        p.I64(i.CtimeNs);
        p.I64(i.BtimeNs);
        p.U64(i.DataVersion);
        p.U16((ushort)i.SymlinkTarget.Length);
        p.Bytes(i.SymlinkTarget);
        Emit(RecordType.Inode, p.Length);
    }

    // --- file data ------------------------------------------------------------------------

    private void SendData(ulong ino, BlockRef oldRoot, BlockRef newRoot, bool isNew, ulong size)
    {
        if (oldRoot == newRoot) return; // the same tree: the same data
        if (newRoot.IsNone)
        {
            Punch(ino, 0, StreamFormat.MaxFileBlocks);
            return;
        }
        if (_sentRoots.TryGetValue(newRoot.Address, out ulong src) && src != ino)
        {
            // A whole-file clone of a file this stream already carried: share its whole tree, O(1).
            CloneFile(ino, src);
            return;
        }
        var now = new TreeReader(pool.Store, newRoot, TreeKind.FileExtents);
        if (isNew && TryParentOrigin(newRoot, now, size, out ulong origin, out var originRoot))
        {
            // A new file cloned from a parent file that the receiver still holds as in the parent:
            // share that file's data, then send only the changes since (none for an unchanged clone).
            CloneFile(ino, origin);
            if (originRoot == newRoot) { _sentRoots[newRoot.Address] = ino; return; }
            oldRoot = originRoot;
        }
        IEnumerable<TreeChange> diff = oldRoot.IsNone
            ? now.Scan().Select(kv => new TreeChange(kv.Key, null, kv.Value))
            : TreeDiff.Diff(new TreeReader(pool.Store, oldRoot, TreeKind.FileExtents), now);
        var sweep = new Sweep(this, ino);
        foreach (var c in diff)
        {
            ulong block = FileKeys.ParseExtentKey(c.Key);
            sweep.Advance(block);
            if (c.Old is not null) sweep.Old.Enqueue((block, Extent.Decode(c.Old, 0)));
            if (c.New is not null) sweep.New.Enqueue((block, Extent.Decode(c.New, 0)));
        }
        sweep.Advance(ulong.MaxValue);
        sweep.FlushPunch();
        _sentRoots[newRoot.Address] = ino;
    }

    /// <summary>
    /// Walks the changed records of one file in block order, old (parent) and new side together, and
    /// sends what each run of blocks needs. Records arrive in key order, so every block below the key
    /// of the latest record is final and can be sent; memory stays bounded by the records that overlap.
    /// </summary>
    private sealed class Sweep(Sender s, ulong ino)
    {
        public readonly Queue<(ulong Start, Extent E)> Old = new(), New = new();
        private ulong _pos;
        private ulong _punchFrom, _punchTo;

        public void Advance(ulong limit)
        {
            while (true)
            {
                while (Old.Count > 0 && End(Old.Peek()) <= _pos) Old.Dequeue();
                while (New.Count > 0 && End(New.Peek()) <= _pos) New.Dequeue();
                if (Old.Count == 0 && New.Count == 0) return;
                ulong first = Math.Min(Old.Count > 0 ? Old.Peek().Start : ulong.MaxValue, New.Count > 0 ? New.Peek().Start : ulong.MaxValue);
                ulong at = Math.Max(_pos, first);
                if (at >= limit) return;
                ulong end = limit;
                (ulong Start, Extent E)? o = null, n = null;
                if (Old.Count > 0) { var r = Old.Peek(); if (r.Start <= at) { o = r; end = Math.Min(end, End(r)); } else end = Math.Min(end, r.Start); }
                if (New.Count > 0) { var r = New.Peek(); if (r.Start <= at) { n = r; end = Math.Min(end, End(r)); } else end = Math.Min(end, r.Start); }
                Segment(at, end, o, n);
                _pos = end;
            }
        }

        private static ulong End((ulong Start, Extent E) r) => r.Start + r.E.Count;

        private void Segment(ulong from, ulong to, (ulong Start, Extent E)? o, (ulong Start, Extent E)? n)
        {
            if (n is not { } nr)
            {
                // Mapped in the parent, a hole now.
                if (_punchTo == from && _punchTo > _punchFrom) _punchTo = to;
                else { FlushPunch(); (_punchFrom, _punchTo) = (from, to); }
                return;
            }
            uint first = (uint)(from - nr.Start);
            if (o is { } or && or.E.Unwritten == nr.E.Unwritten && or.E.DiskBlock((uint)(from - or.Start)) == nr.E.DiskBlock(first))
                return; // the same disk blocks as in the parent: the receiver has them
            FlushPunch();
            if (nr.E.Unwritten) s.Prealloc(ino, from, (uint)(to - from));
            else s.SendBlocks(ino, from, nr.E, first, (uint)(to - from));
        }

        public void FlushPunch()
        {
            if (_punchTo > _punchFrom) s.Punch(ino, _punchFrom, _punchTo - _punchFrom);
            _punchFrom = _punchTo = 0;
        }
    }

    private void CloneFile(ulong ino, ulong src)
    {
        var p = new PayloadWriter(w.Payload);
        p.U64(ino);
        p.U64(src);
        Emit(RecordType.CloneFile, p.Length);
    }

    /// <summary>
    /// The parent file a new file was probably cloned from: one with the very same extent tree, or
    /// else one whose first record names the same disk extent. Only files this stream has not
    /// changed yet qualify: the receiver holds them as they were in the parent. A wrong guess costs
    /// only a larger diff, never a wrong result. The parent's files are indexed once per stream, the
    /// first time a new file is large enough to pay for it (<see cref="IndexBytesPerInode"/>), so
    /// that an incremental send stays proportional to what it sends.
    /// </summary>
    private bool TryParentOrigin(BlockRef root, TreeReader tree, ulong size, out ulong origin, out BlockRef originRoot)
    {
        origin = 0;
        originRoot = BlockRef.None;
        if (_parentTree is null) return false;
        if (_parentRoots is null)
        {
            if (!_parentTree.TryGet(FileKeys.HeaderKey, out var h) || h.Length != 8) return false;
            ulong inodes = BinaryPrimitives.ReadUInt64LittleEndian(h);
            if (size / IndexBytesPerInode < inodes) return false; // too small to pay for the index (a later, larger file may)
            _parentRoots = new();
            _parentFirst = new();
            foreach (var kv in _parentTree.Scan([FileKeys.Inode], [FileKeys.Inode + 1]))
            {
                ulong ino = BinaryPrimitives.ReadUInt64BigEndian(kv.Key.AsSpan(1));
                var r = Inode.ExtentRootOf(kv.Value);
                if (r.IsNone) continue;
                _parentRoots.TryAdd(r.Address, (ino, r));
                if (FirstDiskExtent(new TreeReader(pool.Store, r, TreeKind.FileExtents)) is { } first) _parentFirst!.TryAdd(first, (ino, r));
            }
        }
        if (_parentRoots.TryGetValue(root.Address, out var hit) && hit.Root == root && !_touched.Contains(hit.Ino))
        {
            (origin, originRoot) = hit;
            return true;
        }
        if (FirstDiskExtent(tree) is { } disk && _parentFirst!.TryGetValue(disk, out hit) && !_touched.Contains(hit.Ino))
        {
            (origin, originRoot) = hit;
            return true;
        }
        return false;
    }

    private static ulong? FirstDiskExtent(TreeReader tree)
    {
        var c = tree.Cursor();
        c.First();
        if (!c.Valid) return null;
        var e = Extent.Decode(c.Value, 0);
        return e.Unwritten ? null : e.DiskStart;
    }

    private void Punch(ulong ino, ulong block, ulong count)
    {
        var p = new PayloadWriter(w.Payload);
        p.U64(ino);
        p.U64(block);
        p.U64(count);
        Emit(RecordType.Punch, p.Length);
    }

    private void Prealloc(ulong ino, ulong block, uint count)
    {
        var p = new PayloadWriter(w.Payload);
        p.U64(ino);
        p.U64(block);
        p.U32(count);
        Emit(RecordType.Prealloc, p.Length);
    }

    /// <summary>
    /// Sends blocks [first, first + count) of a written record, at file block <paramref name="block"/>:
    /// the parts of its disk extent already sent go as clones from where they were sent, the rest as data.
    /// </summary>
    private void SendBlocks(ulong ino, ulong block, Extent e, uint first, uint count)
    {
        uint eo = e.Offset + first;
        if (!_sentExtents.TryGetValue(e.DiskStart, out var pieces)) _sentExtents[e.DiskStart] = pieces = new List<Piece>(1);
        uint done = 0;
        while (done < count)
        {
            uint at = eo + done;
            uint next = eo + count;
            Piece? cover = null;
            foreach (var piece in pieces)
            {
                if (piece.Offset <= at && at < piece.Offset + piece.Count) { cover = piece; break; }
                if (piece.Offset > at && piece.Offset < next) next = piece.Offset;
            }
            if (cover is { } c)
            {
                uint run = Math.Min(c.Offset + c.Count, eo + count) - at;
                Clone(ino, block + done, run, c.Ino, c.Block + (at - c.Offset), e.Crcs.AsSpan((int)(first + done), (int)run));
                done += run;
            }
            else
            {
                uint run = next - at;
                Write(ino, block + done, e, first + done, run);
                done += run;
            }
        }
        pieces.Add(new Piece(eo, count, ino, block));
    }

    private void Clone(ulong ino, ulong block, uint count, ulong srcIno, ulong srcBlock, ReadOnlySpan<uint> crcs)
    {
        var p = new PayloadWriter(w.Payload);
        p.U64(ino);
        p.U64(block);
        p.U32(count);
        p.U64(srcIno);
        p.U64(srcBlock);
        foreach (uint crc in crcs) p.U32(crc);
        Emit(RecordType.Clone, p.Length);
        ClonedBytes += (long)count * BlockSize;
    }

    /// <summary>A WRITE record: the blocks are read from the device straight into the record and checked against their CRCs.</summary>
    private void Write(ulong ino, ulong block, Extent e, uint first, uint count)
    {
        if (w.Skipping)
        {
            // Before the resume point: framed from the extent's block CRCs, the data is not read.
            Span<byte> fields = stackalloc byte[20];
            var f = new PayloadWriter(fields);
            f.U64(ino);
            f.U64(block);
            f.U32(count);
            w.EmitSkipped(RecordType.Write, fields, e.Crcs.AsSpan((int)first, (int)count));
            progress?.Invoke(w.Offset);
            return;
        }
        var p = new PayloadWriter(w.Payload);
        p.U64(ino);
        p.U64(block);
        p.U32(count);
        var data = p.Reserve((int)count * BlockSize);
        pool.Device.Read(Layout.ByteOffset(e.DiskBlock(first)), data);
        for (int i = 0; i < count; i++)
        {
            uint got = Crc32C.Compute(data.Slice(i * BlockSize, BlockSize));
            if (got != e.Crcs[first + i]) throw new CorruptionException(e.DiskBlock(first + (uint)i), "data block checksum", $"0x{e.Crcs[first + i]:X8}", $"0x{got:X8}");
        }
        Emit(RecordType.Write, p.Length);
        DataBytes += (long)count * BlockSize;
    }
}
