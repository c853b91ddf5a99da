using System.Buffers;
using Cowfish.Format;
using Cowfish.Transactions;
using Cowfish.Trees;

namespace Cowfish.Relocation;

/// <summary>
/// One relocation pass over the user trees, inside one write transaction: every tree node and
/// every data extent at or above <c>limit</c> moves to a block the allocator picks (below its
/// ceiling), and every node whose subtree moved is rewritten, since nodes are immutable.
/// </summary>
/// <remarks>
/// There are no back-references, so the pass walks everything the catalog reaches (tree roots,
/// drop-queue entries, and the subtrees and runs that leaf values name) and memoizes by old
/// address. Invariant: a block reached through several referrers (a node shared by clones through
/// lazy reference counts, a disk extent named by many extent records) gets ONE new address, and
/// every referrer is rewritten to point there, because each referrer lies on a path the walk
/// covers and sees the memoized result. So the reference count moves with the block unchanged
/// (<see cref="WriteTransaction.MoveReferences"/>), and the old block is freed once, with the
/// deferred reuse of any free: a reader pinned to an older state goes on reading it.
/// Memory: one memo entry per node reached, for the length of the pass.
/// </remarks>
internal sealed class BlockMover
{
    private readonly WriteTransaction _tx;
    private readonly Pool _pool;
    private readonly ulong _limit;
    private readonly ulong _generation;
    // Old node address → the reference every referrer must now hold (itself if it did not move).
    private readonly Dictionary<ulong, BlockRef> _nodes = new();
    // Old start of a moved disk extent → its new start.
    private readonly Dictionary<ulong, ulong> _runs = new();
    private readonly Action<long>? _progress;

    public BlockMover(WriteTransaction tx, ulong limit, Action<long>? progress)
    {
        _tx = tx;
        _pool = tx.Pool;
        _limit = limit;
        _generation = tx.Generation.Value;
        _progress = progress;
    }

    /// <summary>Tree nodes written at a new address (moved, or rewritten because a descendant moved).</summary>
    public long NodesRewritten { get; private set; }

    /// <summary>Data blocks copied out of the region.</summary>
    public long DataBlocksMoved { get; private set; }

    /// <summary>Moves every user block at or above the limit; the caller commits.</summary>
    public void Run() => _tx.RewriteRoots(Move);

    private BlockRef Move(BlockRef r) => Move(r, 0);

    private BlockRef Move(BlockRef r, int depth)
    {
        if (_nodes.TryGetValue(r.Address, out var done)) return done;
        if (depth >= Layout.MaxTreeDepth) throw new CorruptionException(r.Address, "tree depth", $"< {Layout.MaxTreeDepth}", depth.ToString());
        var node = _pool.Store.Read(r.Address);
        if (node.Generation != r.Generation)
            throw new CorruptionException(r.Address, "node generation", r.Generation.ToString(), node.Generation.ToString());

        List<BlockRef>? children = null;
        List<byte[]>? values = null;
        if (!node.IsLeaf)
        {
            for (int i = 0; i < node.Count; i++)
            {
                var c = Move(node.Children![i], depth + 1);
                if (c == node.Children[i]) continue;
                children ??= new List<BlockRef>(node.Children);
                children[i] = c;
            }
        }
        else if (ValueReferences.For(node.Kind) is { } vr)
        {
            for (int i = 0; i < node.Count; i++)
            {
                var v = vr.Rewrite(node.Keys[i], node.Values![i], MoveValueRef);
                if (ReferenceEquals(v, node.Values[i])) continue;
                values ??= new List<byte[]>(node.Values);
                values[i] = v;
            }
        }
        if (r.Address < _limit && children is null && values is null)
        {
            _nodes[r.Address] = r;
            return r;
        }

        var copy = new Node(node.Kind, node.Level, node.Count) { Generation = _generation, PayloadBytes = node.PayloadBytes };
        copy.Keys.AddRange(node.Keys);
        if (node.IsLeaf) copy.Values!.AddRange(values ?? node.Values!);
        else
        {
            copy.Children!.AddRange(children ?? node.Children!);
            for (int i = 0; i < node.Count; i++) copy.ChildNodes!.Add(null);
        }
        copy.Address = _pool.Space.Allocate(1);
        _tx.MoveReferences(r.Address, copy.Address);
        _pool.Space.Free(r.Address, 1);
        _pool.Store.Write(copy);
        var moved = new BlockRef(copy.Address, _generation);
        _nodes[r.Address] = moved;
        NodesRewritten++;
        return moved;
    }

    private ValueRef MoveValueRef(ValueRef v)
    {
        if (v.IsSubtree)
        {
            var root = Move(v.Subtree);
            return root == v.Subtree ? v : ValueRef.Tree(root, v.SubtreeKind);
        }
        if (v.Address + v.Blocks <= _limit) return v;
        if (!_runs.TryGetValue(v.Address, out ulong to))
        {
            to = _pool.Space.Allocate(v.Blocks);
            CopyBlocks(v.Address, to, v.Blocks);
            _tx.MoveReferences(v.Address, to);
            _pool.Space.Free(v.Address, v.Blocks);
            _runs[v.Address] = to;
            DataBlocksMoved += v.Blocks;
            _progress?.Invoke(DataBlocksMoved);
        }
        return ValueRef.Data(to, v.Blocks);
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
