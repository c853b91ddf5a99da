using System.Diagnostics;
using Cowfish.Files;
using Cowfish.Format;

namespace Cowfish.Relocation;

/// <summary>
/// Online relocation: moves every live block (data, tree nodes, bookkeeping trees, bitmap pages)
/// out of the tail of the pool, keeping sharing intact, then shrinks the pool and its file.
/// </summary>
/// <remarks>
/// <para>Steps:</para>
/// <list type="number">
/// <item>A ceiling in the space map keeps every new allocation and reservation below the target,
/// so writers running alongside do not refill the tail.</item>
/// <item>Passes: each is one write transaction (<see cref="BlockMover"/>, then the bookkeeping
/// trees and bitmap pages at commit) that moves everything then allocated in the tail. A write
/// that reserved tail blocks before the ceiling was set claims them later, so passes repeat
/// until the tail holds nothing allocated.</item>
/// <item>The moved blocks' frees are deferred like any other: a reader (a send) pinned to an
/// older state keeps reading them. The shrink waits, up to <see cref="RelocationOptions.PinWait"/>,
/// until every block in the tail is idle (no reservation, no free waiting for durability or for
/// a pin), then one transaction drops the tail's bitmap pages and the new size, durable, goes
/// into the superblock. Only then is the file cut.</item>
/// </list>
/// <para>First version: a pass is one transaction under the writer lock, so writers wait for a
/// whole pass (readers never wait: MVCC). The walk reads every node the catalog reaches.</para>
/// <para>A crash at any point leaves the last durable commit: either before a pass (nothing
/// moved), after it (moved, sharing intact), or after the shrink; a file longer than its pool is
/// fine, and the next relocation cuts it.</para>
/// </remarks>
public static class PoolRelocator
{
    // One relocation per pool at a time: each sets and lifts the space map's one ceiling.
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Transactions.Pool, object> Running = new();

    /// <summary>Relocates the pool of <paramref name="fs"/> out of its blocks from <paramref name="targetBlocks"/> on.</summary>
    public static RelocationResult Relocate(FileSystem fs, ulong targetBlocks, RelocationOptions? options = null)
    {
        options ??= new RelocationOptions();
        var pool = fs.Pool;
        var map = pool.Space;
        ulong before = map.TotalBlocks;
        if (targetBlocks < Layout.FirstDataBlock + 1)
            throw new InvalidRequestException($"target of {targetBlocks} blocks is below the smallest pool");
        if (targetBlocks >= before)
            return new RelocationResult(before, before, 0, 0, 0, Shrunk: false);
        if (map.CountAllocated() + 16 >= targetBlocks)
            throw new InvalidRequestException($"the pool uses {map.CountAllocated()} blocks: they do not fit in {targetBlocks}");

        var gate = Running.GetValue(pool, _ => new object());
        if (!Monitor.TryEnter(gate)) throw new InvalidRequestException("a relocation of this pool is already running");
        try { return Run(fs, targetBlocks, options, before); }
        finally { Monitor.Exit(gate); }
    }

    private static RelocationResult Run(FileSystem fs, ulong targetBlocks, RelocationOptions options, ulong before)
    {
        var pool = fs.Pool;
        var map = pool.Space;
        long nodes = 0, data = 0;
        int passes = 0;
        Stopwatch? waiting = null; // since the tail was first found empty but not yet idle
        map.SetCeiling(targetBlocks);
        try
        {
            while (true)
            {
                // Writes queued before now claim their (possibly tail) reservations first.
                fs.SettleWrites();
                if (map.CeilingBreached)
                    throw new InvalidRequestException($"not enough free space below {Cli(targetBlocks)} for the blocks being moved and the writes running alongside; try a larger target");
                if (map.FirstAllocatedFrom(targetBlocks) != 0)
                {
                    if (passes >= options.MaxPasses)
                        throw new InvalidRequestException($"blocks past {Cli(targetBlocks)} are still in use after {passes} passes");
                    using var tx = pool.BeginWrite();
                    var mover = new BlockMover(tx, targetBlocks, d => options.Progress?.Invoke(data + d));
                    mover.Run();
                    tx.RelocateBookkeeping(targetBlocks);
                    tx.Commit();
                    passes++;
                    nodes += mover.NodesRewritten;
                    data += mover.DataBlocksMoved;
                    continue;
                }
                if (!options.Shrink) break;
                if (TryShrink(pool, targetBlocks)) break;
                waiting ??= Stopwatch.StartNew();
                if (waiting.Elapsed > options.PinWait)
                    throw new InvalidRequestException(
                        $"every block past {Cli(targetBlocks)} has moved, but the pool cannot shrink yet: a reader (a send?) still pins generation {pool.OldestPinned()}, "
                        + "whose blocks are there; run relocate again when it ends");
                Thread.Sleep(5);
            }
        }
        finally { map.SetCeiling(0); }
        if (options.Shrink) pool.TrimDevice();
        return new RelocationResult(before, options.Shrink ? pool.Space.TotalBlocks : before, passes, nodes, data, options.Shrink);
    }

    /// <summary>
    /// One transaction that shrinks the pool if every block of the tail is idle (BeginWrite first
    /// makes reusable what the reuse rule allows); else aborts. Waits for durability.
    /// </summary>
    private static bool TryShrink(Transactions.Pool pool, ulong targetBlocks)
    {
        using var tx = pool.BeginWrite();
        if (pool.Space.FirstBusyFrom(targetBlocks) != 0) return false;
        tx.ShrinkTo(targetBlocks);
        tx.Commit();
        return true;
    }

    /// <summary>The smallest target that leaves room to move what the tail holds: used blocks plus an eighth, plus 1 MiB.</summary>
    public static ulong CompactTarget(FileSystem fs)
    {
        ulong used = fs.Pool.Space.CountAllocated();
        ulong target = used + used / 8 + 256;
        return Math.Min(target, fs.Pool.Space.TotalBlocks);
    }

    /// <summary>Blocks in use at or past <paramref name="targetBlocks"/> now: about what a relocation to there moves (for progress).</summary>
    public static ulong BlocksToMove(FileSystem fs, ulong targetBlocks) => fs.Pool.Space.CountAllocatedFrom(targetBlocks);

    private static string Cli(ulong blocks) => $"block {blocks} ({blocks * (ulong)Layout.BlockSize} bytes)";
}

/// <summary>How a relocation runs.</summary>
public sealed class RelocationOptions
{
    /// <summary>Shrink the pool (and its file) once the tail is empty; else only move the blocks.</summary>
    public bool Shrink { get; init; } = true;

    /// <summary>How long the shrink waits for readers that pin a state whose blocks lie in the tail.</summary>
    public TimeSpan PinWait { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Passes before giving up (writers that keep claiming tail reservations are the only reason for more than two).</summary>
    public int MaxPasses { get; init; } = 16;

    /// <summary>Called with the data blocks moved so far.</summary>
    public Action<long>? Progress { get; init; }
}

/// <summary>What a relocation did.</summary>
public sealed record RelocationResult(ulong BlocksBefore, ulong BlocksAfter, int Passes, long NodesRewritten, long DataBlocksMoved, bool Shrunk);
