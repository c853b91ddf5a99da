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
    // One relocation or defrag per pool at a time: each walks with its own forwarding tree, and a
    // relocation sets and lifts the space map's one ceiling.
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Transactions.Pool, SemaphoreSlim> Running = new();

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
            return new RelocationResult(before, before, 0, 0, 0, Shrunk: false) { Target = before };

        using var hold = Hold(pool);
        ulong used = map.CountAllocated();
        if (used + 16 >= targetBlocks)
        {
            // Writers filled the pool since the target was chosen: a growing target starts again
            // from the compact one.
            if (!options.GrowTarget) throw new InvalidRequestException($"the pool uses {used} blocks: they do not fit in {targetBlocks}");
            targetBlocks = CompactTarget(fs);
            before = map.TotalBlocks;
            if (targetBlocks >= before) return new RelocationResult(before, before, 0, 0, 0, Shrunk: false) { Target = before };
        }
        return Run(fs, targetBlocks, options, before);
    }

    /// <summary>
    /// Makes this the one relocation or defrag running on the pool (each walks every tree with its
    /// own forwarding tree) until disposed, and drops a forwarding tree that a crash left, whose
    /// copies would otherwise hold space.
    /// </summary>
    internal static IDisposable Hold(Transactions.Pool pool)
    {
        var gate = Running.GetValue(pool, _ => new SemaphoreSlim(1, 1));
        if (!gate.Wait(0)) throw new InvalidRequestException("a relocation or defrag of this pool is already running");
        try
        {
            if (DropLeftoverTables(pool)) DrainDrops(pool);
        }
        catch
        {
            gate.Release();
            throw;
        }
        return new Exit(gate);
    }

    private sealed class Exit(SemaphoreSlim gate) : IDisposable
    {
        private int _done;
        public void Dispose() { if (Interlocked.Exchange(ref _done, 1) == 0) gate.Release(); }
    }

    private static RelocationResult Run(FileSystem fs, ulong targetBlocks, RelocationOptions options, ulong before)
    {
        var pool = fs.Pool;
        var map = pool.Space;
        long nodes = 0, data = 0;
        int passes = 0, slices = 0;
        Stopwatch? waiting = null; // since the tail was first found empty but not yet idle
        bool gaveUp = false; // GrowTarget: no target below the pool's size works now
        map.SetCeiling(targetBlocks);
        try
        {
            while (true)
            {
                // Writes queued before now claim their (possibly tail) reservations first.
                fs.SettleWrites();
                if (map.FirstAllocatedFrom(targetBlocks) != 0 || map.CeilingBreached)
                {
                    if (passes >= options.MaxPasses)
                        throw new InvalidRequestException($"blocks past {Cli(targetBlocks)} are still in use after {passes} passes");
                    long dataBefore = data;
                    var mover = new BlockMover(pool, targetBlocks, d => options.Progress?.Invoke(dataBefore + d));
                    uint shortOf;
                    try { shortOf = RunPass(pool, mover, targetBlocks, options); }
                    finally
                    {
                        passes++;
                        slices += mover.Slices;
                        nodes += mover.NodesRewritten;
                        data += mover.DataBlocksMoved;
                    }
                    if (shortOf == 0) continue;
                    // The pass ran out of room below the target (1 block: other allocations took it).
                    ulong used = map.CountAllocated();
                    ulong next = targetBlocks + Math.Max(shortOf, used / 16 + 256);
                    if (options.GrowTarget && next < before)
                    {
                        targetBlocks = next;
                        map.SetCeiling(targetBlocks);
                        continue;
                    }
                    if (options.GrowTarget) { gaveUp = true; break; }
                    throw new InvalidRequestException(shortOf <= 1
                        ? $"not enough free space below {Cli(targetBlocks)} for the blocks being moved and the writes running alongside; try a larger target"
                        : $"the free space below {Cli(targetBlocks)} is too fragmented: no free run of {shortOf} blocks is left for an extent from the tail "
                          + $"({used} blocks in use); try a larger target, or relocate without one to find the smallest that works");
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
        if (options.Shrink && !gaveUp) pool.TrimDevice();
        ulong after = options.Shrink ? pool.Space.TotalBlocks : before;
        if (gaveUp) targetBlocks = before;
        return new RelocationResult(before, after, passes, nodes, data, options.Shrink && after < before) { Slices = slices, Target = targetBlocks };
    }

    /// <summary>
    /// One pass: the walk in slices of one short transaction each, then the bookkeeping trees and
    /// bitmap pages (in the last slice), then the drop queue, which now holds the forwarding tree
    /// and the old blocks that lost their last referrer, drained in slices. Ends durable, with no
    /// forwarding tree left. Returns 0, or by how many blocks it fell short (1: another allocation
    /// found no room and lifted the ceiling), for the caller to raise the target or refuse.
    /// </summary>
    /// <remarks>
    /// When an extent finds no free run below the target, the pass makes the pool durable (blocks
    /// freed since become reusable) and tries once more; then it finishes the walk without moving
    /// what does not fit, so that the old copies of what did move are freed. When another
    /// allocation lifted the ceiling, the pass ends at once: a block freed past the target may
    /// since hold new data, so its forwarding is no longer safe.
    /// </remarks>
    private static uint RunPass(Transactions.Pool pool, BlockMover mover, ulong targetBlocks, RelocationOptions options)
    {
        uint shortOf = 0;
        var map = pool.Space;
        var sinceDurable = Stopwatch.StartNew();
        int undurable = 0;
        bool flushedForRoom = false;
        while (true)
        {
            bool done = false;
            if (!map.CeilingBreached)
            {
                using var tx = pool.BeginWrite();
                done = mover.Slice(tx, options.SliceBudget);
                if (done)
                {
                    mover.Finish(tx);
                    tx.RelocateBookkeeping(targetBlocks);
                }
                // Each commit frees the blocks it replaced, reusable only once durable: wait for
                // durability (outside the writer lock) every few slices, so that the room below the
                // target is not used up by blocks waiting for it.
                bool durable = ++undurable >= DurableEverySlices || sinceDurable.Elapsed >= DurableEvery;
                tx.Commit(waitForDurability: durable);
                if (durable) { undurable = 0; sinceDurable.Restart(); }
                options.AfterSlice?.Invoke();
                if (done && !map.CeilingBreached) break;
                if ((mover.OutOfRoom == 0 || mover.SkipWhatDoesNotFit) && !map.CeilingBreached) { flushedForRoom = false; continue; }
            }
            if (map.CeilingBreached)
            {
                // Another allocation found no block below the target and lifted the ceiling: a
                // freed block past the target may since hold new data, so the pass's forwarding
                // ends here (a new pass starts from scratch, under a restored or raised ceiling).
                if (!done) EndPass(pool, mover);
                else DrainDrops(pool);
                return 1;
            }
            // Out of room below the target for an extent (the walk is not over: a finished walk
            // with the ceiling intact has left the loop above).
            pool.Flush(); // blocks freed since the last durable commit become reusable
            sinceDurable.Restart();
            undurable = 0;
            if (!flushedForRoom) { flushedForRoom = true; continue; }
            // Still no room: finish the walk without moving what does not fit, so that the old
            // copies of what did move are freed; the caller then raises the target or refuses.
            mover.SkipWhatDoesNotFit = true;
            shortOf = Math.Max(shortOf, Math.Max(1u, mover.OutOfRoom));
        }
        DrainDrops(pool);
        if (mover.SkipWhatDoesNotFit) shortOf = Math.Max(shortOf, Math.Max(1u, mover.OutOfRoom));
        return shortOf;
    }

    /// <summary>
    /// A whole walk for defrag or compaction: slices until it is done, the forwarding tree dropped
    /// in the last, then the drop queue drained. A read transaction stays pinned throughout, so no
    /// block freed meanwhile is reused before the walk ends: a run it forwarded can never come back
    /// as other data (the relocation gets the same guarantee from its ceiling).
    /// </summary>
    internal static void Walk(Transactions.Pool pool, BlockMover mover, TimeSpan budget, Action? afterSlice)
    {
        using var pin = pool.BeginRead();
        while (true)
        {
            using var tx = pool.BeginWrite();
            bool done = mover.Slice(tx, budget);
            if (done) mover.Finish(tx);
            tx.Commit(waitForDurability: false);
            afterSlice?.Invoke();
            if (done) break;
        }
        DrainDrops(pool);
    }

    /// <summary>
    /// Online compaction: empties the pool's mostly free regions, so that its free space comes
    /// back as long runs (new writes then get contiguous extents), keeping all sharing; the pool
    /// keeps its size.
    /// </summary>
    /// <remarks>
    /// The pool is cut into windows of <see cref="CompactionOptions.WindowBlocks"/> (4 MiB). Those
    /// at most <see cref="CompactionOptions.MaxFill"/> full (a quarter), but not empty, are
    /// emptied, the emptiest first, as long as what they hold fits in half the idle space outside
    /// them. Their idle blocks are reserved first, so that nothing lands there meanwhile; then the
    /// relocation walk (<see cref="BlockMover"/> in its compaction mode) moves every node and data
    /// run found there to the lowest idle space, each once however many files share it, in slices.
    /// Blocks that writers had reserved there before it started stay, as do the bookkeeping trees'
    /// nodes (each commit rewrites those anyway).
    /// </remarks>
    public static CompactionResult Compact(FileSystem fs, CompactionOptions? options = null)
    {
        options ??= new CompactionOptions();
        uint w = options.WindowBlocks;
        if (w == 0 || w % 64 != 0 || w < Extent.MaxBlocks) throw new InvalidRequestException($"a compaction window must be a multiple of 64 blocks, at least {Extent.MaxBlocks}");
        var pool = fs.Pool;
        var map = pool.Space;
        using var hold = Hold(pool);
        fs.SettleWrites();
        var before = map.IdleRuns(Extent.MaxBlocks);
        var counts = map.AllocatedPerWindow(w);
        // Candidates: whole windows past the superblocks, not empty, at most MaxFill full.
        var candidates = new List<int>();
        ulong idle = 0;
        for (int i = 0; i < counts.Length; i++)
        {
            ulong start = (ulong)i * w;
            if (start < Layout.FirstDataBlock || start + w > map.TotalBlocks) continue;
            idle += w - counts[i];
            if (counts[i] > 0 && counts[i] <= w * options.MaxFill) candidates.Add(i);
        }
        var windows = new bool[counts.Length];
        ulong moving = 0;
        int chosen = 0;
        foreach (int i in candidates.OrderBy(i => counts[i]))
        {
            // What the chosen windows hold must fit in half the idle space outside them.
            ulong idleOutside = idle - (w - counts[i]);
            if ((moving + counts[i]) * 2 > idleOutside) break;
            idle = idleOutside;
            moving += counts[i];
            windows[i] = true;
            chosen++;
        }
        if (chosen == 0) return new CompactionResult(0, 0, 0, 0, before, before);

        var reserved = new List<(ulong Start, uint Blocks)>();
        var mover = new BlockMover(pool, windows, w, options.Progress);
        try
        {
            for (int i = 0; i < windows.Length; i++)
                if (windows[i]) reserved.AddRange(map.ReserveIdleIn((ulong)i * w, (ulong)(i + 1) * w));
            Walk(pool, mover, options.SliceBudget, options.AfterSlice);
        }
        finally
        {
            foreach (var (start, blocks) in reserved) map.Unreserve(start, blocks);
        }
        pool.Flush();
        using (pool.BeginWrite()) { } // makes reusable what the reuse rule now allows
        return new CompactionResult(chosen, mover.DataBlocksMoved, mover.NodesRewritten, mover.Slices, before, map.IdleRuns(Extent.MaxBlocks))
        {
            DataBlocksLeft = mover.DataBlocksLeft,
        };
    }

    /// <summary>Gives up a pass: drops its forwarding tree, drains the drop queue.</summary>
    private static void EndPass(Transactions.Pool pool, BlockMover mover)
    {
        using (var tx = pool.BeginWrite())
        {
            mover.Finish(tx);
            tx.Commit(waitForDurability: false);
        }
        DrainDrops(pool);
    }

    internal static void DrainDrops(Transactions.Pool pool)
    {
        while (true)
        {
            using var tx = pool.BeginWrite();
            bool more = tx.ReleaseDroppedNow(DropSlice);
            tx.Commit(waitForDurability: false);
            if (!more) break;
        }
        pool.Flush();
    }

    private const int DurableEverySlices = 8;
    private static readonly TimeSpan DurableEvery = TimeSpan.FromMilliseconds(50);

    // Drop-queue entries a draining slice releases (each reads one node).
    private const int DropSlice = 256;

    /// <summary>A forwarding tree left by a relocation that a crash stopped is dropped: its references go back.</summary>
    private static bool DropLeftoverTables(Transactions.Pool pool)
    {
        using var tx = pool.BeginWrite();
        bool any = false;
        foreach (var (_, id, _, kind) in tx.CatalogTreesFrom(null))
            if (kind == Trees.TreeKind.Relocation) { tx.DropTree(id); any = true; }
        if (any) tx.Commit(waitForDurability: false);
        return any;
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

/// <summary>How a compaction runs.</summary>
public sealed class CompactionOptions
{
    /// <summary>The size of the regions compaction judges and empties, in blocks (a multiple of 64, at least one extent): 4 MiB.</summary>
    public uint WindowBlocks { get; init; } = 1024;

    /// <summary>A region at most this full (and not empty) is emptied.</summary>
    public double MaxFill { get; init; } = 0.25;

    /// <summary>How long one slice of the walk holds the writer lock.</summary>
    public TimeSpan SliceBudget { get; init; } = TimeSpan.FromMilliseconds(2);

    /// <summary>Called with the data blocks moved so far.</summary>
    public Action<long>? Progress { get; init; }

    /// <summary>Called after each slice commits (tests use it to interleave work).</summary>
    public Action? AfterSlice { get; init; }
}

/// <summary>
/// What a compaction did: regions emptied, data blocks moved (and left for want of room), tree
/// nodes written anew, slices, and the pool's idle runs of at least one extent (1 MiB) before and
/// after: how many, the blocks they hold, the longest idle run.
/// </summary>
public sealed record CompactionResult(int Regions, long DataBlocksMoved, long NodesRewritten, int Slices,
    (long Runs, ulong Blocks, ulong Longest) FreeBefore, (long Runs, ulong Blocks, ulong Longest) FreeAfter)
{
    /// <summary>Data blocks that found no room outside the regions and stayed.</summary>
    public long DataBlocksLeft { get; init; }
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

    /// <summary>
    /// How long one slice of a pass may hold the writer lock before it commits and lets writers
    /// in (it always moves at least one block; a data run is at most 1 MiB).
    /// </summary>
    public TimeSpan SliceBudget { get; init; } = TimeSpan.FromMilliseconds(2);

    /// <summary>
    /// Treat the target as a first guess (<see cref="PoolRelocator.CompactTarget"/>): when the free
    /// space below it proves too fragmented for an extent being moved, or writers running alongside
    /// fill it, raise it and go on, instead of refusing. What the result reports is where it ended.
    /// </summary>
    public bool GrowTarget { get; init; }

    /// <summary>Called after each slice commits (tests use it to interleave work).</summary>
    public Action? AfterSlice { get; init; }
}

/// <summary>What a relocation did.</summary>
public sealed record RelocationResult(ulong BlocksBefore, ulong BlocksAfter, int Passes, long NodesRewritten, long DataBlocksMoved, bool Shrunk)
{
    /// <summary>Write transactions the passes' walks took.</summary>
    public int Slices { get; init; }

    /// <summary>The target the relocation ended with (raised from the one asked for only with <see cref="RelocationOptions.GrowTarget"/>).</summary>
    public ulong Target { get; init; }
}
