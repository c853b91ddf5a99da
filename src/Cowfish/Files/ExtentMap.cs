using Cowfish.Format;
using Cowfish.Trees;

namespace Cowfish.Files;

/// <summary>Operations on one file's extent tree, inside a write transaction.</summary>
internal static class ExtentMap
{
    /// <summary>Records that overlap file blocks [from, to), in order, with the file block each starts at.</summary>
    public static List<(ulong Block, Extent Extent)> Overlapping(TreeReader tree, ulong from, ulong to, ulong nodeHint = 0)
    {
        var result = new List<(ulong, Extent)>();
        var c = tree.Cursor();
        // The record that starts at or before `from` may reach into the range.
        var fromKey = FileKeys.ExtentKey(from);
        c.Seek(fromKey);
        if (!c.Valid) c.Last();
        else if (FileKeys.ParseExtentKey(c.Key) > from) c.Prev();
        if (!c.Valid) c.Seek(fromKey); // nothing starts at or before `from`
        while (c.Valid)
        {
            ulong start = FileKeys.ParseExtentKey(c.Key);
            if (start >= to) break;
            var e = Extent.Decode(c.Value, nodeHint);
            if (start + e.Count > from) result.Add((start, e));
            c.Next();
        }
        return result;
    }

    /// <summary>
    /// Makes file blocks [from, to) map to <paramref name="fresh"/> (records whose references the
    /// caller already holds) and nothing else. Records that stick out of the range are cut, and the
    /// parts that stay take their own reference to their disk extent before the old record goes.
    /// </summary>
    public static void Replace(TreeWriter tree, ITreeSpace space, ulong from, ulong to, IReadOnlyList<(ulong Block, Extent Extent)> fresh)
    {
        foreach (var (start, e) in Overlapping(tree, from, to))
        {
            ulong end = start + e.Count;
            var keep = new List<(ulong, Extent)>(2);
            if (start < from) keep.Add((start, e.Slice(0, (uint)(from - start))));
            if (end > to) keep.Add((to, e.Slice((uint)(to - start), (uint)(end - to))));
            foreach (var _ in keep) space.AddRef(e.DiskStart, e.DiskBlocks);
            tree.Delete(FileKeys.ExtentKey(start));
            foreach (var (b, piece) in keep) tree.Put(FileKeys.ExtentKey(b), piece.Encode());
        }
        foreach (var (b, e) in fresh)
        {
            System.Diagnostics.Debug.Assert(b >= from && b + e.Count <= to, "a new record outside the range it replaces");
            tree.Put(FileKeys.ExtentKey(b), e.Encode());
        }
    }

    /// <summary>Drops every record at or past file block <paramref name="from"/> (truncate).</summary>
    public static void RemoveFrom(TreeWriter tree, ITreeSpace space, ulong from) => Replace(tree, space, from, ulong.MaxValue, []);
}
