
namespace Cowfish.Trees;

/// <summary>
/// Tree nodes with their pages (fixed-size pinned arrays), recycled whole with epoch-based
/// reclamation so that a node is never handed out again while any reader could still hold it.
/// </summary>
/// <remarks>
/// Every piece of code that touches nodes runs inside an epoch (<see cref="Enter"/> /
/// <see cref="Exit"/>): read and write transactions enter when they begin and exit when they end,
/// so a cursor, a diff or a path of nodes held by a transaction stays valid for its whole life.
/// A node that leaves the cache (eviction, replacement) or a dirty node that a writer drops is
/// retired with the epoch current at that moment. Three epochs turn: the epoch advances from e to
/// e + 1 only when nobody is still inside e − 1, so once it has advanced twice past a page's
/// retirement, no one who could have reached the node is left, and the page is reused.
/// A long reader (a send, a check) holds the epochs back; retired pages then wait in limbo, up
/// to a bound, past which the oldest are left to the collector instead: they were never shared
/// by reference counts, only by the garbage collector's reachability, so dropping them is safe.
/// </remarks>
internal sealed class PagePool
{
    /// <summary>A page holds a full block plus the largest entry, so that a dirty node may overflow until it splits.</summary>
    public const int PageSize = 6144;

    // Guards _free and _limbo.
    private readonly object _gate = new();
    private readonly Stack<Node> _free = new();
    private readonly Queue<(Node Node, long Epoch)> _limbo = new();
    private readonly int _maxIdle;
    private long _epoch = 2;
    // Threads inside epoch e count in _inside[e % 3].
    private readonly long[] _inside = new long[3];
    private long _created, _reused;

    /// <param name="maxIdle">Most pages kept free or in limbo; beyond that, retired pages go to the collector.</param>
    public PagePool(int maxIdle) => _maxIdle = Math.Max(256, maxIdle);

    /// <summary>Pages allocated so far, and pages handed out again after their retirement.</summary>
    public long Created => Interlocked.Read(ref _created);
    public long Reused => Interlocked.Read(ref _reused);

    /// <summary>Enters the current epoch; pass the result to <see cref="Exit"/>.</summary>
    public long Enter()
    {
        while (true)
        {
            long e = Volatile.Read(ref _epoch);
            Interlocked.Increment(ref _inside[e % 3]);
            // The epoch may have moved between the read and the increment; only a count made
            // while the epoch still stood holds it back.
            if (Volatile.Read(ref _epoch) == e) return e;
            Interlocked.Decrement(ref _inside[e % 3]);
        }
    }

    public void Exit(long epoch)
    {
        long left = Interlocked.Decrement(ref _inside[epoch % 3]);
        System.Diagnostics.Debug.Assert(left >= 0, "an epoch exited more often than entered");
    }

    /// <summary>A node with a page; its content is undefined.</summary>
    public Node Rent()
    {
        lock (_gate)
        {
            if (_free.TryPop(out var node)) { _reused++; return node; }
            if (_limbo.Count > 0 && (Safe(_limbo.Peek().Epoch) || (TryAdvance() && (Safe(_limbo.Peek().Epoch) || (TryAdvance() && Safe(_limbo.Peek().Epoch))))))
            {
                _reused++;
                return _limbo.Dequeue().Node;
            }
        }
        Interlocked.Increment(ref _created);
        return Node.NewPooled();
    }

    /// <summary>Gives back a node that no new reader can reach any more (it left the cache, or was never in it).</summary>
    public void Retire(Node node)
    {
        if (!node.Pooled) return; // an uncached read's node: the collector's
        lock (_gate)
        {
            if (_limbo.Count > 0 && !Safe(_limbo.Peek().Epoch)) TryAdvance();
            while (_limbo.Count > 0 && Safe(_limbo.Peek().Epoch) && _free.Count < _maxIdle) _free.Push(_limbo.Dequeue().Node);
            // Full: the newest node goes to the collector, and the older ones, nearer to safe, stay.
            if (_limbo.Count + _free.Count < _maxIdle) _limbo.Enqueue((node, Volatile.Read(ref _epoch)));
        }
    }

    private bool Safe(long retired) => Volatile.Read(ref _epoch) >= retired + 2;

    /// <summary>Moves the epoch on if nobody is left in the previous one.</summary>
    private bool TryAdvance()
    {
        long e = Volatile.Read(ref _epoch);
        if (Interlocked.Read(ref _inside[(e - 1) % 3]) != 0) return false;
        return Interlocked.CompareExchange(ref _epoch, e + 1, e) == e;
    }
}
