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
    // Where a commit encodes its bitmap pages (one writer at a time, but any thread).
    [ThreadStatic] private static byte[]? t_block;

    /// <summary>
    /// Writes every dirty page and returns the space-map tree's new root and the pool size those pages
    /// describe (the superblock must record exactly that size). Placing a page allocates a
    /// block and frees the old one, which can dirty further pages, so placement repeats until every
    /// dirty page has a home; pages are encoded only at the end, when the bitmap no longer changes.
    /// </summary>
    public static (BlockRef Root, ulong TotalBlocks) Persist(SpaceMap map, TreeWriter spaceTree, NodeStore store, ulong generation)
    {
        var placed = new Dictionary<ulong, ulong>();
        ulong total;
        while (true)
        {
            var (dirty, size) = map.DirtySnapshot();
            total = size;
            var todo = dirty.Where(p => !placed.ContainsKey(p)).ToList();
            if (todo.Count == 0 && !spaceTree.IsDirty) break;
            foreach (ulong page in todo)
            {
                var key = CatalogKeys.U64Key(page);
                if (spaceTree.TryGet(key, out var old)) map.Free(CatalogKeys.ParseRefValue(old, 0).Address, 1);
                ulong addr = map.AllocateNear(page * Layout.BitsPerPage, (page + 1) * Layout.BitsPerPage);
                placed[page] = addr;
                spaceTree.Put(key, CatalogKeys.RefValue(new BlockRef(addr, generation)));
            }
            spaceTree.Spill();
        }
        var block = t_block ??= GC.AllocateUninitializedArray<byte>(Layout.BlockSize, pinned: true);
        foreach (var (page, addr) in placed)
        {
            // Each page records the generation it was written in; the tree's pointer says the same.
            map.EncodePage(page, block);
            BlockHeader.Seal(block, Magic.Bitmap, addr, generation);
            store.WriteBlock(addr, block);
        }
        map.ClearDirty(placed.Keys);
        return (spaceTree.CommittedRoot, total);
    }

    /// <summary>Reads every bitmap page of a committed state into <paramref name="map"/>, validating each.</summary>
    public static void Load(SpaceMap map, NodeStore store, BlockRef spaceRoot)
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
            throw new CorruptionException(spaceRoot.Address, "space-map page count", map.PageCount.ToString(), seen.ToString());
        ulong beyond = map.FirstBitBeyondEnd();
        if (beyond != 0)
            throw new CorruptionException(spaceRoot.Address, "space map", $"no block at or past {map.TotalBlocks} in use", $"block {beyond} in use");
        for (ulong b = 0; b < Layout.FirstDataBlock; b++)
            if (!map.IsAllocated(b)) throw new CorruptionException(spaceRoot.Address, "space map", $"superblock slot {b} in use", "free");
    }

    /// <summary>The (page, block) entries of a space-map tree, validated against the pool size.</summary>
    public static IEnumerable<(ulong Page, BlockRef Address)> Pages(TreeReader tree, ulong totalBlocks)
    {
        ulong pages = (totalBlocks + Layout.BitsPerPage - 1) / Layout.BitsPerPage;
        foreach (var kv in tree.Scan())
        {
            ulong page = CatalogKeys.ParseU64Key(kv.Key, 0);
            var addr = CatalogKeys.ParseRefValue(kv.Value, 0);
            if (page >= pages) throw new CorruptionException(addr.Address, "space-map page number", $"< {pages}", page.ToString());
            if (addr.Address < Layout.FirstDataBlock || addr.Address >= totalBlocks)
                throw new CorruptionException(addr.Address, "space-map page address", $"{Layout.FirstDataBlock}..{totalBlocks - 1}", addr.Address.ToString());
            yield return (page, addr);
        }
    }

    public static void ReadPage(NodeStore store, ulong page, BlockRef at, Span<byte> block)
    {
        store.ReadBlock(at.Address, block);
        ulong gen = BlockHeader.Verify(block, Magic.Bitmap, at.Address, "space-map page");
        if (gen != at.Generation) throw new CorruptionException(at.Address, "space-map page generation", at.Generation.ToString(), gen.ToString());
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(block[BlockHeader.KindSpecificOffset..]);
        if (stored != page) throw new CorruptionException(at.Address, "space-map page number", page.ToString(), stored.ToString());
    }
}
