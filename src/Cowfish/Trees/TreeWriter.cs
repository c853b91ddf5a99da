using System.Diagnostics;
using Cowfish.Format;

namespace Cowfish.Trees;

/// <summary>
/// Changes one copy-on-write B+tree inside a write transaction.
/// </summary>
/// <remarks>
/// Shadowing follows Rodeh, "B-trees, Shadowing, and Clones": a clean node is copied before it
/// changes. If the node is shared (reference count above 1) the copy takes a new reference to
/// each of its children (or, in a leaf, to each block its values name) and the old node loses
/// one; otherwise the copy simply replaces it and the old block is freed. A node written earlier
/// in this same transaction and not shared is rewritten in place, since no committed state can
/// see it. Dirty nodes get their addresses only when <see cref="Spill"/> writes them, bottom up,
/// so that one commit's nodes land in one contiguous run.
/// </remarks>
internal sealed class TreeWriter : TreeReader
{
    private readonly ITreeSpace _space;
    private readonly IValueReferences? _refs;
    private readonly List<ValueRef> _scratch = new();
    // The nodes one Spill has placed, written together at its end.
    private readonly List<Node> _spilled = new();

    public TreeWriter(ITreeSpace space, BlockRef root, TreeKind kind) : base(space.Store, root, kind)
    {
        _space = space;
        _refs = ValueReferences.For(kind);
    }

    /// <summary>Creates an empty tree (one empty leaf, written at the next spill).</summary>
    public static TreeWriter CreateEmpty(ITreeSpace space, TreeKind kind)
    {
        var w = new TreeWriter(space, BlockRef.None, kind);
        w.DirtyRoot = Node.NewDirty(space.Store.Pages, kind, 0, space.Generation);
        return w;
    }

    public bool IsDirty => DirtyRoot is not null;

    /// <summary>Root as of the last spill (none for a new tree that was never spilled).</summary>
    public BlockRef CommittedRoot => RootRef;

    /// <summary>
    /// Inserts or replaces. The tree takes over the block references <paramref name="value"/> holds
    /// (the caller has already counted them). A replaced value's references are released, unless
    /// <paramref name="releaseReplaced"/> is false: the caller then accounts for them, as when an
    /// inode is rewritten with the new root of an extent tree whose shadowing consumed the old one.
    /// </summary>
    public void Put(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, bool releaseReplaced = true)
    {
        if (key.Length > Layout.MaxKeySize) throw new InvalidRequestException($"key of {key.Length} bytes is over the limit of {Layout.MaxKeySize}");
        if (value.Length > Layout.MaxValueSize) throw new InvalidRequestException($"value of {value.Length} bytes is over the limit of {Layout.MaxValueSize}");
        Version++;
        var path = RentPath();
        var n = DescendWritable(key, path);
        int i = n.LowerBound(key, out bool found);
        if (found)
        {
            if (releaseReplaced) ReleaseValue(key, n.Value(i));
            n.SetValue(i, value);
        }
        else n.InsertLeaf(i, key, value);
        SplitUp(n, path);
    }

    /// <summary>Removes a key; its value's references are released unless <paramref name="releaseRemoved"/> is false (the caller moves them).</summary>
    public bool Delete(ReadOnlySpan<byte> key, bool releaseRemoved = true)
    {
        if (!TryGet(key, out _)) return false;
        Version++;
        var path = RentPath();
        var n = DescendWritable(key, path);
        int i = n.LowerBound(key, out bool found);
        Debug.Assert(found, "key vanished between lookup and delete");
        if (releaseRemoved) ReleaseValue(n.Key(i), n.Value(i));
        n.RemoveAt(i);
        Rebalance(n, path);
        return true;
    }

    /// <summary>Writes every dirty node, children first, and returns the new root.</summary>
    public BlockRef Spill()
    {
        if (DirtyRoot is { } r)
        {
            _spilled.Clear();
            RootRef = SpillNode(r);
            // Between placing the nodes and writing them nothing else writes or frees a block, so
            // the whole spill goes out as a few gathered writes.
            Store.WriteAll(_spilled);
            _spilled.Clear();
            DirtyRoot = null;
            Version++;
        }
        return RootRef;
    }

    private BlockRef SpillNode(Node n)
    {
        if (!n.IsLeaf)
        {
            for (int i = 0; i < n.Count; i++)
            {
                if (n.ChildNodes![i] is { } c)
                {
                    n.SetChildRef(i, SpillNode(c));
                    n.ChildNodes[i] = null;
                }
            }
        }
        if (n.Address == 0) n.Address = _space.AllocateNode();
        n.Generation = _space.Generation;
        n.Dirty = false;
        _spilled.Add(n);
        return new BlockRef(n.Address, n.Generation);
    }

    /// <summary>
    /// Moves every node of this tree placed at or above <paramref name="limit"/>: each such node,
    /// and every node on the path to it, is shadowed, so the next spill writes them to blocks the
    /// allocator picks (below relocation's ceiling). Only for unshared trees (the bookkeeping
    /// trees), where shadowing hands a node's references to its copy: a shared node's copy would
    /// belong to one parent only, breaking the sharing (relocation moves user trees itself).
    /// Reads every node of the tree.
    /// </summary>
    public void RelocateFrom(ulong limit)
    {
        if (DirtyRoot is null)
        {
            if (RootRef.IsNone) return;
            var clean = Root();
            if (!Reaches(clean, limit)) return;
            DirtyRoot = Shadow(clean);
            Version++;
        }
        RelocateDirty(DirtyRoot, limit);
    }

    private void RelocateDirty(Node n, ulong limit)
    {
        Debug.Assert(_space.RefCount(n.Address) <= 1, "relocating a shared tree by shadowing");
        if (n.Address >= limit) { _space.Release(n.Address, 1); n.Address = 0; } // placed earlier in this transaction
        if (n.IsLeaf) return;
        for (int i = 0; i < n.Count; i++)
        {
            if (n.ChildNodes![i] is { } d) { RelocateDirty(d, limit); continue; }
            if (Reaches(Child(n, i), limit)) RelocateDirty(WritableChild(n, i), limit);
        }
    }

    /// <summary>Whether a clean node, or any node below it, lies at or above <paramref name="limit"/>.</summary>
    private bool Reaches(Node clean, ulong limit)
    {
        if (clean.Address >= limit) return true;
        if (clean.IsLeaf) return false;
        for (int i = 0; i < clean.Count; i++)
            if (clean.ChildRef(i).Address >= limit || Reaches(Child(clean, i), limit)) return true;
        return false;
    }

    // --- shadowing ------------------------------------------------------------------------

    /// <summary>Makes the path to <paramref name="key"/>'s leaf writable, recording it in <paramref name="path"/>; returns the leaf.</summary>
    private Node DescendWritable(ReadOnlySpan<byte> key, List<(Node Node, int Index)> path)
    {
        var n = WritableRoot();
        while (!n.IsLeaf)
        {
            int ci = n.ChildFor(key);
            path.Add((n, ci));
            n = WritableChild(n, ci);
        }
        return n;
    }

    private Node WritableRoot()
    {
        if (DirtyRoot is { } d) return d;
        var clean = Root();
        DirtyRoot = Shadow(clean);
        return DirtyRoot;
    }

    private Node WritableChild(Node parent, int i)
    {
        Debug.Assert(parent.Dirty, "making a child writable under a clean parent");
        if (parent.ChildNodes![i] is { } d) return d;
        var copy = Shadow(Child(parent, i));
        parent.ChildNodes[i] = copy;
        return copy;
    }

    private Node Shadow(Node clean)
    {
        ulong addr = clean.Address;
        uint rc = _space.RefCount(addr);
        var copy = clean.CloneDirty(Store.Pages);
        copy.Generation = _space.Generation;
        if (rc > 1)
        {
            // Shared: the copy becomes one more parent of everything the node points to.
            copy.Address = 0;
            if (!copy.IsLeaf) for (int i = 0; i < copy.Count; i++) _space.AddRef(copy.ChildRef(i).Address, 1);
            else if (_refs is not null)
                for (int i = 0; i < copy.Count; i++) foreach (var r in CollectRefs(copy.Key(i), copy.Value(i))) _space.AddRef(r.Address, r.Blocks);
            _space.Release(addr, 1);
        }
        else if (clean.Generation == _space.Generation)
        {
            copy.Address = addr; // written earlier in this transaction: rewrite in place
        }
        else
        {
            copy.Address = 0;
            _space.Release(addr, 1); // ownership of the children moves to the copy
        }
        return copy;
    }

    private List<ValueRef> CollectRefs(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        _scratch.Clear();
        _refs!.Collect(key, value, _scratch);
        return _scratch;
    }

    private void ReleaseValue(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        if (_refs is null) return;
        var refs = CollectRefs(key, value);
        // Releasing a subtree may open other trees that reuse the scratch list: take a copy first.
        if (refs.Count == 0) return;
        foreach (var r in refs.ToArray())
        {
            if (r.IsSubtree) _space.ReleaseSubtree(r.Subtree);
            else _space.Release(r.Address, r.Blocks);
        }
    }

    // One path list per writer: a writer is used by one thread at a time, and Put and Delete do not nest.
    private readonly List<(Node Node, int Index)> _path = new(8);

    private List<(Node Node, int Index)> RentPath()
    {
        _path.Clear();
        return _path;
    }

    /// <summary>A dirty node leaves the tree: give back the block it was placed at, if any.</summary>
    private void Discard(Node n)
    {
        if (n.Address != 0) _space.Release(n.Address, 1);
        n.Retire(Store.Pages);
    }

    // --- structure ------------------------------------------------------------------------

    private void SplitUp(Node n, List<(Node Node, int Index)> path)
    {
        while (n.Overflows)
        {
            var right = SplitOff(n);
            if (path.Count == 0)
            {
                var root = Node.NewDirty(Store.Pages, Kind, (byte)(n.Level + 1), _space.Generation);
                root.InsertChild(0, ReadOnlySpan<byte>.Empty, BlockRef.None, n); // Key(0) of an internal node is never compared
                root.InsertChild(1, right.Key(0), BlockRef.None, right);
                DirtyRoot = root;
                n = root;
                continue;
            }
            var (parent, idx) = path[^1];
            path.RemoveAt(path.Count - 1);
            parent.InsertChild(idx + 1, right.Key(0), BlockRef.None, right);
            n = parent;
        }
    }

    /// <summary>Moves the upper part of an overflowing node into a new right sibling, splitting where the larger half is smallest.</summary>
    private Node SplitOff(Node n)
    {
        int total = n.PayloadBytes, best = 1, bestMax = int.MaxValue, left = 0;
        for (int s = 1; s < n.Count; s++)
        {
            left += n.EntrySize(s - 1);
            int m = Math.Max(left, total - left);
            if (m < bestMax) { bestMax = m; best = s; }
        }
        var right = Node.NewDirty(Store.Pages, Kind, n.Level, _space.Generation);
        n.MoveTail(best, right);
        Debug.Assert(!n.Overflows && !right.Overflows, "split left an overflowing half");
        return right;
    }

    private void Rebalance(Node n, List<(Node Node, int Index)> path)
    {
        while (path.Count > 0)
        {
            var (parent, idx) = path[^1];
            path.RemoveAt(path.Count - 1);
            if (n.Count == 0)
            {
                parent.RemoveAt(idx);
                Discard(n);
            }
            else if (n.PayloadBytes < Node.Capacity / 4 && parent.Count > 1)
            {
                int li = idx + 1 < parent.Count ? idx : idx - 1; // merge child li+1 into child li
                var l = WritableChild(parent, li);
                var r = WritableChild(parent, li + 1);
                // The right node's first key becomes the parent's separator, its true lower bound.
                var rFirst = parent.Key(li + 1);
                int extra = r.IsLeaf ? 0 : rFirst.Length - r.Key(0).Length;
                if (l.PayloadBytes + r.PayloadBytes + extra > Node.Capacity) break;
                if (!r.IsLeaf) r.SetChildKey(0, rFirst);
                l.AppendAll(r);
                parent.RemoveAt(li + 1);
                Discard(r);
            }
            else break;
            n = parent;
        }
        CollapseRoot();
    }

    private void CollapseRoot()
    {
        while (DirtyRoot is { IsLeaf: false } root && root.Count <= 1)
        {
            if (root.Count == 0)
            {
                Discard(root);
                DirtyRoot = Node.NewDirty(Store.Pages, Kind, 0, _space.Generation);
                return;
            }
            // The old root's reference to its only child passes to the tree itself.
            var only = root.ChildNodes![0];
            var onlyRef = root.ChildRef(0);
            Discard(root);
            if (only is not null) DirtyRoot = only;
            else { DirtyRoot = null; RootRef = onlyRef; Version++; return; }
        }
    }
}
