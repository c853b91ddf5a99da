using Cowfish.Format;
using Cowfish.Trees;

namespace Cowfish.Transactions;

/// <summary>Reading the catalog tree.</summary>
internal static class Catalog
{
    public static IReadOnlyList<TreeId> ListTrees(TreeReader catalog)
    {
        var ids = new List<TreeId>();
        foreach (var kv in catalog.Scan(CatalogKeys.PrefixStart(CatalogKeys.TreePrefix), CatalogKeys.PrefixEnd(CatalogKeys.TreePrefix)))
        {
            if (!CatalogKeys.TryParseTree(kv.Key, kv.Value, out ulong id, out _, out _))
                throw new CorruptionException(0, "catalog tree entry", "a 9-byte key and 17-byte value of a known kind", $"{kv.Key.Length}/{kv.Value.Length} bytes");
            ids.Add(new TreeId(id));
        }
        return ids;
    }

    public static bool TryGetNamed(TreeReader catalog, string name, out TreeId id)
    {
        id = default;
        var key = CatalogKeys.Named(name);
        if (!catalog.TryGet(key, out var v)) return false;
        id = new TreeId(CatalogKeys.ParseU64Value(v, 0));
        return true;
    }

    public static bool TryGetRoot(TreeReader catalog, TreeId id, out BlockRef root, out TreeKind kind)
    {
        root = BlockRef.None;
        kind = 0;
        var key = CatalogKeys.Tree(id.Value);
        if (!catalog.TryGet(key, out var v)) return false;
        if (!CatalogKeys.TryParseTree(key, v, out _, out root, out kind))
            throw new CorruptionException(0, $"catalog entry of tree {id}", "a 17-byte value of a known kind", $"{v.Length} bytes");
        return true;
    }
}
