using Cowfish.Format;
using Cowfish.Trees;

namespace Cowfish.Transactions;

/// <summary>
/// The pool's one write transaction. Changes are private until <see cref="Commit"/>, which publishes
/// them to new readers and, unless asked not to wait, returns once they are durable. Disposing
/// without committing aborts.
/// </summary>
public sealed class WriteTransaction : IDisposable
{
    private readonly Pool _pool;
    private readonly Superblock _base;
    private readonly ulong _gen;
    private readonly PrivateSpace _private;
    private readonly SharedSpace _shared;
    private readonly TreeWriter _catalog;
    private readonly Dictionary<ulong, TreeWriter> _open = new();
    // The root each open tree has in the catalog now. A tree's root can move without any dirty
    // node (a root collapsing onto a clean child), so spilling compares against this, not the writer.
    private readonly Dictionary<ulong, BlockRef> _recorded = new();
    private ulong _nextTreeId, _nextDropSeq;
    private bool _done;
    // The node-page epoch the writer holds until it finishes (see PagePool).
    private readonly long _epoch;
    // Relocation: at commit, move every bookkeeping block at or above this (0 = none), and
    // shrink the pool to _shrinkTo blocks (0 = keep its size).
    private ulong _relocateFrom, _shrinkTo;

    internal WriteTransaction(Pool pool, Superblock baseState, ulong generation)
    {
        _pool = pool;
        _base = baseState;
        _gen = generation;
        _epoch = pool.Store.Pages.Enter();
        _private = new PrivateSpace(pool.Space, pool.Store, generation);
        _shared = new SharedSpace(pool.Space, pool.Store, generation, baseState.RefCountRoot, QueueDrop);
        _catalog = baseState.CatalogRoot.IsNone
            ? TreeWriter.CreateEmpty(_private, TreeKind.Catalog)
            : new TreeWriter(_private, baseState.CatalogRoot, TreeKind.Catalog);
        _nextTreeId = baseState.NextTreeId;
        _nextDropSeq = baseState.NextDropSeq;
    }

    public Generation Generation => new(_gen);

    // --- trees ----------------------------------------------------------------------------

    /// <summary>Creates an empty tree.</summary>
    public TreeId CreateTree() => CreateTree(TreeKind.Plain);

    internal TreeId CreateTree(TreeKind kind) => Guard(() =>
    {
        ulong id = _nextTreeId++;
        var w = TreeWriter.CreateEmpty(_shared, kind);
        _open[id] = w;
        _recorded[id] = BlockRef.None;
        _catalog.Put(CatalogKeys.Tree(id), CatalogKeys.TreeValue(BlockRef.None, kind));
        return new TreeId(id);
    });

    /// <summary>
    /// Registers an existing tree root (one held inside a value, such as a file's extent map) as a
    /// catalog tree of its own, taking a reference to it: a frozen, point-in-time copy in O(1).
    /// </summary>
    internal TreeId AdoptTree(TreeKind kind, BlockRef root) => Guard(() =>
    {
        if (root.IsNone) throw new InvalidRequestException("cannot adopt an empty tree");
        _shared.AddRef(root.Address, 1);
        ulong id = _nextTreeId++;
        _catalog.Put(CatalogKeys.Tree(id), CatalogKeys.TreeValue(root, kind));
        return new TreeId(id);
    });

    /// <summary>The tree registered under a well-known name, if any (for example the volume directory).</summary>
    public bool TryGetNamedTree(string name, out TreeId id)
    {
        TreeId found = default;
        bool ok = Guard(() => Catalog.TryGetNamed(_catalog, name, out found));
        id = found;
        return ok;
    }

    /// <summary>Registers <paramref name="id"/> under a well-known name.</summary>
    public void SetNamedTree(string name, TreeId id) => Guard(() =>
    {
        _catalog.Put(CatalogKeys.Named(name), CatalogKeys.U64Value(id.Value));
        return 0;
    });

    /// <summary>Every named tree.</summary>
    public IReadOnlyList<(string Name, TreeId Id)> ListNamedTrees() => Guard(() =>
        (IReadOnlyList<(string, TreeId)>)_catalog.Scan(CatalogKeys.PrefixStart(CatalogKeys.NamedPrefix), CatalogKeys.PrefixEnd(CatalogKeys.NamedPrefix))
            .Select(kv => (System.Text.Encoding.UTF8.GetString(kv.Key, 1, kv.Key.Length - 1), new TreeId(CatalogKeys.ParseU64Value(kv.Value, 0))))
            .ToList());

    /// <summary>Removes a name (the tree itself stays until dropped).</summary>
    public bool RemoveNamedTree(string name) => Guard(() => _catalog.Delete(CatalogKeys.Named(name)));

    /// <summary>The writer of an open catalog tree, for the layers above (files, streams).</summary>
    internal TreeWriter TreeWriterFor(TreeId id) => Guard(() => Writer(id));

    /// <summary>A reader of a catalog tree this transaction does not change, optionally bypassing the node cache.</summary>
    internal TreeReader ReaderFor(TreeId id, bool bypassCache) => Guard(() =>
    {
        if (_open.ContainsKey(id.Value)) throw new InvalidOperationException($"tree {id} is open for writing in this transaction");
        if (!Catalog.TryGetRoot(_catalog, id, out var root, out var kind)) throw new NotFoundException($"tree {id} does not exist");
        return new TreeReader(_pool.Store, root, kind) { BypassCache = bypassCache };
    });

    /// <summary>The reference-counted space that trees held inside values (file extent maps) are changed in.</summary>
    internal ITreeSpace SharedSpace => _shared;

    internal Pool Pool => _pool;

    public bool TreeExists(TreeId id) => Guard(() => _catalog.TryGet(CatalogKeys.Tree(id.Value), out _));

    public IReadOnlyList<TreeId> ListTrees() => Guard(() => Catalog.ListTrees(_catalog));

    /// <summary>
    /// Makes a new tree with the same contents in O(1): both trees share the root, whose reference
    /// count goes up by one. Later changes to either copy shadow only the nodes they touch.
    /// </summary>
    public TreeId CloneTree(TreeId source) => Guard(() =>
    {
        var w = Writer(source);
        var root = SpillTree(source.Value, w);
        _shared.AddRef(root.Address, 1);
        ulong id = _nextTreeId++;
        _catalog.Put(CatalogKeys.Tree(id), CatalogKeys.TreeValue(root, w.Kind));
        return new TreeId(id);
    });

    /// <summary>
    /// Removes a tree at once. Its blocks are given back in the background: each commit releases a
    /// bounded number of its nodes (see <see cref="PoolOptions.DropBudgetPerCommit"/>).
    /// </summary>
    public void DropTree(TreeId id) => Guard(() =>
    {
        var w = Writer(id);
        var root = SpillTree(id.Value, w);
        _open.Remove(id.Value);
        _recorded.Remove(id.Value);
        _catalog.Delete(CatalogKeys.Tree(id.Value));
        QueueDrop(root);
        return 0;
    });

    /// <summary>Queues one reference to a tree node for background release.</summary>
    private void QueueDrop(BlockRef node) => _catalog.Put(CatalogKeys.Drop(_nextDropSeq++), CatalogKeys.DropValue(node));

    public bool TryGet(TreeId tree, byte[] key, out byte[] value)
    {
        byte[] v = Array.Empty<byte>();
        bool found = Guard(() => Writer(tree).TryGet(key, out v));
        value = v;
        return found;
    }

    /// <summary>Inserts or replaces.</summary>
    public void Put(TreeId tree, byte[] key, byte[] value) => Guard(() => { Writer(tree).Put(key, value); return 0; });

    public bool Delete(TreeId tree, byte[] key) => Guard(() => Writer(tree).Delete(key));

    /// <summary>Entries with from ≤ key &lt; to. The tree must not change while the scan runs.</summary>
    public IEnumerable<KeyValuePair<byte[], byte[]>> Scan(TreeId tree, byte[]? from = null, byte[]? to = null, bool reverse = false)
    {
        EnsureActive();
        return Writer(tree).Scan(from, to, reverse);
    }

    /// <summary>Whether dropped trees still hold blocks that background reclaim has not given back.</summary>
    public bool HasPendingDrops => Guard(() => _catalog.Scan(CatalogKeys.PrefixStart(CatalogKeys.DropPrefix), CatalogKeys.PrefixEnd(CatalogKeys.DropPrefix)).Any());

    /// <summary>Dropped-tree nodes not yet released.</summary>
    public int PendingDrops => Guard(() => _catalog.Scan(CatalogKeys.PrefixStart(CatalogKeys.DropPrefix), CatalogKeys.PrefixEnd(CatalogKeys.DropPrefix)).Count());

    // --- relocation -----------------------------------------------------------------------

    /// <summary>The catalog's tree entries from <paramref name="from"/> on (all when null), in key order.</summary>
    internal List<(byte[] Key, TreeId Id, BlockRef Root, TreeKind Kind)> CatalogTreesFrom(byte[]? from) => Guard(() =>
    {
        var list = new List<(byte[], TreeId, BlockRef, TreeKind)>();
        var start = from ?? CatalogKeys.PrefixStart(CatalogKeys.TreePrefix);
        foreach (var kv in _catalog.Scan(start, CatalogKeys.PrefixEnd(CatalogKeys.TreePrefix)))
        {
            if (!CatalogKeys.TryParseTree(kv.Key, kv.Value, out ulong id, out var root, out var kind))
                throw new CorruptionException(_catalog.CommittedRoot.Address, "catalog tree entry", "a 9-byte key and 17-byte value of a known kind", $"{kv.Key.Length}/{kv.Value.Length} bytes");
            list.Add((kv.Key, new TreeId(id), root, kind));
        }
        return list;
    });

    /// <summary>
    /// Relocation: records a new root for a tree that is not open in this transaction. The caller
    /// has moved the catalog's one reference from the old root to the new one.
    /// </summary>
    internal void SetCatalogRoot(TreeId id, BlockRef root, TreeKind kind) => Guard(() =>
    {
        if (_open.ContainsKey(id.Value)) throw new InvalidOperationException($"tree {id} is open in this transaction");
        _catalog.Put(CatalogKeys.Tree(id.Value), CatalogKeys.TreeValue(root, kind));
        return 0;
    });

    /// <summary>References to a user block (1 unless shared).</summary>
    internal uint RefCount(ulong address) => Guard(() => _shared.RefCount(address));

    /// <summary>One more reference to a user block or run already in use.</summary>
    internal void AddReference(ulong address, uint blocks) => Guard(() => { _shared.AddRef(address, blocks); return 0; });

    /// <summary>One reference less; the last one frees the run (a node's children are not touched: see <see cref="ReleaseTree"/>).</summary>
    internal void ReleaseReference(ulong address, uint blocks) => Guard(() => { _shared.Release(address, blocks); return 0; });

    /// <summary>One reference less to a node; the last one queues it, with everything it references, for background release.</summary>
    internal void ReleaseTree(BlockRef node) => Guard(() => { _shared.ReleaseSubtree(node); return 0; });

    /// <summary>Takes up to <paramref name="budget"/> node references off the drop queue now; returns whether any remain.</summary>
    internal bool ReleaseDroppedNow(int budget) => Guard(() =>
    {
        ReleaseDropped(budget);
        return HasPendingDrops;
    });

    /// <summary>
    /// At commit, moves every block of the bookkeeping trees (catalog, reference counts, space
    /// map) and every bitmap page at or above <paramref name="limit"/> to blocks below the
    /// allocator's ceiling.
    /// </summary>
    internal void RelocateBookkeeping(ulong limit) => _relocateFrom = limit;

    /// <summary>At commit, shrinks the pool to <paramref name="totalBlocks"/>; every block from there on must be idle by then.</summary>
    internal void ShrinkTo(ulong totalBlocks) => _shrinkTo = totalBlocks;

    // --- commit ---------------------------------------------------------------------------

    /// <summary>
    /// Writes everything and publishes the new state to readers. With <paramref name="waitForDurability"/>
    /// (the default) it returns once the commit is durable, possibly sharing a flush with other
    /// commits; without, a later <see cref="Pool.Flush"/> or durable commit makes it durable.
    /// </summary>
    public void Commit(bool waitForDurability = true)
    {
        using var phase = PhaseRecorder.Enter(Phase.Commit);
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        EnsureActive();
        try
        {
            foreach (var (id, w) in _open) SpillTree(id, w);
            ReleaseDropped(_pool.Options.DropBudgetPerCommit);
            if (_relocateFrom != 0) _catalog.RelocateFrom(_relocateFrom);
            var catalogRoot = _catalog.Spill();
            var refRoot = WriteRefCounts();
            var spaceTree = _base.SpaceMapRoot.IsNone
                ? TreeWriter.CreateEmpty(_private, TreeKind.SpaceMap)
                : new TreeWriter(_private, _base.SpaceMapRoot, TreeKind.SpaceMap);
            if (_shrinkTo != 0) ShrinkSpaceMap(spaceTree, _shrinkTo);
            if (_relocateFrom != 0) RelocatePages(spaceTree, _relocateFrom);
            var (spaceRoot, totalBlocks) = SpaceMapStore.Persist(_pool.Space, spaceTree, _pool.Store, _gen);
            var sb = _base with
            {
                Generation = _gen,
                TotalBlocks = totalBlocks,
                CatalogRoot = catalogRoot,
                RefCountRoot = refRoot,
                SpaceMapRoot = spaceRoot,
                NextTreeId = _nextTreeId,
                NextDropSeq = _nextDropSeq,
            };
            _pool.Space.CommitTransaction(_gen);
            _pool.Stage(sb);
        }
        catch (Exception e)
        {
            _pool.Space.AbortTransaction();
            Finish();
            if (e is DeviceIOException) { _pool.Fail(e); throw new EngineFailedException(e); }
            if (e is EngineFailedException) _pool.Fail(e.InnerException ?? e);
            throw;
        }
        Finish();
        Instruments.Committed(started);
        if (waitForDurability) _pool.MakeDurable(_gen);
        _pool.Options.AfterCommit?.Invoke(_pool);
    }

    /// <summary>Discards every change.</summary>
    public void Abort()
    {
        if (_done) return;
        _pool.Space.AbortTransaction();
        Finish();
    }

    public void Dispose() => Abort();

    private void Finish()
    {
        _done = true;
        _pool.Store.Pages.Exit(_epoch);
        _pool.EndWrite();
    }

    // --- helpers --------------------------------------------------------------------------

    private TreeWriter Writer(TreeId id)
    {
        if (_open.TryGetValue(id.Value, out var w)) return w;
        if (!_catalog.TryGet(CatalogKeys.Tree(id.Value), out var v) || !CatalogKeys.TryParseTree(CatalogKeys.Tree(id.Value), v, out _, out var root, out var kind))
            throw new NotFoundException($"tree {id} does not exist");
        w = new TreeWriter(_shared, root, kind);
        _open[id.Value] = w;
        _recorded[id.Value] = root;
        return w;
    }

    /// <summary>Writes a tree's dirty nodes and records its root in the catalog if it moved.</summary>
    private BlockRef SpillTree(ulong id, TreeWriter w)
    {
        var root = w.Spill();
        if (!_recorded.TryGetValue(id, out var recorded) || recorded != root)
        {
            _catalog.Put(CatalogKeys.Tree(id), CatalogKeys.TreeValue(root, w.Kind));
            _recorded[id] = root;
        }
        return root;
    }

    /// <summary>
    /// Background reclaim: takes up to <paramref name="budget"/> node references off the drop queue.
    /// A shared node just loses one reference; a node's last reference frees it and queues its children.
    /// </summary>
    private void ReleaseDropped(int budget)
    {
        var start = CatalogKeys.PrefixStart(CatalogKeys.DropPrefix);
        var end = CatalogKeys.PrefixEnd(CatalogKeys.DropPrefix);
        var refs = new List<ValueRef>();
        for (int done = 0; done < budget; done++)
        {
            var first = _catalog.Scan(start, end).FirstOrDefault();
            if (first.Key is null) break;
            if (!CatalogKeys.TryParseDrop(first.Key, first.Value, out _, out var nodeRef))
                throw new CorruptionException(_catalog.CommittedRoot.Address, "drop-queue entry", "9-byte key, 16-byte value", $"{first.Key.Length}/{first.Value.Length} bytes");
            _catalog.Delete(first.Key);
            ulong addr = nodeRef.Address;
            if (_shared.RefCount(addr) > 1) { _shared.Release(addr, 1); continue; }
            var node = _pool.Store.Read(addr);
            if (node.Generation != nodeRef.Generation)
                throw new CorruptionException(addr, "dropped node generation", nodeRef.Generation.ToString(), node.Generation.ToString());
            if (!node.IsLeaf)
            {
                for (int c = 0; c < node.Count; c++) QueueDrop(node.ChildRef(c));
            }
            else if (ValueReferences.For(node.Kind) is { } vr)
            {
                for (int i = 0; i < node.Count; i++)
                {
                    refs.Clear();
                    vr.Collect(node.Key(i), node.Value(i), refs);
                    foreach (var r in refs)
                    {
                        if (r.IsSubtree) _shared.ReleaseSubtree(r.Subtree);
                        else _shared.Release(r.Address, r.Blocks);
                    }
                }
            }
            _shared.Release(addr, 1);
        }
    }

    /// <summary>Relocation: the bitmap pages past the new end go, and so does the space past it.</summary>
    private void ShrinkSpaceMap(TreeWriter spaceTree, ulong totalBlocks)
    {
        ulong pages = (totalBlocks + Layout.BitsPerPage - 1) / Layout.BitsPerPage;
        var gone = spaceTree.Scan(CatalogKeys.U64Key(pages)).ToList();
        foreach (var kv in gone)
        {
            _pool.Space.Free(CatalogKeys.ParseRefValue(kv.Value, 0).Address, 1);
            spaceTree.Delete(kv.Key);
        }
        _pool.Space.Shrink(totalBlocks);
    }

    /// <summary>Relocation: the space-map tree's nodes and the bitmap pages at or above the limit move (Persist places the pages).</summary>
    private void RelocatePages(TreeWriter spaceTree, ulong limit)
    {
        spaceTree.RelocateFrom(limit);
        foreach (var kv in spaceTree.Scan().ToList())
            if (CatalogKeys.ParseRefValue(kv.Value, 0).Address >= limit) _pool.Space.MarkPageDirty(CatalogKeys.ParseU64Key(kv.Key, 0));
    }

    private BlockRef WriteRefCounts()
    {
        if (_shared.Overlay.Count == 0 && !_base.RefCountRoot.IsNone && _relocateFrom == 0) return _base.RefCountRoot;
        var tree = _base.RefCountRoot.IsNone
            ? TreeWriter.CreateEmpty(_private, TreeKind.RefCount)
            : new TreeWriter(_private, _base.RefCountRoot, TreeKind.RefCount);
        foreach (var (addr, rc) in _shared.Overlay.OrderBy(kv => kv.Key))
        {
            var key = CatalogKeys.U64Key(addr);
            if (rc <= 1) tree.Delete(key);
            else tree.Put(key, CatalogKeys.U64Value(rc));
        }
        if (_relocateFrom != 0) tree.RelocateFrom(_relocateFrom);
        return tree.Spill();
    }

    private void EnsureActive()
    {
        if (_done) throw new InvalidRequestException("the transaction has already committed or aborted");
        _pool.ThrowIfUnusable();
    }

    /// <summary>Runs an operation; an I/O failure makes the pool unusable, since memory may now be ahead of disk.</summary>
    private T Guard<T>(Func<T> op)
    {
        EnsureActive();
        try { return op(); }
        catch (DeviceIOException e)
        {
            _pool.Fail(e);
            throw new EngineFailedException(e);
        }
    }
}
