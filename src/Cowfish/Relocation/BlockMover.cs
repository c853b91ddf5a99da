using System.Buffers;
using System.Diagnostics;
using Cowfish.Format;
using Cowfish.Transactions;
using Cowfish.Trees;

namespace Cowfish.Relocation;

/// <summary>
/// One relocation pass over the user trees, cut into slices: each slice is one short write
/// transaction that goes on from where the last one stopped, moves every tree node and data
/// extent it meets in the region being emptied, rewrites the nodes on the path to each (nodes are
/// immutable), and stops once its time budget is spent. Writers wait for one slice at most;
/// readers never wait. Three modes: relocation (the region is everything at or above
/// <c>limit</c>; copies go below the space map's ceiling, top-down), compaction (a set of
/// windows; copies go as low as they fit) and defrag (no region: a plan of data runs, each to a
/// reserved destination).
/// </summary>
/// <remarks>
/// <para>There are no back-references, so the pass walks everything the catalog reaches: tree
/// roots, and the subtrees and runs that leaf values name, in catalog order and then key order.
/// The cursor where a slice stopped is a list of keys, one per level of nesting (catalog entry,
/// key in that tree, key in the subtree its value holds, ...). Entries that writers add behind the
/// cursor are found by the next pass, which the relocator runs while the tail still holds blocks.</para>
/// <para>Sharing. A block reached through several referrers (a node shared through lazy reference
/// counts, a run named by several extent records) must get ONE copy, yet its referrers may be
/// reached in different slices, with commits between. Each commit must stand on its own (a crash
/// may stop there), so the accounting is Rodeh's shadowing: when the walk copies a block that
/// keeps other referrers, the old block stays (its other referrers still point at it), the copy
/// takes a reference to everything the old one references, and the forwarding tree (kind
/// <see cref="TreeKind.Relocation"/>, <see cref="ForwardingTable"/>) records old → copy, holding
/// one reference to the copy. A later referrer of the old block takes the copy instead and lets
/// go of the old block, which is freed with its last referrer. A node left half-walked by the end
/// of a slice may be copied again later: the entries that name it are pointed at the newer copy.
/// At the end of the pass the forwarding tree is dropped, and the copies keep exactly the
/// references their referrers hold.</para>
/// <para>A block whose only referrer is the one being rewritten simply moves: the old block is freed
/// with the deferred reuse of any free, so a reader pinned to an older state goes on reading it.</para>
/// <para>Memory: the set of nodes known to reach nothing past the limit (so that shared subtrees
/// are walked once per pass) and a mirror of the forwarding tree.</para>
/// </remarks>
internal sealed class BlockMover
{
    private readonly Pool _pool;
    private readonly ulong _limit;
    private readonly Action<long>? _progress;
    // Nodes (address, generation: immutable content) whose subtree holds nothing at or past the limit.
    private readonly HashSet<BlockRef> _clean = new();
    // Mirror of the forwarding tree: old node (or data run, generation 0) → its copy.
    private readonly Dictionary<BlockRef, ValueRef> _forward = new();
    // Copy → the old nodes whose forwarding entries name it (redirected if the copy is copied again).
    private readonly Dictionary<BlockRef, List<BlockRef>> _sources = new();
    private TreeId? _table;
    // Where the next slice starts: empty at the start of the pass, null once the walk is done.
    private List<byte[]>? _cursor = new();

    // The slice in progress.
    private WriteTransaction _tx = null!;
    private TreeWriter _tableWriter = null!;
    private ulong _generation;
    private long _deadline;
    private long _work;
    private bool _stop;
    private readonly List<byte[]> _stopAt = new();
    private readonly List<ValueRef> _old = new(), _new = new();

    public BlockMover(Pool pool, ulong limit, Action<long>? progress)
    {
        _pool = pool;
        _limit = limit;
        _progress = progress;
    }

    /// <summary>
    /// Defrag's mover: moves exactly the data runs in <paramref name="planned"/> (start → length
    /// and a reserved destination), each once, whoever refers to them; nodes move only because a
    /// descendant did. It removes each run from the map as it moves it: what is left at the end
    /// was never reached, and its destinations are still reserved.
    /// </summary>
    public BlockMover(Pool pool, Dictionary<ulong, (uint Blocks, ulong To)> planned, Action<long>? progress)
        : this(pool, ulong.MaxValue, progress) => _planned = planned;

    // Defrag: the runs still to move, and where (reserved); null for relocation, which moves what lies past the limit.
    private readonly Dictionary<ulong, (uint Blocks, ulong To)>? _planned;

    /// <summary>
    /// Compaction's mover: moves every node and data run that lies, even in part, in one of the
    /// <paramref name="windowBlocks"/>-block windows flagged in <paramref name="windows"/>, to the
    /// lowest idle space (the caller reserves the windows' idle blocks, so nothing lands there); a
    /// run that finds no room stays where it is.
    /// </summary>
    public BlockMover(Pool pool, bool[] windows, uint windowBlocks, Action<long>? progress)
        : this(pool, ulong.MaxValue, progress)
    {
        _windows = windows;
        _window = windowBlocks;
    }

    // Compaction: the windows being emptied (null otherwise).
    private readonly bool[]? _windows;
    private readonly uint _window;

    /// <summary>Compaction: data blocks left in place for want of room.</summary>
    public long DataBlocksLeft { get; private set; }

    // Whether a block (run) is in the region the walk empties.
    private bool InRegion(ulong address, ulong blocks)
    {
        if (_windows is null) return address + blocks > _limit;
        for (ulong w = address / _window; w <= (address + blocks - 1) / _window; w++)
            if (w < (ulong)_windows.Length && _windows[w]) return true;
        return false;
    }

    // Where a copied or rewritten node goes: below the relocation's target (top-down), low in the
    // pool for compaction, and where writers' nodes go for defrag (or when no room is left).
    private ulong PlaceNode()
    {
        if (_windows is not null && _pool.Space.AllocateLowest(1) is var low and not 0) return low;
        if (_windows is null && _planned is null && _pool.Space.AllocateBelowCeiling(1) is var below and not 0) return below;
        return _pool.Space.Allocate(1);
    }

    /// <summary>Tree nodes written at a new address (moved, or rewritten because a descendant moved).</summary>
    public long NodesRewritten { get; private set; }

    /// <summary>Data blocks copied out of the region.</summary>
    public long DataBlocksMoved { get; private set; }

    /// <summary>Slices run so far.</summary>
    public int Slices { get; private set; }

    /// <summary>
    /// Finish the walk even without room: an extent that finds no run below the target stays where
    /// it is. The walk still reaches every referrer, so the blocks already copied lose their old
    /// copies (a shared block's old copy goes only when its last referrer takes the new one).
    /// </summary>
    public bool SkipWhatDoesNotFit { get; set; }

    // Skip mode: the shortest extent that found no run.
    private uint _smallestMiss = uint.MaxValue;

    /// <summary>Set when the last slice stopped because no free run below the target was long enough for an extent of this many blocks.</summary>
    public uint OutOfRoom { get; private set; }

    /// <summary>
    /// Runs one slice in <paramref name="tx"/> (which the caller commits), stopping once
    /// <paramref name="budget"/> has passed and at least one block was moved. Returns true once
    /// the walk has covered every tree; the caller then calls <see cref="Finish"/>.
    /// </summary>
    public bool Slice(WriteTransaction tx, TimeSpan budget)
    {
        if (_cursor is null) return true;
        _tx = tx;
        if (!SkipWhatDoesNotFit) OutOfRoom = 0;
        _generation = tx.Generation.Value;
        _deadline = Stopwatch.GetTimestamp() + (long)(budget.TotalSeconds * Stopwatch.Frequency);
        _work = 0;
        _stop = false;
        _stopAt.Clear();
        _table ??= tx.CreateTree(TreeKind.Relocation);
        _tableWriter = tx.TreeWriterFor(_table.Value);
        byte[]? resumeTree = _cursor.Count > 0 ? _cursor[0] : null;
        foreach (var (key, id, root, kind) in tx.CatalogTreesFrom(resumeTree))
        {
            bool resuming = resumeTree is not null && key.AsSpan().SequenceEqual(resumeTree);
            if (id == _table || root.IsNone) continue;
            if (OutOfTime()) { Stop(key); break; }
            var moved = MoveNode(root, callerStays: false, resuming ? _cursor : null, 1, 0);
            if (moved != root) tx.SetCatalogRoot(id, moved, kind);
            if (_stop) { _stopAt.Insert(0, key); break; }
        }
        Slices++;
        _cursor = _stop ? new List<byte[]>(_stopAt) : null;
        return _cursor is null;
    }

    /// <summary>Ends the pass: drops the forwarding tree (its references go back to the drop queue).</summary>
    public void Finish(WriteTransaction tx)
    {
        if (_table is { } t) tx.DropTree(t);
        _table = null;
        _forward.Clear();
        _sources.Clear();
    }

    private bool OutOfTime() => _work > 0 && Stopwatch.GetTimestamp() > _deadline;

    private void Stop(byte[] at)
    {
        _stop = true;
        _stopAt.Insert(0, at);
    }

    /// <summary>
    /// The reference that the caller's new copy holds in place of <paramref name="r"/>.
    /// <paramref name="callerStays"/>: the caller's old version survives (it is shared), so it
    /// keeps its reference to <paramref name="r"/>; else that reference passes to the result.
    /// <paramref name="resume"/>[<paramref name="at"/>..]: the cursor inside this subtree.
    /// </summary>
    private BlockRef MoveNode(BlockRef r, bool callerStays, List<byte[]>? resume, int at, int depth)
    {
        if (_clean.Contains(r)) return r;
        if (_forward.TryGetValue(r, out var forwarded))
        {
            // Copied earlier in this pass, through another referrer: take the copy.
            var to = forwarded.Subtree;
            _tx.AddReference(to.Address, 1);
            if (!callerStays) _tx.ReleaseTree(r);
            return MoveNode(to, callerStays: false, resume, at, depth);
        }
        if (depth >= Layout.MaxTreeDepth) throw new CorruptionException(r.Address, "tree depth", $"< {Layout.MaxTreeDepth}", depth.ToString());
        var node = _pool.Store.Read(r.Address);
        if (node.Generation != r.Generation)
            throw new CorruptionException(r.Address, "node generation", r.Generation.ToString(), node.Generation.ToString());

        _sources.TryGetValue(r, out var sources);
        int moving = (callerStays ? 0 : 1) + (sources?.Count ?? 0);
        uint rc = _tx.RefCount(r.Address);
        Debug.Assert(rc >= moving, "more references moving off a node than it has");
        bool stays = rc > moving;
        byte[]? from = resume is not null && at < resume.Count ? resume[at] : null;
        bool whole = from is null;
        BlockRef[]? children = null;
        byte[]?[]? values = null; // the values that changed, by entry
        var vr = ValueReferences.For(node.Kind);
        if (!node.IsLeaf)
        {
            int first = from is null ? 0 : node.ChildFor(from);
            for (int i = first; i < node.Count; i++)
            {
                if (i > first && OutOfTime()) { Stop(node.KeyArray(i)); break; }
                var c = MoveNode(node.ChildRef(i), stays, i == first ? resume : null, at, depth + 1);
                if (c != node.ChildRef(i))
                {
                    children ??= node.ChildRefs();
                    children[i] = c;
                }
                if (_stop) break;
            }
        }
        else if (vr is not null)
        {
            int first = 0;
            bool exact = false;
            if (from is not null) first = node.LowerBound(from, out exact);
            for (int i = first; i < node.Count; i++)
            {
                if (OutOfTime()) { Stop(node.KeyArray(i)); break; }
                var nested = i == first && exact ? resume : null;
                var old = node.ValueArray(i);
                var v = vr.Rewrite(node.Key(i), old, x => MoveValue(x, stays, nested, at + 1, depth));
                if (!ReferenceEquals(v, old))
                {
                    values ??= new byte[]?[node.Count];
                    values[i] = v;
                }
                if (_stop) { _stopAt.Insert(0, node.KeyArray(i)); break; }
            }
        }
        bool complete = whole && !_stop;
        if (children is null && values is null && !InRegion(r.Address, 1))
        {
            if (complete) _clean.Add(r);
            return r;
        }

        var copy = Node.NewDirty(_pool.Store.Pages, node.Kind, node.Level, _generation);
        for (int i = 0; i < node.Count; i++)
        {
            if (node.IsLeaf) copy.InsertLeaf(i, node.Key(i), values?[i] ?? node.Value(i));
            else copy.InsertChild(i, node.Key(i), children?[i] ?? node.ChildRef(i), null);
        }
        copy.Dirty = false;
        if (stays) AddSharedReferences(node, children, values, vr);
        // The references that move off r: the caller's (unless its old version stays) and the
        // forwarding entries'. If they were all, the last release frees r; its references pass
        // to the copy (those that changed were moved by the walk below).
        for (int k = 0; k < moving; k++) _tx.ReleaseReference(r.Address, 1);
        // One block: when none is left where it should go, anywhere (a relocation sees the
        // ceiling breached before the next slice, and deals with it).
        copy.Address = PlaceNode();
        _pool.Store.Write(copy);
        NodesRewritten++;
        _work++;
        var moved = new BlockRef(copy.Address, _generation);
        var target = ValueRef.Tree(moved, node.Kind);
        // The caller's copy holds the copy's first reference; each forwarding entry one more.
        if (sources is not null)
        {
            _sources.Remove(r);
            foreach (var s in sources) Forward(s, target);
            _sources[moved] = sources;
        }
        if ((long)rc - moving - (callerStays ? 1 : 0) > 0)
        {
            // Other referrers keep r until the walk reaches them: they will take the copy.
            Forward(r, target);
            if (!_sources.TryGetValue(moved, out var list)) _sources[moved] = list = new List<BlockRef>(1);
            list.Add(r);
        }
        if (complete) _clean.Add(moved);
        return moved;
    }

    /// <summary>The old node stays: its copy takes one more reference to each child or run it shares with it.</summary>
    private void AddSharedReferences(Node node, BlockRef[]? children, byte[]?[]? values, IValueReferences? vr)
    {
        if (!node.IsLeaf)
        {
            for (int i = 0; i < node.Count; i++)
                if (children is null || children[i] == node.ChildRef(i)) _tx.AddReference(node.ChildRef(i).Address, 1);
            return;
        }
        if (vr is null) return;
        for (int i = 0; i < node.Count; i++)
        {
            _old.Clear();
            vr.Collect(node.Key(i), node.Value(i), _old);
            if (values?[i] is { } changed)
            {
                _new.Clear();
                vr.Collect(node.Key(i), changed, _new);
                for (int j = 0; j < _old.Count; j++)
                    if (_new[j] == _old[j]) _tx.AddReference(_old[j].Address, _old[j].Blocks);
                continue;
            }
            foreach (var o in _old) _tx.AddReference(o.Address, o.Blocks);
        }
    }

    /// <summary>Records old → copy in the forwarding tree, which takes a reference to the copy.</summary>
    private void Forward(BlockRef old, ValueRef to)
    {
        _forward[old] = to;
        _tableWriter.Put(ForwardingTable.Key(old), ForwardingTable.Value(to), releaseReplaced: false);
        _tx.AddReference(to.Address, to.Blocks);
    }

    private ValueRef MoveValue(ValueRef v, bool callerStays, List<byte[]>? resume, int at, int depth)
    {
        if (v.IsSubtree)
        {
            var root = MoveNode(v.Subtree, callerStays, resume, at, depth + 1);
            return root == v.Subtree ? v : ValueRef.Tree(root, v.SubtreeKind);
        }
        if (_planned is null && !InRegion(v.Address, v.Blocks)) return v;
        var key = new BlockRef(v.Address, 0);
        if (_forward.TryGetValue(key, out var to))
        {
            _tx.AddReference(to.Address, to.Blocks);
            if (!callerStays) _tx.ReleaseReference(v.Address, v.Blocks);
            return to;
        }
        ulong start;
        if (_planned is not null)
        {
            // Defrag: a planned run moves to its reserved destination (an abort of this slice
            // frees the claim again); any other stays.
            if (!_planned.TryGetValue(v.Address, out var plan) || plan.Blocks != v.Blocks) return v;
            _planned.Remove(v.Address);
            _pool.Space.Claim(plan.To, v.Blocks);
            start = plan.To;
        }
        else if (_windows is not null)
        {
            start = _pool.Space.AllocateLowest(v.Blocks);
            if (start == 0)
            {
                DataBlocksLeft += v.Blocks;
                return v;
            }
        }
        // In skip mode a length that found no run once is not searched for again (each search
        // scans the space below the target).
        else if ((start = SkipWhatDoesNotFit && v.Blocks >= _smallestMiss ? 0 : _pool.Space.AllocateBelowCeiling(v.Blocks)) == 0)
        {
            OutOfRoom = Math.Max(OutOfRoom, v.Blocks);
            if (SkipWhatDoesNotFit)
            {
                _smallestMiss = Math.Min(_smallestMiss, v.Blocks);
                return v; // stays past the target this pass
            }
            // No run below the target is long enough: stop here (this entry is where the walk
            // resumes), and let the relocator make room (a flush, or a higher target).
            _stop = true;
            return v;
        }
        uint rc = _tx.RefCount(v.Address);
        var moved = ValueRef.Data(start, v.Blocks);
        CopyBlocks(v.Address, moved.Address, v.Blocks);
        if (!callerStays) _tx.ReleaseReference(v.Address, v.Blocks); // the last reference frees the run
        if (rc > 1) Forward(key, moved); // other records name the run: they take the copy
        DataBlocksMoved += v.Blocks;
        _work += v.Blocks;
        _progress?.Invoke(DataBlocksMoved);
        return moved;
    }

    /// <summary>Copies a run verbatim: the CRCs in the extent records describe these bytes, wherever they lie.</summary>
    private void CopyBlocks(ulong from, ulong to, uint blocks)
    {
        int bytes = (int)blocks * Layout.BlockSize;
        var buf = ArrayPool<byte>.Shared.Rent(bytes);
        try
        {
            _pool.Device.Read(Layout.ByteOffset(from), buf.AsSpan(0, bytes));
            _pool.Device.Write(Layout.ByteOffset(to), buf.AsSpan(0, bytes));
        }
        catch (DeviceIOException e)
        {
            _pool.Fail(e);
            throw new EngineFailedException(e);
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }
}
