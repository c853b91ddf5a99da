using System.Text;
using Cowfish.Format;
using Cowfish.Transactions;
using Cowfish.Trees;

namespace Cowfish.Files;

/// <summary>
/// Volumes, snapshots, files and their data on a pool. Paths are written <c>VOLUME/dir/file</c>.
/// Every operation is its own transaction. Reads run on pinned snapshots and never wait for a
/// writer; writes of data are copy-on-write: new blocks are reserved and written outside any
/// lock, then mapped in one short transaction.
/// </summary>
public sealed partial class FileSystem : IDisposable
{
    private readonly bool _ownsPool;
    // One table per pool, so that every FileSystem object on a pool excludes the others' writers.
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Pool, RangeLocks> PoolLocks = new();
    internal readonly RangeLocks Locks;
    internal const string FrozenPrefix = "frozen.";

    public FileSystem(Pool pool, bool ownsPool = false)
    {
        Pool = pool;
        _ownsPool = ownsPool;
        // Leftovers are looked for once per pool: a second FileSystem on a pool in use must not
        // mistake the frozen source of a range clone still running for one a crash left behind.
        bool first = false;
        Locks = PoolLocks.GetValue(pool, _ => { first = true; return new RangeLocks(); });
        if (first) DropLeftoverFrozenTrees();
    }

    /// <summary>
    /// A range clone interrupted by a crash leaves its frozen copy of the source behind (after
    /// another operation made the freeze durable). Nothing else can reach it: let it go.
    /// </summary>
    private void DropLeftoverFrozenTrees()
    {
        if (Pool.IsFailed) return;
        using var tx = Pool.BeginWrite();
        var leftovers = tx.ListNamedTrees().Where(t => t.Name.StartsWith(FrozenPrefix, StringComparison.Ordinal)).ToList();
        if (leftovers.Count == 0) return;
        foreach (var (name, id) in leftovers)
        {
            tx.RemoveNamedTree(name);
            if (tx.TreeExists(id)) tx.DropTree(id);
        }
        tx.Commit();
    }

    public Pool Pool { get; }

    /// <summary>Creates a pool file and opens it as a file system.</summary>
    public static FileSystem Create(string path, PoolOptions? options = null) => new(Pool.Create(path, options), ownsPool: true);

    /// <summary>Opens a pool file as a file system.</summary>
    public static FileSystem Open(string path, PoolOptions? options = null) => new(Pool.Open(path, options), ownsPool: true);

    public void Dispose()
    {
        if (!Pool.IsFailed) SettleWrites();
        if (_ownsPool) Pool.Dispose();
    }

    // --- volumes --------------------------------------------------------------------------

    public void CreateVolume(string name)
    {
        var key = VolumeRecord.Key(name);
        using var tx = BeginChange();
        var dir = VolumeDirectory(tx);
        if (tx.TryGet(dir, key, out _)) throw new InvalidRequestException($"volume '{name}' already exists");
        var id = tx.CreateTree(TreeKind.Volume);
        VolumeWriter.Format(tx.TreeWriterFor(id));
        tx.Put(dir, key, new VolumeRecord(name, id, false, Inode.NowNs(), Guid.NewGuid(), Guid.Empty, 0).Encode());
        tx.Commit();
    }

    public IReadOnlyList<VolumeInfo> ListVolumes()
    {
        using var rt = Pool.BeginRead();
        if (!rt.TryGetNamedTree(VolumeRecord.DirectoryName, out var dir)) return [];
        var receipts = VolumeReceipts.All(rt);
        return rt.Scan(dir).Select(kv => VolumeRecord.Decode(kv.Key, kv.Value))
            .Select(r => r.ToInfo(receipts.TryGetValue(r.Id, out var from) ? from : null)).ToList();
    }

    /// <summary>Deletes a volume or snapshot at once; its space comes back over the next commits (see <see cref="Reclaim"/>).</summary>
    public void DeleteVolume(string name)
    {
        using var tx = BeginChange();
        var dir = VolumeDirectory(tx);
        var rec = GetVolume(tx, dir, name);
        tx.Delete(dir, VolumeRecord.Key(name));
        tx.DropTree(rec.Tree);
        tx.Commit();
    }

    public void RenameVolume(string name, string newName)
    {
        var newKey = VolumeRecord.Key(newName);
        using var tx = BeginChange();
        var dir = VolumeDirectory(tx);
        var rec = GetVolume(tx, dir, name);
        if (tx.TryGet(dir, newKey, out _)) throw new InvalidRequestException($"volume '{newName}' already exists");
        tx.Delete(dir, VolumeRecord.Key(name));
        tx.Put(dir, newKey, (rec with { Name = newName }).Encode());
        tx.Commit();
    }

    /// <summary>An O(1) snapshot: the new volume shares the source's tree root, whatever its size.</summary>
    public void Snapshot(string source, string name, bool readOnly = false)
    {
        SettleWrites();
        var key = VolumeRecord.Key(name);
        using var tx = BeginChange();
        var dir = VolumeDirectory(tx);
        var src = GetVolume(tx, dir, source);
        if (tx.TryGet(dir, key, out _)) throw new InvalidRequestException($"volume '{name}' already exists");
        var id = tx.CloneTree(src.Tree);
        tx.Put(dir, key, new VolumeRecord(name, id, readOnly, Inode.NowNs(), Guid.NewGuid(), src.Id, tx.Generation.Value).Encode());
        tx.Commit();
    }

    /// <summary>
    /// Runs commits until the space of deleted volumes, files and snapshots has been given back,
    /// each commit releasing a bounded number of tree nodes. Returns the commits it took.
    /// </summary>
    public int Reclaim(int maxCommits = int.MaxValue)
    {
        int commits = 0;
        while (commits < maxCommits)
        {
            using var tx = BeginChange();
            if (!tx.HasPendingDrops) break;
            tx.Commit(waitForDurability: false);
            commits++;
        }
        if (commits > 0) Pool.Flush();
        return commits;
    }

    /// <summary>Makes every change so far durable.</summary>
    public void Flush()
    {
        SettleWrites();
        Pool.Flush();
    }

    // --- helpers --------------------------------------------------------------------------

    internal static TreeId VolumeDirectory(WriteTransaction tx)
    {
        if (tx.TryGetNamedTree(VolumeRecord.DirectoryName, out var id)) return id;
        id = tx.CreateTree();
        tx.SetNamedTree(VolumeRecord.DirectoryName, id);
        return id;
    }

    internal static VolumeRecord GetVolume(WriteTransaction tx, TreeId dir, string name)
    {
        if (!tx.TryGet(dir, VolumeRecord.Key(name), out var v)) throw new NotFoundException($"volume '{name}' does not exist");
        return VolumeRecord.Decode(VolumeRecord.Key(name), v);
    }

    internal static VolumeRecord GetVolume(ReadTransaction rt, string name)
    {
        if (!rt.TryGetNamedTree(VolumeRecord.DirectoryName, out var dir) || !rt.TryGet(dir, VolumeRecord.Key(name), out var v))
            throw new NotFoundException($"volume '{name}' does not exist");
        return VolumeRecord.Decode(VolumeRecord.Key(name), v);
    }

    /// <summary>Runs <paramref name="read"/> on the newest committed state of a volume.</summary>
    internal T ReadVolume<T>(string volume, Func<VolumeReader, T> read)
    {
        using var rt = Pool.BeginRead();
        var rec = GetVolume(rt, volume);
        return read(new VolumeReader(rec, rt.Tree(rec.Tree), Pool.Store));
    }

    /// <summary>Runs <paramref name="change"/> in one write transaction on a writable volume, then commits.</summary>
    internal T WriteVolume<T>(string volume, Func<VolumeWriter, T> change, bool durable = true)
    {
        using var tx = BeginChange();
        var dir = VolumeDirectory(tx);
        var rec = GetVolume(tx, dir, volume);
        if (rec.ReadOnly) throw new ReadOnlyVolumeException(volume);
        var result = change(new VolumeWriter(rec, tx));
        tx.Commit(durable);
        return result;
    }

    internal static string Utf8(byte[] b) => Encoding.UTF8.GetString(b);
}
