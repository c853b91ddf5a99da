using System.Buffers;
using Cowfish.Format;
using Cowfish.Transactions;
using Cowfish.Trees;

namespace Cowfish.Files;

public sealed partial class FileSystem
{
    /// <summary>
    /// Reflink: <paramref name="dst"/> (created if missing, replaced if a file) gets the same data as
    /// <paramref name="src"/> by sharing its extent tree root. O(1), whatever the extent count; later
    /// writes to either copy shadow only what they touch. Works across volumes of the pool.
    /// </summary>
    public void Clone(string src, string dst)
    {
        SettleWrites();
        var s = PoolPath.Parse(src);
        var d = PoolPath.Parse(dst);
        if (d.IsVolumeRoot) throw new InvalidRequestException($"{d} is a volume; name a file inside it");
        var name = FileKeys.Name(d.Leaf);
        // Lock order is range lock, then the pool's writer lock: find the target first, lock it if it
        // exists, and start over if it appeared or changed in between.
        while (true)
        {
            ulong known = 0;
            try { known = ReadVolume(d.Volume, r => r.TryResolve(d, out ulong i) ? i : 0); }
            catch (NotFoundException) { }
            var dstTree = known == 0 ? default : ReadVolume(d.Volume, r => r.Record.Tree);
            using var lease = known == 0 ? default : Locks.Acquire(dstTree.Value, known, 0, ulong.MaxValue);
            using var tx = BeginChange();
            var dir = VolumeDirectory(tx);
            var srcRec = GetVolume(tx, dir, s.Volume);
            var source = new VolumeReader(srcRec, tx.TreeWriterFor(srcRec.Tree), Pool.Store);
            ulong sIno = source.Resolve(s);
            var sInode = source.GetInode(sIno);
            if (sInode.Type != FileType.File) throw new InvalidRequestException($"{s}: not a regular file");
            var dstRec = GetVolume(tx, dir, d.Volume);
            if (dstRec.ReadOnly) throw new ReadOnlyVolumeException(d.Volume);
            var v = new VolumeWriter(dstRec, tx);
            ulong parent = v.Resolve(d with { Components = d.ParentComponents });
            bool exists = v.TryLookup(parent, name, out ulong dIno, out var type);
            if ((exists ? dIno : 0) != known || (known != 0 && dstRec.Tree != dstTree)) continue;
            if (exists)
            {
                if (type != FileType.File) throw new InvalidRequestException($"{d}: exists and is not a regular file");
                if (dIno == sIno && dstRec.Tree == srcRec.Tree) return;
            }
            else dIno = v.Create(parent, name, FileType.File, sInode.Mode);
            v.ShareExtents(dIno, v.GetInode(dIno), sInode);
            tx.Commit();
            return;
        }
    }

    /// <summary>
    /// FICLONERANGE: shares <paramref name="length"/> bytes of <paramref name="src"/> from
    /// <paramref name="srcOffset"/> into <paramref name="dst"/> at <paramref name="dstOffset"/>.
    /// Offsets and length must be block-aligned, except that the range may end at the source's end of
    /// file; a length of 0 means "to the end of the source". Overlapping ranges of one file are refused.
    /// </summary>
    /// <remarks>
    /// The source is frozen first (its extent root is adopted as a temporary tree, O(1)), then records
    /// are copied in slices of <see cref="CloneSliceRecords"/>, each its own transaction: the clone gets
    /// a point-in-time copy, writes to the source never wait, and the writer lock is never held for long.
    /// </remarks>
    public void CloneRange(string src, long srcOffset, long length, string dst, long dstOffset)
    {
        SettleWrites();
        var (sRec, sIno) = ResolveFile(PoolPath.Parse(src), forWriting: false);
        var (dRec, dIno) = ResolveFile(PoolPath.Parse(dst));
        CloneRangeCore(sRec, sIno, srcOffset, length, dRec, dIno, dstOffset, lockTarget: true);
    }

    private void CloneRangeCore(VolumeRecord sRec, ulong sIno, long srcOffset, long length, VolumeRecord dRec, ulong dIno, long dstOffset, bool lockTarget)
    {
        if (srcOffset < 0 || dstOffset < 0 || length < 0) throw new InvalidRequestException("negative offset or length");
        if (srcOffset % BlockSize != 0 || dstOffset % BlockSize != 0) throw new InvalidRequestException($"clone offsets must be multiples of {BlockSize}");
        if (dstOffset + length > MaxFileSize) throw new InvalidRequestException("target range is past the largest file size");
        ulong sb = (ulong)srcOffset / BlockSize, db = (ulong)dstOffset / BlockSize;
        // The target's range is locked before anything is measured; "to the end of the source" locks to the end.
        using var lease = !lockTarget ? default
            : Locks.Acquire(dRec.Tree.Value, dIno, db, length == 0 ? ulong.MaxValue : db + ((ulong)length + BlockSize - 1) / BlockSize);

        // 1. Freeze the source: adopt its extent root as a temporary, named tree (O(1)). Sizes are
        //    read and the rules checked in this same transaction, so they hold for the frozen copy.
        TreeId frozen = default;
        string frozenName = "";
        bool empty;
        ulong len;
        using (var tx = BeginChange())
        {
            var dir = VolumeDirectory(tx);
            var srcNow = GetVolume(tx, dir, sRec.Name);
            var dstNow = GetVolume(tx, dir, dRec.Name);
            if (srcNow.Tree != sRec.Tree || dstNow.Tree != dRec.Tree) throw new NotFoundException("a volume was replaced during the clone");
            var sInode = new VolumeReader(srcNow, tx.TreeWriterFor(sRec.Tree), Pool.Store).GetInode(sIno);
            ulong dSize = new VolumeReader(dstNow, tx.TreeWriterFor(dRec.Tree), Pool.Store).GetInode(dIno).Size;
            ulong srcSize = sInode.Size;
            if ((ulong)srcOffset >= srcSize && length == 0) { tx.Abort(); Pool.Flush(); return; }
            len = length == 0 ? srcSize - (ulong)srcOffset : (ulong)length;
            if ((ulong)srcOffset + len > srcSize) throw new InvalidRequestException($"source range {srcOffset}+{len} is past its end ({srcSize})");
            bool toEof = (ulong)srcOffset + len == srcSize;
            if (len % BlockSize != 0 && !toEof) throw new InvalidRequestException($"clone length must be a multiple of {BlockSize} unless the range ends at the source's end of file");
            if ((ulong)dstOffset + len > (ulong)MaxFileSize) throw new InvalidRequestException("target range is past the largest file size");
            if (len % BlockSize != 0 && (ulong)dstOffset + len < dSize)
                throw new InvalidRequestException("cannot clone the source's partial last block into the middle of the target (it would replace the target's bytes after the range)");
            bool sameFile = sRec.Tree == dRec.Tree && sIno == dIno;
            if (sameFile && (ulong)srcOffset < (ulong)dstOffset + len && (ulong)dstOffset < (ulong)srcOffset + len)
                throw new InvalidRequestException("source and target ranges of one file overlap");
            empty = sInode.Extents.IsNone;
            if (!empty)
            {
                frozen = tx.AdoptTree(TreeKind.FileExtents, sInode.Extents);
                frozenName = FrozenPrefix + frozen.Value;
                tx.SetNamedTree(frozenName, frozen);
            }
            tx.Commit(waitForDurability: false);
        }
        ulong blocks = (len + BlockSize - 1) / BlockSize;
        try
        {
            // 2. Copy records in bounded slices; the gaps between them become holes in the target.
            ulong next = sb;
            while (next < sb + blocks)
            {
                using var tx = BeginChange();
                var v = OpenForWrite(tx, dRec);
                var inode = v.GetInode(dIno);
                ulong sliceEnd = next;
                v.ChangeData(dIno, inode, tree =>
                {
                    // Copy records in small batches until the slice's time or record budget is spent;
                    // the gaps between records become holes in the target.
                    var clock = System.Diagnostics.Stopwatch.StartNew();
                    var frozenTree = empty ? null : tx.ReaderFor(frozen, bypassCache: true);
                    int taken = 0;
                    while (sliceEnd < sb + blocks)
                    {
                        int batch = Math.Min(128, CloneSliceRecords - taken);
                        var records = frozenTree is null ? [] : ExtentMap.Overlapping(frozenTree, sliceEnd, sb + blocks, batch + 1);
                        bool more = records.Count > batch;
                        if (more) records.RemoveAt(records.Count - 1);
                        ulong batchEnd = more ? records[^1].Block + records[^1].Extent.Count : sb + blocks;
                        var fresh = new List<(ulong, Extent)>(records.Count);
                        foreach (var (start, e) in records)
                        {
                            ulong from = Math.Max(start, sliceEnd), to = Math.Min(start + e.Count, batchEnd);
                            if (to <= from) continue;
                            var piece = e.Slice((uint)(from - start), (uint)(to - from));
                            v.Space.AddRef(piece.DiskStart, piece.DiskBlocks);
                            fresh.Add((db + (from - sb), piece));
                        }
                        ExtentMap.Replace(tree, v.Space, db + (sliceEnd - sb), db + (batchEnd - sb), fresh);
                        taken += records.Count;
                        sliceEnd = batchEnd;
                        if (taken >= CloneSliceRecords || clock.Elapsed >= CloneSliceTime) break;
                    }
                    // The target grows with each slice to cover what it holds, so no committed state
                    // has records past its size; the last slice reaches dstOffset + length.
                    ulong covered = Math.Min((ulong)dstOffset + len, (db + (sliceEnd - sb)) * BlockSize);
                    return Math.Max(inode.Size, covered);
                });
                tx.Commit(waitForDurability: false);
                next = sliceEnd;
            }
        }
        finally
        {
            // 3. Let the frozen copy go; its nodes come back in the background.
            using var tx = BeginChange();
            if (!empty)
            {
                tx.RemoveNamedTree(frozenName);
                tx.DropTree(frozen);
            }
            tx.Commit();
        }
    }

    /// <summary>
    /// FIDEDUPERANGE: if the two ranges hold the same bytes, makes <paramref name="b"/> share
    /// <paramref name="a"/>'s blocks and returns true; returns false ("differs") otherwise. Writers
    /// to either range wait while the ranges are compared and shared.
    /// </summary>
    public bool Dedupe(string a, long aOffset, long length, string b, long bOffset)
    {
        SettleWrites();
        var (aRec, aIno) = ResolveFile(PoolPath.Parse(a), forWriting: false);
        var (bRec, bIno) = ResolveFile(PoolPath.Parse(b));
        if (length <= 0) throw new InvalidRequestException("dedupe needs a positive length");
        if (aOffset < 0 || bOffset < 0 || aOffset % BlockSize != 0 || bOffset % BlockSize != 0)
            throw new InvalidRequestException($"dedupe offsets must be non-negative multiples of {BlockSize}");
        if (aRec.Tree == bRec.Tree && aIno == bIno && aOffset < bOffset + length && bOffset < aOffset + length)
            throw new InvalidRequestException("the two ranges of one file overlap");
        ulong blocks = ((ulong)length + BlockSize - 1) / BlockSize;
        ulong ab = (ulong)aOffset / BlockSize, bb = (ulong)bOffset / BlockSize;
        // Lock both in a fixed order so that two dedupes of the same pair cannot deadlock.
        var first = (aRec.Tree.Value, aIno, ab);
        var second = (bRec.Tree.Value, bIno, bb);
        if (second.CompareTo(first) < 0) (first, second) = (second, first);
        bool sameFile = aRec.Tree == bRec.Tree && aIno == bIno;
        using var l1 = Locks.Acquire(first.Item1, first.Item2, first.Item3, first.Item3 + blocks);
        using var l2 = sameFile && first.Item3 + blocks > second.Item3 ? default : Locks.Acquire(second.Item1, second.Item2, second.Item3, second.Item3 + blocks);
        const int Chunk = 1 << 20;
        var x = new byte[Chunk];
        var y = new byte[Chunk];
        for (long done = 0; done < length; done += Chunk)
        {
            int n = (int)Math.Min(Chunk, length - done);
            int ra = ReadVolumeByRecord(aRec, v => v.ReadData(v.GetInode(aIno), aIno, aOffset + done, x.AsSpan(0, n)));
            int rb = ReadVolumeByRecord(bRec, v => v.ReadData(v.GetInode(bIno), bIno, bOffset + done, y.AsSpan(0, n)));
            if (ra != n || rb != n) throw new InvalidRequestException("dedupe range is past the end of a file");
            if (!x.AsSpan(0, n).SequenceEqual(y.AsSpan(0, n))) return false;
        }
        CloneRangeCore(aRec, aIno, aOffset, length, bRec, bIno, bOffset, lockTarget: false);
        return true;
    }
}

public sealed partial class FileSystem
{
    /// <summary>
    /// Space use of a file, a directory tree, a volume (<c>VOLUME</c>) or the whole pool (null):
    /// Total referenced bytes, the Exclusive part nothing else references, and the Shared rest.
    /// Hard links are counted once.
    /// </summary>
    public SpaceUsage Usage(string? path = null)
    {
        SettleWrites();
        using var rt = Pool.BeginRead();
        var calc = new UsageCalculator(rt, Pool.Store);
        if (path is null)
        {
            if (rt.TryGetNamedTree(VolumeRecord.DirectoryName, out var dir))
                foreach (var kv in rt.Scan(dir)) AddVolume(calc, rt, VolumeRecord.Decode(kv.Key, kv.Value));
            return calc.Result;
        }
        var p = PoolPath.Parse(path);
        var rec = GetVolume(rt, p.Volume);
        if (p.IsVolumeRoot) { AddVolume(calc, rt, rec); return calc.Result; }
        var tree = rt.Tree(rec.Tree);
        var v = new VolumeReader(rec, tree, Pool.Store);
        var seen = new HashSet<ulong>();
        var todo = new Stack<ulong>();
        todo.Push(v.Resolve(p));
        while (todo.Count > 0)
        {
            ulong ino = todo.Pop();
            if (!seen.Add(ino)) continue;
            var inode = v.GetInode(ino);
            if (inode.Type == FileType.Directory) foreach (var e in v.List(ino)) todo.Push(e.Inode);
            else calc.AddFile(tree, ino, inode);
        }
        return calc.Result;
    }

    private void AddVolume(UsageCalculator calc, ReadTransaction rt, VolumeRecord rec)
    {
        var tree = rt.Tree(rec.Tree);
        foreach (var kv in tree.Scan([FileKeys.Inode], [FileKeys.Inode + 1]))
        {
            ulong ino = System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(kv.Key.AsSpan(1));
            calc.AddFile(tree, ino, Inode.Decode(kv.Value, 0, ino));
        }
    }
}

public sealed partial class FileSystem
{
    /// <summary>
    /// Fragments of a file's written data: maximal runs of records whose disk blocks follow each
    /// other in file order. 1 for a file laid out contiguously, 0 for one with no data.
    /// </summary>
    internal int Fragments(string path) => FileRecord.Fragments(WrittenRecords(path, sharing: false).Records);

    /// <summary>
    /// A file's written extent records in file order (unwritten ones hold no data and are left
    /// out), each telling whether its disk extent is the file's alone: no clone, snapshot or other
    /// file reaches it (<see cref="UsageCalculator"/>'s test). Also the bytes the file shares.
    /// Without <paramref name="sharing"/>, neither is worked out (every record reads as shared, and
    /// the shared bytes as 0): the layout alone.
    /// </summary>
    internal (List<FileRecord> Records, ulong SharedBytes) WrittenRecords(string path, bool sharing = true)
    {
        SettleWrites();
        var p = PoolPath.Parse(path);
        using var rt = Pool.BeginRead();
        var rec = GetVolume(rt, p.Volume);
        var tree = rt.Tree(rec.Tree);
        var v = new VolumeReader(rec, tree, Pool.Store);
        ulong ino = v.Resolve(p);
        var inode = v.GetInode(ino);
        if (inode.Type != FileType.File) throw new InvalidRequestException($"{p}: not a regular file");
        var records = new List<FileRecord>();
        var extents = v.Extents(inode);
        if (extents is null) return (records, 0);
        UsageCalculator? calc = null;
        if (sharing)
        {
            calc = new UsageCalculator(rt, Pool.Store);
            calc.AddFile(tree, ino, inode);
        }
        foreach (var kv in extents.Scan())
        {
            var e = Extent.Decode(kv.Value, 0);
            if (e.Unwritten) continue;
            records.Add(new FileRecord(FileKeys.ParseExtentKey(kv.Key), e.DiskStart, e.DiskBlocks, e.Offset, e.Count, calc?.IsExclusive(e.DiskStart) ?? false));
        }
        return (records, calc?.Result.SharedBytes ?? 0);
    }

    /// <summary>
    /// Rewrites blocks [<paramref name="b0"/>, <paramref name="b1"/>) of a file with their own
    /// bytes, copy-on-write, into one fresh run (defragmentation). The range lock is held from
    /// the read to the mapping, so no concurrent write is lost; the range is clipped to the
    /// file's size as of that read, and the size does not change. <paramref name="place"/> hands out
    /// the blocks to write to (reserved; the mapping takes them over).
    /// </summary>
    internal void RewriteInPlace(string path, ulong b0, ulong b1, Func<uint, ulong>? place = null)
    {
        var (rec, ino) = ResolveFile(PoolPath.Parse(path));
        using var lease = Locks.Acquire(rec.Tree.Value, ino, b0, b1);
        WaitForDeferred(rec, ino, b0, b1);
        int blocks = (int)(b1 - b0);
        var buf = ArrayPool<byte>.Shared.Rent(blocks * BlockSize);
        try
        {
            ulong end;
            using (var rt = Pool.BeginRead())
            {
                var v = new VolumeReader(rec, rt.Tree(rec.Tree), Pool.Store);
                if (!v.TryGetInode(ino, out var inode)) return;
                end = Math.Min(b1, (inode.Size + BlockSize - 1) / BlockSize);
                if (end <= b0) return;
                buf.AsSpan(0, (int)(end - b0) * BlockSize).Clear();
                v.ReadData(inode, ino, (long)(b0 * BlockSize), buf.AsSpan(0, (int)Math.Min((end - b0) * BlockSize, inode.Size - b0 * BlockSize)));
            }
            MapChanges(rec, ino, [(b0, buf.AsMemory(0, (int)(end - b0) * BlockSize))], null, i => i.Size, durable: false, deferred: false, place);
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }

    /// <summary>
    /// The byte ranges of a file that hold data, in order, adjacent ranges merged; everything else
    /// (holes and unwritten extents) reads as zeros. Like SEEK_DATA/SEEK_HOLE, on one snapshot.
    /// </summary>
    public IReadOnlyList<(long Offset, long Length)> DataRanges(string path)
    {
        SettleWrites();
        var p = PoolPath.Parse(path);
        using var rt = Pool.BeginRead();
        var rec = GetVolume(rt, p.Volume);
        var v = new VolumeReader(rec, rt.Tree(rec.Tree), Pool.Store);
        ulong ino = v.Resolve(p);
        var inode = v.GetInode(ino);
        if (inode.Type != FileType.File) throw new InvalidRequestException($"{p}: not a regular file");
        var result = new List<(long Offset, long Length)>();
        var tree = v.Extents(inode);
        if (tree is null) return result;
        foreach (var kv in tree.Scan())
        {
            var e = Extent.Decode(kv.Value, 0);
            if (e.Unwritten) continue;
            long off = (long)(FileKeys.ParseExtentKey(kv.Key) * BlockSize);
            if ((ulong)off >= inode.Size) break;
            long len = Math.Min((long)e.Count * BlockSize, (long)inode.Size - off);
            if (result.Count > 0 && result[^1].Offset + result[^1].Length == off) result[^1] = (result[^1].Offset, result[^1].Length + len);
            else result.Add((off, len));
        }
        return result;
    }

    /// <summary>
    /// How [offset, offset + length) of a file is stored, clipped to its size, as consecutive
    /// segments in order (adjacent segments of one kind merged): data, allocated but unwritten
    /// (reads as zeros), or a hole. What NBD block status reports. Stops once it has
    /// <paramref name="maxSegments"/> whole segments, so that a client asking about the rest of a
    /// huge file one extent at a time does not pay for the whole file each time. Returns true if
    /// the segments reach the end of the range (or of the file).
    /// </summary>
    internal bool Allocation(VolumeRecord rec, ulong ino, long offset, long length, List<AllocationSegment> into, int maxSegments = int.MaxValue)
    {
        into.Clear();
        if (offset >= 0 && length > 0) WaitForDeferred(rec, ino, (ulong)offset / BlockSize, ((ulong)offset + (ulong)length + BlockSize - 1) / BlockSize);
        using var rt = Pool.BeginRead();
        var v = new VolumeReader(rec, rt.Tree(rec.Tree), Pool.Store);
        var inode = v.GetInode(ino);
        long end = Math.Min(offset + length, (long)inode.Size);
        if (end <= offset) return true;
        void Add(long from, long to, AllocationKind kind)
        {
            from = Math.Max(from, offset);
            to = Math.Min(to, end);
            if (to <= from) return;
            if (into.Count > 0 && into[^1].Kind == kind && into[^1].Offset + into[^1].Length == from)
                into[^1] = into[^1] with { Length = into[^1].Length + (to - from) };
            else into.Add(new AllocationSegment(from, to - from, kind));
        }
        long cur = offset;
        var tree = v.Extents(inode);
        if (tree is not null)
        {
            ulong b1 = ((ulong)end + BlockSize - 1) / BlockSize;
            while (true)
            {
                // In pieces: a segment is whole once a later one starts.
                var records = ExtentMap.Overlapping(tree, (ulong)cur / BlockSize, b1, limit: 256);
                foreach (var (block, e) in records)
                {
                    long from = (long)block * BlockSize, to = from + (long)e.Count * BlockSize;
                    if (from > cur) Add(cur, from, AllocationKind.Hole);
                    Add(from, to, e.Unwritten ? AllocationKind.Unwritten : AllocationKind.Data);
                    cur = Math.Max(cur, to);
                }
                if (into.Count > maxSegments)
                {
                    into.RemoveRange(maxSegments, into.Count - maxSegments);
                    return false;
                }
                if (records.Count < 256 || cur >= end) break;
            }
        }
        if (cur < end) Add(cur, end, AllocationKind.Hole);
        if (into.Count > maxSegments)
        {
            into.RemoveRange(maxSegments, into.Count - maxSegments);
            return false;
        }
        return true;
    }
}
