using Cowfish.Allocation;
using Cowfish.Files;
using Cowfish.Format;

namespace Cowfish.Relocation;

/// <summary>
/// Rewrites a fragmented file contiguously, copy-on-write, without breaking the sharing of any
/// other file, clone or snapshot that points to its extents.
/// </summary>
/// <remarks>
/// <para>The plan, from the file's extent records in file order: one region is reserved for the
/// whole file (the first free run long enough; else the longest runs of at least 4 MiB, one after
/// another; else at the pool's end, growing it as a write would), and each piece of the file gets
/// the next stretch of it:</para>
/// <list type="bullet">
/// <item>Data the file holds alone (no clone, snapshot or other file reaches the extent) is
/// rewritten: read and mapped anew under the file's range lock, adjacent records together (up to
/// one extent record, 256 blocks). Only the blocks the file uses are copied, so an extent the file
/// used in part no longer holds the rest.</item>
/// <item>An extent shared with others moves whole, once, with every referrer rewritten to the new
/// place: the relocation walk (<see cref="BlockMover"/>) with a plan of runs and destinations
/// instead of a limit, in slices of one short transaction each. The others keep sharing it, so the
/// pool's used and shared space stay the same. A file that uses only part of a shared extent gets
/// the rest of it in its region too (the price of keeping the sharing).</item>
/// </list>
/// <para>Writers of the file (and of everything else) go on: a rewrite holds the range lock of up
/// to 256 blocks, a walk slice the writer lock for about 2 ms. A read transaction pinned for the
/// walk keeps every block freed meanwhile from reuse, so a run the walk forwarded can never come
/// back as other data before the walk ends. Readers of older states keep reading the old blocks
/// (deferred reuse). A clone taken while the defrag runs only makes it copy data the clone then
/// shares with nobody: content and sharing stay correct, only that space is spent. Relocation and
/// defrag of one pool run one at a time.</para>
/// <para>Cost: the rewrites are O(file); the walk reads every tree node the catalog reaches (there
/// are no back-references), each shared subtree once.</para>
/// </remarks>
public static class Defragmenter
{
    /// <summary>Defragments one regular file; see the remarks.</summary>
    public static DefragResult Defragment(FileSystem fs, string path, Action<long>? progress = null, DefragOptions? options = null)
    {
        options ??= new DefragOptions();
        var pool = fs.Pool;
        using var hold = PoolRelocator.Hold(pool);
        var (records, sharedBytes) = fs.WrittenRecords(path);
        int before = FileRecord.Fragments(records);
        if (before <= 1) return new DefragResult(before, before, 0, sharedBytes);

        var pieces = Plan(records);
        ulong total = 0;
        foreach (var p in pieces) total += p.Blocks;
        var region = new Region(pool.Space, total);
        foreach (var p in pieces) p.To = region.Take(p.Blocks);
        region.Close();

        const long bs = Layout.BlockSize;
        long rewritten = 0, moved = 0;
        var planned = new Dictionary<ulong, (uint Blocks, ulong To)>();
        foreach (var p in pieces) if (!p.Rewrite) planned[p.DiskStart] = (p.Blocks, p.To);
        try
        {
            foreach (var p in pieces)
            {
                if (!p.Rewrite) continue;
                // The mapping takes over each piece it is handed (it claims it, or gives it back on failure).
                fs.RewriteInPlace(path, p.FileBlock, p.FileBlock + p.Blocks, n => { ulong at = p.To + p.HandedOut; p.HandedOut += n; return at; });
                rewritten += p.HandedOut * bs;
                progress?.Invoke(rewritten);
            }
            if (planned.Count > 0)
            {
                var mover = new BlockMover(pool, planned, blocks => progress?.Invoke(rewritten + blocks * bs));
                PoolRelocator.Walk(pool, mover, options.SliceBudget, options.AfterSlice);
                moved = mover.DataBlocksMoved * bs;
            }
        }
        finally
        {
            // Whatever was not handed out or moved (the file changed meanwhile) goes back.
            foreach (var p in pieces)
                if (p.Rewrite && p.HandedOut < p.Blocks) pool.Space.Unreserve(p.To + p.HandedOut, p.Blocks - p.HandedOut);
            foreach (var (_, (blocks, to)) in planned) pool.Space.Unreserve(to, blocks); // the mover removes what it moved
        }
        fs.Flush();
        var (after, shared) = fs.WrittenRecords(path);
        return new DefragResult(before, FileRecord.Fragments(after), rewritten, shared) { SharedBytesMoved = moved };
    }

    /// <summary>The file's pieces in file order: runs of its own data to rewrite, and shared extents to move whole (each once).</summary>
    private static List<Piece> Plan(List<FileRecord> records)
    {
        var pieces = new List<Piece>();
        var shared = new HashSet<ulong>();
        foreach (var r in records)
        {
            if (r.Exclusive)
            {
                if (pieces.Count > 0 && pieces[^1] is { Rewrite: true } last
                    && last.FileBlock + last.Blocks == r.FileBlock && last.Blocks + r.Count <= Extent.MaxBlocks)
                    last.Blocks += r.Count;
                else pieces.Add(new Piece { Rewrite = true, FileBlock = r.FileBlock, Blocks = r.Count });
            }
            else if (shared.Add(r.DiskStart)) pieces.Add(new Piece { DiskStart = r.DiskStart, Blocks = r.DiskBlocks });
        }
        return pieces;
    }

    private sealed class Piece
    {
        public bool Rewrite;
        public ulong FileBlock;  // rewrite: the first file block
        public ulong DiskStart;  // move: the shared extent
        public uint Blocks;
        public ulong To;         // its place in the region (reserved)
        public uint HandedOut;   // rewrite: blocks the mapping took over
    }

    /// <summary>The reserved region, handed out in order; a piece that does not fit the rest of a run starts the next one.</summary>
    private sealed class Region(SpaceMap map, ulong total)
    {
        // Shorter free runs than this (4 MiB) are not worth a piece of the file: the region grows the pool instead.
        private const ulong MinRun = 1024;

        private ulong _at, _end, _left = total;

        public ulong Take(uint blocks)
        {
            if (_end - _at < blocks)
            {
                Close();
                (_at, ulong n) = map.ReserveUpTo(Math.Max(_left, blocks), Math.Max(blocks, (uint)Math.Min(_left, MinRun)));
                _end = _at + n;
            }
            ulong start = _at;
            _at += blocks;
            _left -= blocks;
            return start;
        }

        public void Close()
        {
            for (ulong b = _at; b < _end; b += uint.MaxValue) map.Unreserve(b, (uint)Math.Min(uint.MaxValue, _end - b));
            _at = _end;
        }
    }
}

/// <summary>How a defrag runs.</summary>
public sealed class DefragOptions
{
    /// <summary>How long one slice of the walk that moves shared extents holds the writer lock.</summary>
    public TimeSpan SliceBudget { get; init; } = TimeSpan.FromMilliseconds(2);

    /// <summary>Called after each slice of that walk commits (tests use it to interleave work).</summary>
    public Action? AfterSlice { get; init; }
}

/// <summary>
/// What a defrag did: fragments before and after, bytes of the file's own data rewritten, the
/// bytes it shares with clones or snapshots, and how many bytes of shared extents moved (with
/// every file that shares them).
/// </summary>
public sealed record DefragResult(int FragmentsBefore, int FragmentsAfter, long BytesRewritten, ulong SharedBytes)
{
    /// <summary>Bytes of shared extents moved whole into the file's region, sharing kept.</summary>
    public long SharedBytesMoved { get; init; }
}
