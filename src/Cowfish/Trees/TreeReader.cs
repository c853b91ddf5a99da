using Cowfish.Format;

namespace Cowfish.Trees;

/// <summary>Reads a value in place: the span lives on a node's page and is valid only during the call.</summary>
internal delegate TResult ValueReader<TState, TResult>(ReadOnlySpan<byte> value, TState state);

/// <summary>Read access to one tree: point lookups and cursors. Also the base of <see cref="TreeWriter"/>.</summary>
internal class TreeReader
{
    protected readonly NodeStore Store;
    protected BlockRef RootRef;
    protected Node? DirtyRoot;

    public TreeReader(NodeStore store, BlockRef root, TreeKind kind)
    {
        Store = store;
        RootRef = root;
        Kind = kind;
    }

    public TreeKind Kind { get; }

    /// <summary>
    /// Read nodes without adding them to the cache. For one pass over a large tree (a range clone
    /// sweeping its frozen source): caching would push out the working set, and the decoded nodes
    /// would live long enough to be promoted and then become old garbage for the collector.
    /// </summary>
    public bool BypassCache { get; init; }

    private Node Load(ulong address) => BypassCache ? Store.ReadUncached(address) : Store.Read(address);

    /// <summary>Bumped by every change, so that a cursor can tell that the tree moved under it.</summary>
    public int Version { get; protected set; }

    /// <summary>The root node, dirty or clean.</summary>
    internal Node Root()
    {
        if (DirtyRoot is { } d) return d;
        var n = Load(RootRef.Address);
        if (n.Kind != Kind) throw new CorruptionException(RootRef.Address, "tree root kind", Kind.ToString(), n.Kind.ToString());
        if (n.Generation != RootRef.Generation) throw new CorruptionException(RootRef.Address, "tree root generation", RootRef.Generation.ToString(), n.Generation.ToString());
        return n;
    }

    /// <summary>Child i of an internal node, validated against its parent's kind and level.</summary>
    internal Node Child(Node parent, int i)
    {
        if (parent.ChildNodes is { } cn && cn[i] is { } dirty) return dirty;
        var r = parent.ChildRef(i);
        ulong addr = r.Address;
        var n = Load(addr);
        if (n.Generation != r.Generation) throw new CorruptionException(addr, "tree node generation", r.Generation.ToString(), n.Generation.ToString());
        if (n.Kind != parent.Kind) throw new CorruptionException(addr, "tree node kind", parent.Kind.ToString(), n.Kind.ToString());
        if (n.Level != parent.Level - 1) throw new CorruptionException(addr, "tree node level", (parent.Level - 1).ToString(), n.Level.ToString());
        return n;
    }

    /// <summary>Whether the tree holds <paramref name="key"/> (no copy of its value is made).</summary>
    public bool Contains(ReadOnlySpan<byte> key)
    {
        var n = Root();
        while (!n.IsLeaf) n = Child(n, n.ChildFor(key));
        n.LowerBound(key, out bool found);
        return found;
    }

    public bool TryGet(ReadOnlySpan<byte> key, out byte[] value)
    {
        var n = Root();
        while (!n.IsLeaf) n = Child(n, n.ChildFor(key));
        int i = n.LowerBound(key, out bool found);
        value = found ? n.ValueArray(i) : Array.Empty<byte>();
        return found;
    }

    /// <summary>
    /// Looks a key up and hands its value, in place on its page, to <paramref name="read"/>: no copy
    /// is made. The span is valid only during the call.
    /// </summary>
    public bool TryRead<TState, TResult>(ReadOnlySpan<byte> key, TState state, ValueReader<TState, TResult> read, out TResult result)
    {
        var n = Root();
        while (!n.IsLeaf) n = Child(n, n.ChildFor(key));
        int i = n.LowerBound(key, out bool found);
        result = found ? read(n.Value(i), state) : default!;
        return found;
    }

    public TreeCursor Cursor() => new(this);

    /// <summary>Entries with from ≤ key &lt; to (null bounds are open), ascending or descending.</summary>
    public IEnumerable<KeyValuePair<byte[], byte[]>> Scan(byte[]? from = null, byte[]? to = null, bool reverse = false)
    {
        var c = Cursor();
        if (!reverse)
        {
            if (from is null) c.First(); else c.Seek(from);
            while (c.Valid)
            {
                if (to is not null && c.Key.AsSpan().SequenceCompareTo(to) >= 0) yield break;
                yield return new(c.Key, c.Value);
                c.Next();
            }
        }
        else
        {
            if (to is null) c.Last(); else { c.Seek(to); if (c.Valid) c.Prev(); else c.Last(); }
            while (c.Valid)
            {
                if (from is not null && c.Key.AsSpan().SequenceCompareTo(from) < 0) yield break;
                yield return new(c.Key, c.Value);
                c.Prev();
            }
        }
    }
}
