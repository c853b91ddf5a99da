using System.Buffers.Binary;
using System.Numerics;
using Cowfish.Format;

namespace Cowfish.Allocation;

/// <summary>
/// Free-space tracking with deferred reuse.
/// </summary>
/// <remarks>
/// Two bitmaps, one bit per block:
/// <list type="bullet">
/// <item><c>allocated</c> is what the next commit persists: blocks that the new state uses.</item>
/// <item><c>busy</c> is what the allocator avoids: allocated blocks, plus blocks freed by a
/// generation that is not yet durable or that a reader still pins. A block freed in generation g
/// becomes reusable only when g is durable and no reader pins a generation below g.</item>
/// </list>
/// Every change made inside a transaction is logged so that an abort puts both bitmaps back.
/// A reservation (for data written before the transaction that maps it) is busy but not allocated,
/// so a crash before that transaction commits leaks nothing.
/// Transactions (allocation, freeing, the log) are the writer's, under the pool's writer lock, but
/// threads reserving space for their data use the map at the same time: every member takes <c>_gate</c>.
/// </remarks>
internal sealed class SpaceMap
{
    private readonly object _gate = new();
    private ulong[] _allocated;
    private ulong[] _busy;
    // One bit per word of _busy: set when all 64 blocks of that word are busy, so that a search
    // for free space skips 4,096 blocks at a time through a full region instead of scanning it.
    private ulong[] _full;
    private ulong _total;
    private ulong _cursor = Layout.FirstDataBlock;
    private readonly HashSet<ulong> _dirtyPages = new();

    // Transaction log: runs this transaction allocated (still live), and runs it freed that were
    // allocated before it (their reuse is deferred).
    private readonly Dictionary<ulong, uint> _txnAllocated = new();
    private readonly List<(ulong Address, uint Blocks)> _txnDeferred = new();
    private readonly List<(ulong Generation, List<(ulong Address, uint Blocks)> Runs)> _pending = new();
    private ulong _pendingBlocks;
    // Relocation's ceiling: while set, no allocation or reservation returns a block at or above
    // it, so that writers running alongside a relocation do not refill the region it empties.
    // 0 = none. If a request finds no room below it, the ceiling is lifted (a foreground write
    // never fails because of relocation) and _ceilingBreached tells the relocation to give up.
    private ulong _ceiling;
    private bool _ceilingBreached;
    // Size before a shrink made by the open transaction, so that an abort can undo it (0 = none).
    private ulong _txnShrunkFrom;

    public SpaceMap(ulong totalBlocks)
    {
        _total = totalBlocks;
        int words = WordsFor(totalBlocks);
        _allocated = new ulong[words];
        _busy = new ulong[words];
        _full = new ulong[(words + 63) / 64];
        for (ulong b = 0; b < Layout.FirstDataBlock; b++) { Set(_allocated, b); SetBusy(b); }
        for (ulong p = 0; p < PageCount; p++) _dirtyPages.Add(p);
    }

    public ulong TotalBlocks { get { lock (_gate) return _total; } }
    public ulong PageCount { get { lock (_gate) return (_total + Layout.BitsPerPage - 1) / Layout.BitsPerPage; } }
    public ulong PendingBlocks { get { lock (_gate) return _pendingBlocks; } }

    /// <summary>Raised when the map grows the pool; the engine resizes the device at commit.</summary>
    public ulong GrowthIncrement { get; set; } = 1024;

    public bool IsAllocated(ulong block) { lock (_gate) return block < _total && Get(_allocated, block); }

    public ulong CountAllocated()
    {
        lock (_gate)
        {
            ulong n = 0;
            foreach (var w in _allocated) n += (ulong)BitOperations.PopCount(w);
            return n;
        }
    }

    /// <summary>
    /// Allocates <paramref name="blocks"/> contiguous blocks below the ceiling (anywhere when none
    /// is set), or returns 0 if no free run there is long enough: relocation's allocations, which
    /// must neither lift the ceiling nor grow the pool.
    /// </summary>
    /// <remarks>
    /// Placement: the top of the highest idle stretch below the ceiling that is long enough, apart
    /// from the next-fit cursor that everything else uses. Writers running alongside allocate
    /// single blocks from the low end up; had the relocation shared their cursor, their blocks
    /// would be sprinkled between its extents, and the free space left below the target would
    /// soon hold no run long enough for the next extent. Top-down placement leaves no remnants
    /// between extents either (the price: a moved file's extents lie in descending order).
    /// </remarks>
    public ulong AllocateBelowCeiling(uint blocks)
    {
        lock (_gate)
        {
            if (blocks == 0) throw new ArgumentOutOfRangeException(nameof(blocks));
            ulong top = Top, below = Math.Min(_moveTop, top);
            ulong hi = HighestFreeEnd(below, Layout.FirstDataBlock, blocks);
            if (hi == 0 && below < top) hi = HighestFreeEnd(top, below, blocks); // something freed above the last placement
            if (hi == 0) return 0;
            ulong start = hi - blocks;
            Take(start, blocks, moveCursor: false);
            _moveTop = start;
            return start;
        }
    }

    // Where relocation's top-down search starts next (the start of its last placement).
    private ulong _moveTop = ulong.MaxValue;

    /// <summary>
    /// The end of the highest stretch of idle blocks at least <paramref name="blocks"/> long that
    /// ends at or below <paramref name="top"/> and above <paramref name="floor"/>; 0 if none.
    /// </summary>
    private ulong HighestFreeEnd(ulong top, ulong floor, uint blocks)
    {
        ulong b = top;
        while (b > floor)
        {
            // Find the highest idle block below b, skipping busy words.
            ulong c = b - 1;
            if ((b & 63) == 0 && _busy[(c) >> 6] == ulong.MaxValue) { b -= 64; continue; }
            if (Get(_busy, c)) { b = c; continue; }
            ulong lo = c;
            while (lo > Layout.FirstDataBlock && b - lo < blocks && !Get(_busy, lo - 1)) lo--;
            if (b - lo >= blocks) return b;
            b = lo;
        }
        return 0;
    }

    /// <summary>Allocates <paramref name="blocks"/> contiguous blocks, growing the pool if no free run is long enough.</summary>
    public ulong Allocate(uint blocks)
    {
        lock (_gate)
        {
            if (blocks == 0) throw new ArgumentOutOfRangeException(nameof(blocks));
            ulong top = Top;
            ulong start = FindRun(_cursor, top, blocks);
            if (start == 0) start = FindRun(Layout.FirstDataBlock, Math.Min(_cursor, top), blocks);
            if (start == 0 && _ceiling != 0)
            {
                _ceiling = 0;
                _ceilingBreached = true;
                start = FindRun(_cursor, _total, blocks);
                if (start == 0) start = FindRun(Layout.FirstDataBlock, _cursor, blocks);
            }
            if (start == 0)
            {
                ulong oldTotal = _total;
                // Start the new run at the free tail of the old space, if any, to keep it contiguous.
                ulong tailFree = 0;
                while (tailFree < oldTotal - Layout.FirstDataBlock && !Get(_busy, oldTotal - tailFree - 1)) tailFree++;
                Grow(Math.Max(blocks, GrowthIncrement));
                start = FindRun(oldTotal - tailFree, _total, blocks);
                System.Diagnostics.Debug.Assert(start != 0, "no run after growing");
            }
            Take(start, blocks, moveCursor: true);
            return start;
        }
    }

    private void Take(ulong start, uint blocks, bool moveCursor)
    {
        for (ulong b = start; b < start + blocks; b++) { Set(_allocated, b); SetBusy(b); }
        MarkDirty(start, blocks);
        _txnAllocated[start] = blocks;
        if (moveCursor) _cursor = start + blocks;
    }

    /// <summary>
    /// Allocates one block inside [from, to) if one is free there, else anywhere. A bitmap page is
    /// placed inside the range it describes, so that moving it frees and allocates only its own
    /// bits: otherwise each move would dirty another page, and every commit would rewrite them all.
    /// </summary>
    public ulong AllocateNear(ulong from, ulong to)
    {
        lock (_gate)
        {
            ulong b = FindRun(from, Math.Min(to, Top), 1);
            if (b == 0) return Allocate(1);
            Set(_allocated, b);
            SetBusy(b);
            MarkDirty(b, 1);
            _txnAllocated[b] = 1;
            return b;
        }
    }

    /// <summary>
    /// Frees a run. A run this transaction allocated is free at once (no committed state has seen it);
    /// any other run stays busy until its generation is durable and unpinned.
    /// </summary>
    public void Free(ulong address, uint blocks)
    {
        lock (_gate)
        {
            if (address < Layout.FirstDataBlock || address + blocks > _total)
                throw new CorruptionException(address, "run being freed", $"inside the pool ({_total} blocks)", $"{address}+{blocks}");
            for (ulong b = address; b < address + blocks; b++)
            {
                if (!Get(_allocated, b)) throw new CorruptionException(b, "block being freed", "in use", "already free (a reference count or pointer on disk is wrong)");
                Clear(_allocated, b);
            }
            MarkDirty(address, blocks);
            if (_txnAllocated.TryGetValue(address, out uint n) && n == blocks)
            {
                _txnAllocated.Remove(address);
                for (ulong b = address; b < address + blocks; b++) ClearBusy(b);
                if (address < _cursor) _cursor = address;
            }
            else _txnDeferred.Add((address, blocks));
        }
    }

    /// <summary>Ends the transaction's log: its deferred frees now wait for <paramref name="generation"/>.</summary>
    public void CommitTransaction(ulong generation)
    {
        lock (_gate)
        {
            if (_txnDeferred.Count > 0)
            {
                var runs = new List<(ulong, uint)>(_txnDeferred);
                foreach (var r in runs) _pendingBlocks += r.Item2;
                _pending.Add((generation, runs));
            }
            _txnDeferred.Clear();
            _txnAllocated.Clear();
            _txnShrunkFrom = 0;
        }
    }

    /// <summary>Undoes every allocation and free made since the last commit.</summary>
    public void AbortTransaction()
    {
        lock (_gate)
        {
            // Deferred frees first: part of a run this transaction allocated may have been freed
            // (a trimmed extent), and the whole run must end up free.
            foreach (var (addr, n) in _txnDeferred)
                for (ulong b = addr; b < addr + n; b++) { Set(_allocated, b); MarkDirty(b, 1); }
            foreach (var (addr, n) in _txnAllocated)
            {
                for (ulong b = addr; b < addr + n; b++) { Clear(_allocated, b); ClearBusy(b); MarkDirty(b, 1); }
                if (addr < _cursor) _cursor = addr; // so the next transaction lays its blocks where this one would have
            }
            _txnAllocated.Clear();
            _txnDeferred.Clear();
            if (_txnShrunkFrom != 0)
            {
                ulong oldPages = (_total + Layout.BitsPerPage - 1) / Layout.BitsPerPage;
                _total = _txnShrunkFrom;
                _txnShrunkFrom = 0;
                for (ulong p = oldPages; p < PageCountLocked; p++) _dirtyPages.Add(p);
            }
        }
    }

    // --- relocation -----------------------------------------------------------------------

    /// <summary>
    /// Keeps every later allocation and reservation below <paramref name="ceiling"/> (0 lifts it).
    /// Blocks already allocated or reserved above it stay where they are: relocation moves them.
    /// </summary>
    public void SetCeiling(ulong ceiling)
    {
        lock (_gate)
        {
            _ceiling = ceiling;
            _ceilingBreached = false;
            _moveTop = ulong.MaxValue;
            if (ceiling != 0 && _cursor >= ceiling) _cursor = Layout.FirstDataBlock;
        }
    }

    /// <summary>Whether an allocation found no room below the ceiling since it was set, and so lifted it.</summary>
    public bool CeilingBreached { get { lock (_gate) return _ceilingBreached; } }

    /// <summary>Allocated blocks at or above <paramref name="from"/> (what a relocation out of there has to move, roughly).</summary>
    public ulong CountAllocatedFrom(ulong from)
    {
        lock (_gate)
        {
            ulong n = 0;
            for (ulong b = from; b < _total; b++) if (Get(_allocated, b)) n++;
            return n;
        }
    }

    /// <summary>The first allocated block at or above <paramref name="from"/>, or 0.</summary>
    public ulong FirstAllocatedFrom(ulong from) { lock (_gate) return FirstSet(_allocated, from); }

    /// <summary>The first busy block (allocated, reserved, or freed and not yet reusable) at or above <paramref name="from"/>, or 0.</summary>
    public ulong FirstBusyFrom(ulong from) { lock (_gate) return FirstSet(_busy, from); }

    /// <summary>
    /// Runs <paramref name="action"/> with the pool size, holding the map's gate so that no
    /// reservation grows the pool meanwhile. Relocation cuts the device this way: a reservation
    /// that grew the pool is already counted in the size (its data may be written, not yet
    /// mapped by any commit), and one that comes later writes after the cut. This is the one
    /// I/O done under the gate, once per shrink.
    /// </summary>
    public void WithSizeHeld(Action<ulong> action)
    {
        lock (_gate) action(_total);
    }

    /// <summary>Marks a bitmap page dirty, so that the next commit writes it to a new block.</summary>
    public void MarkPageDirty(ulong page) { lock (_gate) _dirtyPages.Add(page); }

    /// <summary>
    /// Shrinks the pool to <paramref name="newTotal"/> blocks within the open transaction (an abort
    /// undoes it). Every block at or above it must be idle: not allocated, not reserved, and not
    /// waiting for its free to become reusable, since a pinned reader may still read it.
    /// </summary>
    public void Shrink(ulong newTotal)
    {
        lock (_gate)
        {
            if (newTotal < Layout.FirstDataBlock || newTotal > _total) throw new ArgumentOutOfRangeException(nameof(newTotal));
            ulong busy = FirstSet(_busy, newTotal);
            // Only a writer that found no room below relocation's ceiling (and so lifted it) can
            // have put a block here since the caller looked: refuse, the relocation gives up.
            if (busy != 0) throw new InvalidRequestException($"block {busy} came into use while the pool was shrinking to {newTotal} blocks");
            if (_txnShrunkFrom == 0) _txnShrunkFrom = _total;
            _total = newTotal;
            ulong pages = PageCountLocked;
            _dirtyPages.RemoveWhere(p => p >= pages);
            if (_cursor >= newTotal) _cursor = Layout.FirstDataBlock;
        }
    }

    private ulong PageCountLocked => (_total + Layout.BitsPerPage - 1) / Layout.BitsPerPage;

    // Highest block (exclusive) that allocation may hand out now.
    private ulong Top => _ceiling != 0 ? Math.Min(_ceiling, _total) : _total;

    private ulong FirstSet(ulong[] bits, ulong from)
    {
        for (ulong b = Math.Max(from, Layout.FirstDataBlock); b < _total; b++)
        {
            if ((b & 63) == 0 && bits[b >> 6] == 0) { b += 63; continue; }
            if (Get(bits, b)) return b;
        }
        return 0;
    }

    /// <summary>Makes reusable every run freed by a generation at or below both bounds.</summary>
    public void Release(ulong durableGeneration, ulong oldestPinnedGeneration)
    {
        lock (_gate)
        {
            ulong limit = Math.Min(durableGeneration, oldestPinnedGeneration);
            int kept = 0;
            for (int i = 0; i < _pending.Count; i++)
            {
                var (gen, runs) = _pending[i];
                if (gen <= limit)
                {
                    foreach (var (addr, n) in runs)
                    {
                        for (ulong b = addr; b < addr + n; b++)
                            if (!Get(_allocated, b)) ClearBusy(b);
                        _pendingBlocks -= n;
                        if (addr < _cursor) _cursor = addr;
                    }
                }
                else _pending[kept++] = _pending[i];
            }
            _pending.RemoveRange(kept, _pending.Count - kept);
        }
    }

    // --- reservations ---------------------------------------------------------------------

    /// <summary>
    /// Reserves a contiguous run for data that will be written before the transaction that maps it.
    /// The run is busy (nobody else gets it) but not allocated: no commit persists it until
    /// <see cref="Claim"/>, so a crash in between leaks nothing.
    /// </summary>
    public ulong Reserve(uint blocks)
    {
        lock (_gate)
        {
            ulong start = Allocate(blocks);
            // Allocate marked it allocated and logged it in the open transaction: undo both.
            _txnAllocated.Remove(start);
            for (ulong b = start; b < start + blocks; b++) Clear(_allocated, b);
            return start;
        }
    }

    /// <summary>
    /// Reserves a region for defrag: the first idle run of <paramref name="want"/> blocks below the
    /// ceiling; if there is none, the longest idle run there, if it is at least
    /// <paramref name="min"/> blocks; else <paramref name="want"/> blocks where
    /// <see cref="Reserve"/> puts them, growing the pool at its free tail if need be (as any write
    /// does when no run is long enough). Returns the run reserved.
    /// </summary>
    public (ulong Start, ulong Blocks) ReserveUpTo(ulong want, uint min)
    {
        lock (_gate)
        {
            if (want == 0 || min == 0 || min > want) throw new ArgumentOutOfRangeException(nameof(want));
            ulong top = Top, bestStart = 0, bestLength = 0;
            for (var (b, n) = NextIdleRun(Layout.FirstDataBlock, top, want); n > 0 && bestLength < want; (b, n) = NextIdleRun(b + n, top, want))
                if (n > bestLength) (bestStart, bestLength) = (b, n);
            if (bestLength < min)
            {
                uint n = (uint)Math.Min(want, uint.MaxValue);
                return (Reserve(n), n);
            }
            for (ulong x = bestStart; x < bestStart + bestLength; x++) SetBusy(x);
            return (bestStart, bestLength);
        }
    }

    /// <summary>
    /// Allocates <paramref name="blocks"/> contiguous blocks at the lowest idle run long enough
    /// (below the ceiling, if one is set), or returns 0 without growing the pool: compaction's
    /// placement, which packs what it moves toward the start of the pool.
    /// </summary>
    public ulong AllocateLowest(uint blocks)
    {
        lock (_gate)
        {
            if (blocks == 0) throw new ArgumentOutOfRangeException(nameof(blocks));
            ulong start = FindRun(Layout.FirstDataBlock, Top, blocks);
            if (start != 0) Take(start, blocks, moveCursor: false);
            return start;
        }
    }

    /// <summary>
    /// Reserves every idle block in [<paramref name="from"/>, <paramref name="to"/>), so that no
    /// allocation lands there (compaction keeps the regions it empties free); returns the runs
    /// reserved, for <see cref="Unreserve"/>.
    /// </summary>
    public List<(ulong Start, uint Blocks)> ReserveIdleIn(ulong from, ulong to)
    {
        lock (_gate)
        {
            var runs = new List<(ulong, uint)>();
            to = Math.Min(to, _total);
            for (var (b, n) = NextIdleRun(Math.Max(from, Layout.FirstDataBlock), to, uint.MaxValue); n > 0; (b, n) = NextIdleRun(b + n, to, uint.MaxValue))
            {
                for (ulong x = b; x < b + n; x++) SetBusy(x);
                runs.Add((b, (uint)n));
            }
            return runs;
        }
    }

    /// <summary>Idle runs of at least <paramref name="min"/> blocks: how many, the blocks they hold, and the longest.</summary>
    public (long Runs, ulong Blocks, ulong Longest) IdleRuns(uint min)
    {
        lock (_gate)
        {
            long runs = 0;
            ulong blocks = 0, longest = 0;
            for (var (b, n) = NextIdleRun(Layout.FirstDataBlock, _total, ulong.MaxValue); n > 0; (b, n) = NextIdleRun(b + n, _total, ulong.MaxValue))
            {
                if (n >= min) { runs++; blocks += n; }
                longest = Math.Max(longest, n);
            }
            return (runs, blocks, longest);
        }
    }

    /// <summary>Allocated blocks in each window of <paramref name="window"/> blocks, from block 0 (the last window may be short).</summary>
    public uint[] AllocatedPerWindow(uint window)
    {
        lock (_gate)
        {
            var counts = new uint[(_total + window - 1) / window];
            for (ulong w = 0; w < (ulong)_allocated.Length && w * 64 < _total; w++)
                if (_allocated[w] != 0)
                {
                    ulong word = _allocated[w];
                    if ((w + 1) * 64 > _total) word &= (1UL << (int)(_total - w * 64)) - 1;
                    // Windows are multiples of 64 blocks, so a word lies in one window.
                    counts[w * 64 / window] += (uint)BitOperations.PopCount(word);
                }
            return counts;
        }
    }

    /// <summary>
    /// The first idle run at or after <paramref name="from"/> and below <paramref name="to"/>,
    /// measured up to <paramref name="cap"/> blocks; length 0 when there is none. Skips busy words whole.
    /// </summary>
    private (ulong Start, ulong Length) NextIdleRun(ulong from, ulong to, ulong cap)
    {
        for (ulong b = from; b < to;)
        {
            if ((b & 63) == 0 && _busy[b >> 6] == ulong.MaxValue) { b += 64; continue; }
            if (Get(_busy, b)) { b++; continue; }
            ulong end = b + 1;
            while (end < to && end - b < cap && !Get(_busy, end)) end++;
            return (b, end - b);
        }
        return (to, 0);
    }

    /// <summary>Turns a reservation into an allocation of the open transaction (an abort frees it).</summary>
    public void Claim(ulong address, uint blocks)
    {
        lock (_gate)
        {
            for (ulong b = address; b < address + blocks; b++)
            {
                if (!Get(_busy, b) || Get(_allocated, b)) throw new InvalidOperationException($"block {b} is not reserved");
                Set(_allocated, b);
            }
            MarkDirty(address, blocks);
            _txnAllocated[address] = blocks;
        }
    }

    /// <summary>Gives back a reservation that was never claimed.</summary>
    public void Unreserve(ulong address, uint blocks)
    {
        lock (_gate)
        {
            for (ulong b = address; b < address + blocks; b++)
            {
                if (!Get(_busy, b) || Get(_allocated, b)) throw new InvalidOperationException($"block {b} is not reserved");
                ClearBusy(b);
            }
            if (address < _cursor) _cursor = address;
        }
    }

    // --- persistence ----------------------------------------------------------------------

    /// <summary>Encodes page <paramref name="page"/> of the allocated bitmap into a block (header sealed by the caller).</summary>
    public void EncodePage(ulong page, Span<byte> block)
    {
        lock (_gate)
        {
            block.Clear();
            BinaryPrimitives.WriteUInt64LittleEndian(block[BlockHeader.KindSpecificOffset..], page);
            var bits = block[Layout.BlockHeaderSize..];
            ulong first = page * Layout.BitsPerPage;
            int words = Layout.BitmapBytesPerPage / 8;
            for (int w = 0; w < words; w++)
            {
                ulong word = (first / 64) + (ulong)w;
                ulong v = word < (ulong)_allocated.Length ? _allocated[word] : 0;
                BinaryPrimitives.WriteUInt64LittleEndian(bits[(w * 8)..], v);
            }
        }
    }

    /// <summary>Loads a page read from disk into both bitmaps (at open, nothing is pending).</summary>
    public void LoadPage(ulong page, ReadOnlySpan<byte> block)
    {
        lock (_gate)
        {
            var bits = block[Layout.BlockHeaderSize..];
            ulong first = page * Layout.BitsPerPage;
            int words = Layout.BitmapBytesPerPage / 8;
            for (int w = 0; w < words; w++)
            {
                ulong word = (first / 64) + (ulong)w;
                if (word >= (ulong)_allocated.Length) break;
                ulong v = BinaryPrimitives.ReadUInt64LittleEndian(bits[(w * 8)..]);
                _allocated[word] = v;
                _busy[word] = v;
                UpdateFull(word);
            }
            _dirtyPages.Remove(page);
        }
    }

    /// <summary>Bits past the end of the pool must be clear; returns the first set one, or 0.</summary>
    public ulong FirstBitBeyondEnd()
    {
        lock (_gate)
        {
            for (ulong b = _total; b < (ulong)_allocated.Length * 64; b++) if (Get(_allocated, b)) return b;
            return 0;
        }
    }

    /// <summary>The pages written by a commit are clean again (pages dirtied meanwhile stay dirty).</summary>
    public void ClearDirty(IEnumerable<ulong> written)
    {
        lock (_gate) foreach (ulong p in written) _dirtyPages.Remove(p);
    }

    /// <summary>
    /// The dirty pages and the pool size, taken together. A reservation on another thread may grow
    /// the pool at any time; a commit persists exactly the pages of the size it saw.
    /// </summary>
    public (ulong[] Pages, ulong TotalBlocks) DirtySnapshot()
    {
        lock (_gate)
        {
            ulong pages = (_total + Layout.BitsPerPage - 1) / Layout.BitsPerPage;
            return (_dirtyPages.Where(p => p < pages).Order().ToArray(), _total);
        }
    }

    private void MarkDirty(ulong address, uint blocks)
    {
        lock (_gate)
        {
            ulong first = address / Layout.BitsPerPage, last = (address + blocks - 1) / Layout.BitsPerPage;
            for (ulong p = first; p <= last; p++) _dirtyPages.Add(p);
        }
    }

    private void Grow(ulong extra)
    {
        ulong oldPages = PageCount;
        _total += extra;
        int words = WordsFor(_total);
        if (words > _allocated.Length)
        {
            int cap = Math.Max(words, _allocated.Length * 2);
            Array.Resize(ref _allocated, cap);
            Array.Resize(ref _busy, cap);
            Array.Resize(ref _full, (cap + 63) / 64);
        }
        for (ulong p = oldPages; p < PageCount; p++) _dirtyPages.Add(p);
    }

    /// <summary>First block of a run of <paramref name="blocks"/> non-busy blocks in [from, to), or 0.</summary>
    private ulong FindRun(ulong from, ulong to, uint blocks)
    {
        ulong b = Math.Max(from, Layout.FirstDataBlock);
        while (b + blocks <= to)
        {
            // Skip whole busy words quickly.
            if ((b & 63) == 0)
            {
                ulong w = b >> 6;
                if ((w & 63) == 0 && _full[w >> 6] == ulong.MaxValue) { b += 64 * 64; continue; }
                if (_busy[w] == ulong.MaxValue) { b += 64; continue; }
            }
            if (Get(_busy, b)) { b++; continue; }
            ulong run = 1;
            while (run < blocks && !Get(_busy, b + run)) run++;
            if (run == blocks) return b;
            b += run + 1;
        }
        return 0;
    }

    private static int WordsFor(ulong blocks)
    {
        // Whole pages, so that page encoding never reads past the array.
        ulong pages = (blocks + Layout.BitsPerPage - 1) / Layout.BitsPerPage;
        return (int)(pages * Layout.BitsPerPage / 64);
    }

    private void SetBusy(ulong b)
    {
        Set(_busy, b);
        if (_busy[b >> 6] == ulong.MaxValue) Set(_full, b >> 6);
    }

    private void ClearBusy(ulong b)
    {
        Clear(_busy, b);
        Clear(_full, b >> 6);
    }

    private void UpdateFull(ulong word)
    {
        if (_busy[word] == ulong.MaxValue) Set(_full, word); else Clear(_full, word);
    }

    private static bool Get(ulong[] bits, ulong b) => (bits[b >> 6] & (1UL << (int)(b & 63))) != 0;
    private static void Set(ulong[] bits, ulong b) => bits[b >> 6] |= 1UL << (int)(b & 63);
    private static void Clear(ulong[] bits, ulong b) => bits[b >> 6] &= ~(1UL << (int)(b & 63));
}
