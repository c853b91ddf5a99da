using System.Buffers.Binary;
using Cowfish.Allocation;
using Cowfish.Format;
using Cowfish.Trees;

namespace Cowfish.Transactions;

/// <summary>
/// Persists the allocation bitmap as bitmap pages, indexed by the space-map tree (page number → block).
/// Pages are copy-on-write like everything else: a commit writes each changed page to a new block.
/// </summary>
internal static class SpaceMapStore
{
    /// <summary>
    /// Writes every dirty page and returns the space-map tree's new root. Placing a page allocates a
    /// block and frees the old one, which can dirty further pages, so placement repeats until every
    /// dirty page has a home; pages are encoded only at the end, when the bitmap no longer changes.
    /// </summary>
    public static ulong Persist(SpaceMap map, TreeWriter spaceTree, NodeStore store, ulong generation)
    {
        var placed = new Dictionary<ulong, ulong>();
        while (true)
        {
            var todo = map.DirtyPages.Where(p => !placed.ContainsKey(p)).OrderBy(p => p).ToList();
            if (todo.Count == 0 && !spaceTree.IsDirty) break;
            foreach (ulong page in todo)
            {
                var key = CatalogKeys.U64Key(page);
                if (spaceTree.TryGet(key, out var old)) map.Free(CatalogKeys.ParseU64Value(old, 0), 1);
                ulong addr = map.Allocate(1);
                placed[page] = addr;
                spaceTree.Put(key, CatalogKeys.U64Value(addr));
            }
            spaceTree.Spill();
        }
        var block = new byte[Layout.BlockSize];
        foreach (var (page, addr) in placed)
        {
            map.EncodePage(page, block);
            BlockHeader.Seal(block, Magic.Bitmap, addr, generation);
            store.WriteBlock(addr, block);
        }
        map.ClearDirty();
        return spaceTree.CommittedRoot;
    }

    /// <summary>Reads every bitmap page of a committed state into <paramref name="map"/>, validating each.</summary>
    public static void Load(SpaceMap map, NodeStore store, ulong spaceRoot)
    {
        var tree = new TreeReader(store, spaceRoot, TreeKind.SpaceMap);
        var block = new byte[Layout.BlockSize];
        ulong seen = 0;
        foreach (var (page, addr) in Pages(tree, map.TotalBlocks))
        {
            ReadPage(store, page, addr, block);
            map.LoadPage(page, block);
            seen++;
        }
        if (seen != map.PageCount)
            throw new CorruptionException(spaceRoot, "space-map page count", map.PageCount.ToString(), seen.ToString());
        ulong beyond = map.FirstBitBeyondEnd();
        if (beyond != 0)
            throw new CorruptionException(spaceRoot, "space map", $"no block at or past {map.TotalBlocks} in use", $"block {beyond} in use");
        for (ulong b = 0; b < Layout.FirstDataBlock; b++)
            if (!map.IsAllocated(b)) throw new CorruptionException(spaceRoot, "space map", $"superblock slot {b} in use", "free");
    }

    /// <summary>The (page, block) entries of a space-map tree, validated against the pool size.</summary>
    public static IEnumerable<(ulong Page, ulong Address)> Pages(TreeReader tree, ulong totalBlocks)
    {
        ulong pages = (totalBlocks + Layout.BitsPerPage - 1) / Layout.BitsPerPage;
        foreach (var kv in tree.Scan())
        {
            ulong page = CatalogKeys.ParseU64Key(kv.Key, 0);
            ulong addr = CatalogKeys.ParseU64Value(kv.Value, 0);
            if (page >= pages) throw new CorruptionException(addr, "space-map page number", $"< {pages}", page.ToString());
            if (addr < Layout.FirstDataBlock || addr >= totalBlocks)
                throw new CorruptionException(addr, "space-map page address", $"{Layout.FirstDataBlock}..{totalBlocks - 1}", addr.ToString());
            yield return (page, addr);
        }
    }

    public static void ReadPage(NodeStore store, ulong page, ulong addr, Span<byte> block)
    {
        store.ReadBlock(addr, block);
        BlockHeader.Verify(block, Magic.Bitmap, addr, "space-map page");
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(block[BlockHeader.KindSpecificOffset..]);
        if (stored != page) throw new CorruptionException(addr, "space-map page number", page.ToString(), stored.ToString());
    }
}
