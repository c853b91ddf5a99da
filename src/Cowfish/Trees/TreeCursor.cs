namespace Cowfish.Trees;

/// <summary>
/// A position in a tree, as a path of (node, index) from the root. Moves both ways.
/// On a tree that a write transaction changes, the cursor must be re-seeked after each change.
/// </summary>
internal sealed class TreeCursor
{
    private readonly TreeReader _tree;
    private readonly List<(Node Node, int Index)> _path = new();
    private int _version;

    public TreeCursor(TreeReader tree) => _tree = tree;

    public bool Valid { get; private set; }

    /// <summary>A copy of the current key.</summary>
    public byte[] Key => KeySpan.ToArray();
    /// <summary>A copy of the current value.</summary>
    public byte[] Value => ValueSpan.ToArray();
    /// <summary>The current key, in place on its page (valid while the cursor holds the node).</summary>
    public ReadOnlySpan<byte> KeySpan { get { CheckValid(); var (n, i) = _path[^1]; return n.Key(i); } }
    /// <summary>The current value, in place on its page.</summary>
    public ReadOnlySpan<byte> ValueSpan { get { CheckValid(); var (n, i) = _path[^1]; return n.Value(i); } }

    public void First() => Edge(last: false);
    public void Last() => Edge(last: true);

    /// <summary>Moves to the first key ≥ <paramref name="key"/>.</summary>
    public void Seek(ReadOnlySpan<byte> key)
    {
        Reset();
        var n = _tree.Root();
        while (!n.IsLeaf)
        {
            int ci = n.ChildFor(key);
            _path.Add((n, ci));
            n = _tree.Child(n, ci);
        }
        int i = n.LowerBound(key, out _);
        _path.Add((n, i));
        Valid = true;
        if (i >= n.Count) Advance(+1);
        else Valid = true;
    }

    public void Next() { CheckValid(); Advance(+1); }
    public void Prev() { CheckValid(); Advance(-1); }

    private void Edge(bool last)
    {
        Reset();
        var n = _tree.Root();
        while (!n.IsLeaf)
        {
            int ci = last ? n.Count - 1 : 0;
            _path.Add((n, ci));
            n = _tree.Child(n, ci);
        }
        _path.Add((n, last ? n.Count - 1 : 0));
        Valid = true;
        if (n.Count == 0) Advance(last ? -1 : +1);
    }

    private void Advance(int dir)
    {
        // Climb until a node has a neighbour in the direction, then descend to the edge of it.
        // Empty leaves (only ever a lone root leaf) are skipped the same way.
        while (true)
        {
            var (n, i) = _path[^1];
            int ni = i + dir;
            if (ni >= 0 && ni < n.Count)
            {
                _path[^1] = (n, ni);
                if (n.IsLeaf) { Valid = true; return; }
                DescendEdge(_tree.Child(n, ni), dir);
                if (_path[^1].Node.Count > 0) { Valid = true; return; }
                continue;
            }
            _path.RemoveAt(_path.Count - 1);
            if (_path.Count == 0) { Valid = false; return; }
        }
    }

    private void DescendEdge(Node n, int dir)
    {
        while (true)
        {
            int i = n.Count == 0 ? (dir > 0 ? -1 : 0) : (dir > 0 ? 0 : n.Count - 1);
            _path.Add((n, i));
            if (n.IsLeaf || n.Count == 0) return;
            n = _tree.Child(n, i);
        }
    }

    private void Reset()
    {
        _path.Clear();
        _version = _tree.Version;
        Valid = false;
    }

    private void CheckValid()
    {
        if (!Valid) throw new InvalidOperationException("cursor is not positioned on an entry");
        if (_version != _tree.Version) throw new InvalidOperationException("the tree changed since the cursor was positioned");
    }
}
