using Cowfish.Format;
using Cowfish.Trees;

namespace Cowfish.Files;

/// <summary>Operations on one file's extent tree, inside a write transaction.</summary>
internal static class ExtentMap
{
    /// <summary>Records that overlap file blocks [from, to), in order, with the file block each starts at; at most <paramref name="limit"/>.</summary>
    public static List<(ulong Block, Extent Extent)> Overlapping(TreeReader tree, ulong from, ulong to, int limit = int.MaxValue)
    {
        var result = new List<(ulong, Extent)>();
        OverlappingInto(tree, from, to, result, limit);
        return result;
    }

    /// <summary><see cref="Overlapping"/>, appended to <paramref name="result"/>.</summary>
    public static void OverlappingInto(TreeReader tree, ulong from, ulong to, List<(ulong Block, Extent Extent)> result, int limit = int.MaxValue)
    {
        var c = tree.Cursor();
        // The record that starts at or before `from` may reach into the range.
        Span<byte> fromKey = stackalloc byte[8];
        FileKeys.ExtentKey(from, fromKey);
        c.Seek(fromKey);
        if (!c.Valid) c.Last();
        else if (FileKeys.ParseExtentKey(c.KeySpan) > from) c.Prev();
        if (!c.Valid) c.Seek(fromKey); // nothing starts at or before `from`
        int found = 0;
        while (c.Valid)
        {
            ulong start = FileKeys.ParseExtentKey(c.KeySpan);
            if (start >= to) break;
            var e = Extent.Decode(c.ValueSpan, 0);
            if (start + e.Count > from)
            {
                result.Add((start, e));
                if (++found >= limit) break;
            }
            c.Next();
        }
    }

    // Scratch lists of the mapping thread: Replace does not nest, and one thread maps at a time per writer.
    [ThreadStatic] private static List<(ulong Block, Extent Extent)>? t_overlapping;
    [ThreadStatic] private static List<(ulong Block, Extent Piece)>? t_keep;

    /// <summary>
    /// Makes file blocks [from, to) map to <paramref name="fresh"/> (records whose references the
    /// caller already holds) and nothing else. Records that stick out of the range are cut. When a
    /// cut record is the only user of its disk extent, the extent is cut too and the blocks no record
    /// covers any more are freed; otherwise the parts that stay each take a reference to the extent.
    /// </summary>
    public static void Replace(TreeWriter tree, ITreeSpace space, ulong from, ulong to, IReadOnlyList<(ulong Block, Extent Extent)> fresh)
    {
        var overlapping = t_overlapping ??= new(4);
        var keep = t_keep ??= new(2);
        overlapping.Clear();
        OverlappingInto(tree, from, to, overlapping);
        Span<byte> key = stackalloc byte[8];
        Span<byte> value = stackalloc byte[Extent.MaxEncodedLength];
        foreach (var (start, e) in overlapping)
        {
            FileKeys.ExtentKey(start, key);
            // Make the record's leaf private first: if a snapshot shares it, copying it takes a
            // reference to the extent, and the count read below is then exact.
            tree.Put(key, e.EncodeInto(value), releaseReplaced: false);
            ulong end = start + e.Count;
            keep.Clear();
            if (start < from) keep.Add((start, e.Slice(0, (uint)(from - start))));
            if (end > to) keep.Add((to, e.Slice((uint)(to - start), (uint)(end - to))));
            if (space.RefCount(e.DiskStart) == 1)
            {
                // The only user: each kept piece becomes a disk extent of its own, the rest is freed.
                tree.Delete(key, releaseRemoved: false);
                ulong cur = e.DiskStart, diskEnd = e.DiskStart + e.DiskBlocks;
                foreach (var (b, piece) in keep)
                {
                    ulong ps = piece.DiskStart + piece.Offset;
                    if (ps > cur) space.Release(cur, (uint)(ps - cur));
                    tree.Put(FileKeys.ExtentKey(b, key), (piece with { DiskStart = ps, DiskBlocks = piece.Count, Offset = 0 }).EncodeInto(value));
                    cur = ps + piece.Count;
                }
                if (diskEnd > cur) space.Release(cur, (uint)(diskEnd - cur));
                continue;
            }
            foreach (var _ in keep) space.AddRef(e.DiskStart, e.DiskBlocks);
            tree.Delete(key);
            foreach (var (b, piece) in keep) tree.Put(FileKeys.ExtentKey(b, key), piece.EncodeInto(value));
        }
        overlapping.Clear();
        foreach (var (b, e) in fresh)
        {
            System.Diagnostics.Debug.Assert(b >= from && b + e.Count <= to, "a new record outside the range it replaces");
            tree.Put(FileKeys.ExtentKey(b, key), e.EncodeInto(value));
        }
    }
}
