using Cowfish.Format;
using Cowfish.Trees;

namespace Cowfish.Transactions;

/// <summary>
/// A pinned, committed state of the pool. It sees exactly that state for as long as it lives:
/// blocks it can reach are not reused until it is disposed. It never blocks the writer.
/// Safe to use from one thread at a time.
/// </summary>
public sealed class ReadTransaction : IDisposable
{
    private readonly Pool _pool;
    private readonly TreeReader _catalog;
    private bool _disposed;
    // The node-page epoch this reader holds: no node it can reach has its page reused before it ends.
    private readonly long _epoch;

    internal ReadTransaction(Pool pool, Superblock state)
    {
        _pool = pool;
        State = state;
        _epoch = pool.Store.Pages.Enter();
        _catalog = new TreeReader(pool.Store, state.CatalogRoot, TreeKind.Catalog);
    }

    internal Superblock State { get; }
    internal Pool Pool => _pool;
    internal TreeReader CatalogTree => _catalog;

    public Generation Generation => new(State.Generation);

    public bool TreeExists(TreeId id) { EnsureOpen(); return Catalog.TryGetRoot(_catalog, id, out _, out _); }

    public IReadOnlyList<TreeId> ListTrees() { EnsureOpen(); return Catalog.ListTrees(_catalog); }

    public bool TryGet(TreeId tree, byte[] key, out byte[] value) => Tree(tree).TryGet(key, out value);

    /// <summary>The tree registered under a well-known name, if any.</summary>
    public bool TryGetNamedTree(string name, out TreeId id) { EnsureOpen(); return Catalog.TryGetNamed(_catalog, name, out id); }

    /// <summary>Entries with from ≤ key &lt; to (null bounds are open), ascending or descending.</summary>
    public IEnumerable<KeyValuePair<byte[], byte[]>> Scan(TreeId tree, byte[]? from = null, byte[]? to = null, bool reverse = false)
        => Tree(tree).Scan(from, to, reverse);

    /// <summary>
    /// What changed from <paramref name="older"/> to <paramref name="newer"/>, in key order. Subtrees
    /// the two share are skipped unread, so a clone and its slightly changed source diff in time
    /// proportional to the change.
    /// </summary>
    public IEnumerable<KeyChange> Diff(TreeId older, TreeId newer)
    {
        foreach (var c in TreeDiff.Diff(Tree(older), Tree(newer))) yield return new KeyChange(c.Key, c.Old, c.New);
    }

    internal TreeReader Tree(TreeId id)
    {
        EnsureOpen();
        if (!Catalog.TryGetRoot(_catalog, id, out var root, out var kind))
            throw new NotFoundException($"tree {id} does not exist");
        return new TreeReader(_pool.Store, root, kind);
    }

    internal PoolInfo Info()
    {
        EnsureOpen();
        ulong used = 0;
        var block = new byte[Layout.BlockSize];
        var space = new TreeReader(_pool.Store, State.SpaceMapRoot, TreeKind.SpaceMap);
        foreach (var (page, addr) in SpaceMapStore.Pages(space, State.TotalBlocks))
        {
            SpaceMapStore.ReadPage(_pool.Store, page, addr, block);
            for (int i = Layout.BlockHeaderSize; i < Layout.BlockSize; i += 8)
                used += (ulong)System.Numerics.BitOperations.PopCount(System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(block.AsSpan(i)));
        }
        return new PoolInfo(State.Version, State.PoolId, State.Generation, Layout.BlockSize, State.TotalBlocks,
            used, State.TotalBlocks - used, ListTrees().Count, DateTimeOffset.FromUnixTimeSeconds(State.CreatedUnixSeconds));
    }

    private void EnsureOpen() => ObjectDisposedException.ThrowIf(_disposed, this);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _pool.Store.Pages.Exit(_epoch);
        _pool.Unpin(State.Generation);
    }
}
