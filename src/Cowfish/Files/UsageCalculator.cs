using Cowfish.Format;
using Cowfish.Transactions;
using Cowfish.Trees;

namespace Cowfish.Files;

/// <summary>
/// Computes Total, Exclusive and Shared bytes. A record is reached privately when every node on the
/// way to it — from the volume's root through the inode's leaf and down the file's extent tree —
/// has one reference. A disk extent is exclusive to what is measured when all of its references are
/// such records inside it (a file whose extent was cut in two holds two); then no other file, clone
/// or snapshot can reach it. Everything else is shared. Cost: the size of what is measured.
/// </summary>
internal sealed class UsageCalculator
{
    private readonly ReadTransaction _rt;
    private readonly NodeStore _store;
    private readonly TreeReader? _counts;
    private ulong _total;
    // Disk extents reached privately: references seen, and the bytes their records cover.
    private readonly Dictionary<ulong, (uint Refs, ulong Bytes)> _private = new();

    public UsageCalculator(ReadTransaction rt, NodeStore store)
    {
        _rt = rt;
        _store = store;
        _counts = rt.State.RefCountRoot.IsNone ? null : new TreeReader(store, rt.State.RefCountRoot, TreeKind.RefCount);
    }

    public SpaceUsage Result
    {
        get
        {
            ulong exclusive = 0;
            foreach (var (start, (refs, bytes)) in _private)
                if (refs == RefCount(start)) exclusive += bytes;
            return new SpaceUsage(_total, exclusive, _total - exclusive);
        }
    }

    /// <summary>Whether every reference to the disk extent at <paramref name="start"/> is a record reached privately inside what was measured.</summary>
    public bool IsExclusive(ulong start) => _private.TryGetValue(start, out var p) && p.Refs == RefCount(start);

    private uint RefCount(ulong address)
    {
        if (_counts is not null && _counts.TryGet(Transactions.CatalogKeys.U64Key(address), out var v)) return (uint)Transactions.CatalogKeys.ParseU64Value(v, address);
        return 1;
    }

    /// <summary>Adds one file, given the volume tree it lives in.</summary>
    public void AddFile(TreeReader volume, ulong ino, Inode inode)
    {
        if (inode.Type != FileType.File || inode.Extents.IsNone) return;
        bool shared = PathShared(volume, FileKeys.InodeKey(ino));
        WalkExtents(inode.Extents, shared);
    }

    /// <summary>Whether any node from the volume's root down to the leaf holding <paramref name="key"/> is shared.</summary>
    private bool PathShared(TreeReader tree, byte[] key)
    {
        var n = tree.Root();
        if (RefCount(n.Address) > 1) return true;
        while (!n.IsLeaf)
        {
            n = tree.Child(n, n.ChildFor(key));
            if (RefCount(n.Address) > 1) return true;
        }
        return false;
    }

    private void WalkExtents(BlockRef root, bool shared)
    {
        var tree = new TreeReader(_store, root, TreeKind.FileExtents);
        var stack = new Stack<(Node Node, bool Shared)>();
        var r = tree.Root();
        stack.Push((r, shared || RefCount(r.Address) > 1));
        while (stack.Count > 0)
        {
            var (n, sh) = stack.Pop();
            if (!n.IsLeaf)
            {
                for (int i = 0; i < n.Count; i++)
                {
                    var c = tree.Child(n, i);
                    stack.Push((c, sh || RefCount(c.Address) > 1));
                }
                continue;
            }
            for (int i = 0; i < n.Count; i++)
            {
                var e = Extent.Decode(n.Value(i), n.Address);
                if (e.Unwritten) continue;
                ulong bytes = (ulong)e.Count * Layout.BlockSize;
                _total += bytes;
                if (!sh)
                {
                    var (refs, b) = _private.GetValueOrDefault(e.DiskStart);
                    _private[e.DiskStart] = (refs + 1, b + bytes);
                }
            }
        }
    }
}
