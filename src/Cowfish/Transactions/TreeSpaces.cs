using Cowfish.Allocation;
using Cowfish.Format;
using Cowfish.Trees;

namespace Cowfish.Transactions;

/// <summary>
/// The space of the pool's own bookkeeping trees (catalog, reference counts, space map): they are
/// never shared, so every block has exactly one reference.
/// </summary>
internal sealed class PrivateSpace(SpaceMap map, NodeStore store, ulong generation) : ITreeSpace
{
    public ulong Generation => generation;
    public NodeStore Store => store;
    public uint RefCount(ulong address) => 1;
    public void AddRef(ulong address, uint blocks) => throw new InvalidOperationException("bookkeeping trees are never shared");
    public void Release(ulong address, uint blocks) => map.Free(address, blocks);
    public void ReleaseSubtree(BlockRef root) => throw new InvalidOperationException("bookkeeping trees hold no subtrees");
    public ulong AllocateNode() => map.Allocate(1);
}

/// <summary>
/// The space of user trees, which clones share. Counts of blocks referenced more than once live in
/// the reference-count tree; this transaction's changes sit in an overlay until commit writes them.
/// A block with no entry has one reference.
/// </summary>
internal sealed class SharedSpace : ITreeSpace
{
    private readonly SpaceMap _map;
    private readonly TreeReader? _committedCounts;
    // Absolute counts this transaction changed; 1 (or a freed block) means "no entry" at commit.
    private readonly Dictionary<ulong, uint> _overlay = new();

    private readonly Action<BlockRef> _queueDrop;

    public SharedSpace(SpaceMap map, NodeStore store, ulong generation, BlockRef refCountRoot, Action<BlockRef> queueDrop)
    {
        _queueDrop = queueDrop;
        _map = map;
        Store = store;
        Generation = generation;
        _committedCounts = refCountRoot.IsNone ? null : new TreeReader(store, refCountRoot, TreeKind.RefCount);
    }

    public ulong Generation { get; }
    public NodeStore Store { get; }
    public IReadOnlyDictionary<ulong, uint> Overlay => _overlay;

    public uint RefCount(ulong address)
    {
        if (_overlay.TryGetValue(address, out uint rc)) return rc;
        Span<byte> key = stackalloc byte[8];
        if (_committedCounts is not null
            && _committedCounts.TryRead(CatalogKeys.U64Key(address, key), address, static (v, at) => CatalogKeys.ParseU64Value(v, at), out ulong n))
        {
            if (n < 2 || n > uint.MaxValue) throw new CorruptionException(address, "reference count", "2.." + uint.MaxValue, n.ToString());
            return (uint)n;
        }
        return 1;
    }

    public void AddRef(ulong address, uint blocks)
    {
        uint rc = RefCount(address);
        if (rc == uint.MaxValue) throw new InvalidRequestException($"block {address} is shared too many times");
        _overlay[address] = rc + 1;
    }

    public void Release(ulong address, uint blocks)
    {
        uint rc = RefCount(address);
        if (rc > 1) { _overlay[address] = rc - 1; return; }
        _overlay[address] = 1;
        _map.Free(address, blocks);
    }

    /// <summary>
    /// Relocation moved the block at <paramref name="from"/> to <paramref name="to"/>, and every
    /// referrer now points there: the count moves with it. The old address keeps no entry.
    /// </summary>
    public void MoveCount(ulong from, ulong to)
    {
        uint rc = RefCount(from);
        _overlay[from] = 1;
        _overlay[to] = rc;
    }

    public void ReleaseSubtree(BlockRef root)
    {
        uint rc = RefCount(root.Address);
        if (rc > 1) _overlay[root.Address] = rc - 1;
        else _queueDrop(root); // the drop queue holds the last reference until reclaim frees the tree
    }

    public ulong AllocateNode()
    {
        ulong a = _map.Allocate(1);
        // A free block has no committed count; only a block freed earlier in this transaction can
        // have an overlay entry, and that entry already says 1.
        System.Diagnostics.Debug.Assert(!_overlay.TryGetValue(a, out uint rc) || rc == 1, "allocated a block that still has references");
        return a;
    }
}
