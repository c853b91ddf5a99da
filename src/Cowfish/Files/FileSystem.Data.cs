using System.Buffers;
using Cowfish.Format;
using Cowfish.Transactions;
using Cowfish.Trees;

namespace Cowfish.Files;

public sealed partial class FileSystem
{
    private const int BlockSize = Layout.BlockSize;

    /// <summary>Largest file: 2^50 bytes (1 PiB).</summary>
    public const long MaxFileSize = 1L << 50;

    /// <summary>Most extent records a range clone copies per transaction; the writer lock is free between slices.</summary>
    public int CloneSliceRecords
    {
        get => _cloneSliceRecords;
        init => _cloneSliceRecords = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(CloneSliceRecords), "at least 1");
    }

    private readonly int _cloneSliceRecords = 4096;

    /// <summary>
    /// How long one slice of a range clone may gather records before it commits (the commit adds a
    /// little): what a foreground write may have to wait, at most, behind a clone.
    /// </summary>
    public TimeSpan CloneSliceTime { get; init; } = TimeSpan.FromMilliseconds(2);

    /// <summary>Reads at <paramref name="offset"/>; returns the bytes read, short at end of file.</summary>
    public int Read(string path, long offset, Span<byte> buffer)
    {
        SettleWrites();
        var p = PoolPath.Parse(path);
        using var rt = Pool.BeginRead();
        var rec = GetVolume(rt, p.Volume);
        var v = new VolumeReader(rec, rt.Tree(rec.Tree), Pool.Store);
        ulong ino = v.Resolve(p);
        return v.ReadData(v.GetInode(ino), ino, offset, buffer);
    }

    /// <summary>Opens a regular file for repeated reads and writes without resolving its path each time.</summary>
    public FileHandle OpenFile(string path)
    {
        var p = PoolPath.Parse(path);
        var (rec, ino) = ResolveFile(p, forWriting: false);
        return new FileHandle(this, rec, ino, p.ToString());
    }

    internal Inode ReadInode(VolumeRecord rec, ulong ino)
    {
        WaitForDeferred(rec, ino, 0, ulong.MaxValue);
        return ReadVolumeByRecord(rec, v => v.GetInode(ino));
    }

    /// <summary>
    /// Reads without waiting for the mapping of write-back writes: the pinned state and the pending
    /// blocks are taken together under the queue's gate, where mappings finish, so every block is
    /// either mapped in the pinned state or still pending (then it is read from where the write put
    /// it, which stays allocated while the pin lives). Only a read that reaches past the committed
    /// size of a file that pending writes grow waits for them.
    /// </summary>
    internal int ReadData(VolumeRecord rec, ulong ino, long offset, Span<byte> buffer)
    {
        if (offset < 0 || buffer.IsEmpty) return ReadCommitted(rec, ino, offset, buffer);
        ulong b0 = (ulong)offset / BlockSize, b1 = ((ulong)offset + (ulong)buffer.Length + BlockSize - 1) / BlockSize;
        var q = Queue;
        var pending = t_pendingRead ??= new();
        pending.Clear();
        ReadTransaction rt;
        ulong grows = 0;
        lock (q.Gate)
        {
            rt = Pool.BeginRead();
            if (q.Pending.Count > 0)
            {
                for (ulong b = b0; b < b1; b++)
                    if (q.Pending.TryGetValue((rec.Tree.Value, ino, b), out var p)) pending.Add((b, p.Disk, p.Crc));
                if (pending.Count > 0) q.Growth.TryGetValue((rec.Tree.Value, ino), out grows);
            }
        }
        using (rt)
        {
            var v = new VolumeReader(rec, rt.Tree(rec.Tree), Pool.Store);
            var inode = v.GetInode(ino);
            if (pending.Count == 0) return v.ReadData(inode, ino, offset, buffer);
            bool pastGrowingEnd = grows > inode.Size && (ulong)offset + (ulong)buffer.Length > inode.Size;
            if (!pastGrowingEnd)
            {
                int n = v.ReadData(inode, ino, offset, buffer);
                Span<byte> block = stackalloc byte[BlockSize];
                foreach (var (b, disk, crc) in pending)
                {
                    long at = (long)(b * BlockSize) - offset; // where the block starts in buffer
                    long from = Math.Max(0, at), to = Math.Min(n, at + BlockSize);
                    if (to <= from) continue;
                    Pool.Device.Read(Layout.ByteOffset(disk), block);
                    VolumeReader.Verify(block, crc, disk);
                    block[(int)(from - at)..(int)(to - at)].CopyTo(buffer[(int)from..]);
                }
                return n;
            }
        }
        // The size this read needs is still on its way: wait for the writes, then read.
        WaitForDeferred(rec, ino, b0, ulong.MaxValue);
        return ReadCommitted(rec, ino, offset, buffer);
    }

    [ThreadStatic] private static List<(ulong Block, ulong Disk, uint Crc)>? t_pendingRead;

    private int ReadCommitted(VolumeRecord rec, ulong ino, long offset, Span<byte> buffer)
    {
        using var rt = Pool.BeginRead();
        var v = new VolumeReader(rec, rt.Tree(rec.Tree), Pool.Store);
        return v.ReadData(v.GetInode(ino), ino, offset, buffer);
    }

    /// <summary>The whole content of a file.</summary>
    public byte[] ReadAll(string path)
    {
        var st = Stat(path);
        if (st.Size > int.MaxValue) throw new InvalidRequestException($"{path} is too large to read in one piece");
        var buf = new byte[st.Size];
        int n = Read(path, 0, buf);
        return n == buf.Length ? buf : buf[..n];
    }

    /// <summary>
    /// Writes at any offset and length (pwrite), growing the file as needed. Copy-on-write: the new
    /// blocks are reserved and written first, then mapped atomically; the old data stays readable
    /// until then, and a failure leaks nothing. Durable once <see cref="Flush"/> returns, or at once
    /// with <paramref name="durable"/>.
    /// </summary>
    public void Write(string path, long offset, ReadOnlySpan<byte> data, bool durable = false)
    {
        var (rec, ino) = ResolveFile(PoolPath.Parse(path));
        WriteData(rec, ino, offset, data, durable);
    }

    internal (VolumeRecord Record, ulong Ino) ResolveFile(PoolPath p, bool forWriting = true)
    {
        using var rt = Pool.BeginRead();
        var rec = GetVolume(rt, p.Volume);
        if (forWriting && rec.ReadOnly) throw new ReadOnlyVolumeException(p.Volume);
        var v = new VolumeReader(rec, rt.Tree(rec.Tree), Pool.Store);
        ulong ino = v.Resolve(p);
        if (v.GetInode(ino).Type != FileType.File) throw new InvalidRequestException($"{p}: not a regular file");
        return (rec, ino);
    }

    internal void WriteData(VolumeRecord rec, ulong ino, long offset, ReadOnlySpan<byte> data, bool durable, bool deferred = false)
    {
        if (data.IsEmpty) return;
        if (offset < 0 || offset + (long)data.Length > MaxFileSize) throw new InvalidRequestException($"write at {offset}+{data.Length} is outside 0..{MaxFileSize}");
        ulong end = (ulong)offset + (ulong)data.Length;
        ulong b0 = (ulong)offset / BlockSize, b1 = (end + BlockSize - 1) / BlockSize;
        // A deferred write learns of a removed file only when it is mapped; check now, so that the
        // writer gets the error instead of the write vanishing.
        if (deferred && !InodeExists(rec, ino))
            throw new NotFoundException($"inode {ino} of volume '{rec.Name}' was removed");
        using var lease = Locks.Acquire(rec.Tree.Value, ino, b0, b1);
        int blocks = (int)(b1 - b0);
        var buf = ArrayPool<byte>.Shared.Rent(blocks * BlockSize);
        try
        {
            var span = buf.AsSpan(0, blocks * BlockSize);
            int head = (int)((ulong)offset % BlockSize);
            if (head != 0 || end % BlockSize != 0)
            {
                // Read-modify-write of the partial edge blocks, under the range lock so no update is lost.
                span.Clear();
                ReadBlockInto(rec, ino, b0, span[..BlockSize]);
                if (b1 - 1 != b0) ReadBlockInto(rec, ino, b1 - 1, span[^BlockSize..]);
            }
            data.CopyTo(span[head..]);
            MapChanges(rec, ino, [(b0, buf.AsMemory(0, blocks * BlockSize))], null, null, durable, deferred && !durable, growTo: end);
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }

    private bool InodeExists(VolumeRecord rec, ulong ino)
    {
        using var rt = Pool.BeginRead();
        Span<byte> key = stackalloc byte[9];
        return rt.Tree(rec.Tree).Contains(FileKeys.InodeKey(ino, key));
    }

    private void ReadBlockInto(VolumeRecord rec, ulong ino, ulong block, Span<byte> dst)
    {
        using var phase = PhaseRecorder.Enter(Phase.Read);
        WaitForDeferred(rec, ino, block, block + 1);
        using var rt = Pool.BeginRead();
        var v = new VolumeReader(rec, rt.Tree(rec.Tree), Pool.Store);
        if (v.TryGetInode(ino, out var inode)) v.ReadData(inode, ino, (long)(block * BlockSize), dst);
    }

    /// <summary>
    /// The copy-on-write path shared by every data change: reserves blocks for each run of new
    /// content, writes them outside any lock, then in one transaction claims them, unmaps
    /// <paramref name="unmap"/>, maps the runs and sets the size. Crash-atomic: the file shows all
    /// of the change or none of it. A failure before the transaction gives the reservations back;
    /// an abort inside it frees what it claimed. The caller holds the range lock.
    /// <paramref name="place"/> hands out the reservations (defrag places data in a region it
    /// reserved); by default each piece is reserved where the allocator finds room.
    /// </summary>
    private void MapChanges(VolumeRecord rec, ulong ino, IReadOnlyList<(ulong Block, ReadOnlyMemory<byte> Content)> runs,
        (ulong From, ulong To)? unmap, Func<Inode, ulong>? size, bool durable, bool deferred = false, Func<uint, ulong>? place = null, ulong growTo = 0)
    {
        using var phase = PhaseRecorder.Enter(Phase.Cow);
        var reserved = new List<(ulong Disk, uint Count)>();
        MapRequest? request = null;
        try
        {
            var fresh = new List<(ulong Block, Extent Extent)>();
            foreach (var (b0, content) in runs)
            {
                int blocks = content.Length / BlockSize;
                for (int at = 0; at < blocks;)
                {
                    uint n = (uint)Math.Min(Extent.MaxBlocks, blocks - at);
                    ulong disk = place is null ? Pool.Space.Reserve(n) : place(n);
                    reserved.Add((disk, n));
                    var piece = content.Span.Slice(at * BlockSize, (int)n * BlockSize);
                    var crcs = new uint[n];
                    for (int i = 0; i < n; i++) crcs[i] = Crc32C.Compute(piece.Slice(i * BlockSize, BlockSize));
                    WriteDevice(disk, piece);
                    fresh.Add((b0 + (ulong)at, new Extent(disk, n, 0, n, false, crcs)));
                    at += (int)n;
                }
            }
            request = new MapRequest(rec, ino, fresh, unmap, size, reserved, durable) { Deferred = deferred, GrowTo = growTo };
            if (deferred) MapLater(request);
            else Map(request);
            BoundPendingFrees();
        }
        catch
        {
            // A queued deferred request owns its reservations: the mapper claims or returns them.
            if (request is not { Claimed: true } && request is not { Queued: true, Deferred: true })
                foreach (var (disk, n) in reserved) Pool.Space.Unreserve(disk, n);
            throw;
        }
    }

    /// <summary>
    /// Blocks freed by commits that did not wait become reusable only once a commit is durable. A
    /// writer that never flushes would make the pool grow without bound, so once the freed blocks
    /// waiting for durability pass a quarter of the pool (and 64 MiB), a flush makes them durable.
    /// </summary>
    private void BoundPendingFrees()
    {
        ulong pending = Pool.Space.PendingBlocks;
        if (pending <= 16_384 || pending <= Pool.Space.TotalBlocks / 4) return;
        // Past half the pool the writer waits for the flush; before that, the flush runs in the
        // background. A flush writes back everything the page cache holds for the pool, and writes
        // issued meanwhile slow down, so flushes are kept rare: the price is a pool up to a quarter
        // larger under a long stream of overwrites that no client ever flushes.
        if (pending > Pool.Space.TotalBlocks / 2) Pool.Flush();
        else if (Interlocked.Exchange(ref _backgroundFlush, 1) == 0)
        {
            new Thread(() =>
            {
                try { Pool.Flush(); }
                catch (CowfishException) { } // the pool is failed now; the next caller hears of it
                finally { Volatile.Write(ref _backgroundFlush, 0); }
            }) { IsBackground = true, Name = "cowfish-flush" }.Start();
        }
    }

    private int _backgroundFlush;

    /// <summary>A mapping waiting for its transaction.</summary>
    internal sealed class MapRequest(VolumeRecord rec, ulong ino, List<(ulong Block, Extent Extent)> fresh, (ulong From, ulong To)? unmap,
        Func<Inode, ulong>? size, List<(ulong Disk, uint Count)> reserved, bool durable)
    {
        public readonly VolumeRecord Rec = rec;
        public readonly ulong Ino = ino;
        public readonly List<(ulong Block, Extent Extent)> Fresh = fresh;
        public readonly (ulong From, ulong To)? Unmap = unmap;
        /// <summary>The file's size after the change, from its size before; null: at least <see cref="GrowTo"/> (a write).</summary>
        public readonly Func<Inode, ulong>? Size = size;
        public ulong GrowTo;
        public readonly List<(ulong Disk, uint Count)> Reserved = reserved;
        public readonly bool Durable = durable;
        /// <summary>The writer did not wait for the mapping (write-back); nobody waits on it but readers of its blocks.</summary>
        public bool Deferred;
        public bool Queued;
        /// <summary>When it was queued (Stopwatch ticks).</summary>
        public long QueuedAt;
        /// <summary>The file blocks the request maps or unmaps: readers of these wait until it is applied.</summary>
        public ulong From => Fresh.Count > 0 ? Math.Min(Fresh[0].Block, Unmap?.From ?? ulong.MaxValue) : Unmap?.From ?? 0;
        public ulong To => Fresh.Count > 0 ? Math.Max(Fresh[^1].Block + Fresh[^1].Extent.Count, Unmap?.To ?? 0) : Unmap?.To ?? 0;
        /// <summary>The reservations became allocations of a transaction: a commit keeps them, an abort frees them.</summary>
        public bool Claimed;
        public bool Done;
        public Exception? Error;
    }

    /// <summary>
    /// The mapping queue of a pool, shared by every <see cref="FileSystem"/> over it (a server and the
    /// commands it runs for clients), so that settling the queue covers every writer.
    /// </summary>
    internal sealed class MapQueue
    {
        // Guards every field; callers waiting for a mapping wait on it.
        public readonly object Gate = new();
        public readonly List<MapRequest> Queue = new();
        // The batch being applied now, out of the queue but not yet done.
        public List<MapRequest> Applying = new();
        // Someone (a writer or the background mapper) is applying batches; nobody else may start.
        public bool Mapping;
        // Deferred requests queued or being applied.
        public int Deferred;
        // Deferred requests ever queued, and ever finished; they finish in queue order.
        public long Enqueued, Finished;
        // Room for deferred writes: a writer takes a slot before it queues, the mapping gives it back.
        public readonly FairSlots Slots = new(MaxDeferred);
        // Every block that a deferred write maps and that is not mapped yet, with where that write
        // put it: the newest queued write of each block. Readers read these instead of waiting.
        public readonly Dictionary<(ulong Tree, ulong Ino, ulong Block), (MapRequest Request, ulong Disk, uint Crc)> Pending = new();
        // The largest size that deferred writes of a file grow it to (while any is pending).
        public readonly Dictionary<(ulong Tree, ulong Ino), ulong> Growth = new();
        // The background mapper, and whether it has been handed the lead.
        public Thread? MapperThread;
        public bool MapperWanted;
        // Moving average of the time one request takes to map, in milliseconds (batch sizing).
        public double MsPerRequest = 0.05;
        // Callers waiting for mappings to finish (settle, a read of pending blocks, a synchronous
        // mapping): while any waits, the mapper maps at once instead of gathering a batch.
        public int Urgent;
    }

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Pool, MapQueue> PoolQueues = new();

    private MapQueue Queue => _queue ??= PoolQueues.GetValue(Pool, _ => new MapQueue());
    private MapQueue? _queue;

    /// <summary>
    /// Most deferred writes waiting for their mapping; a writer past this waits (back-pressure).
    /// Small enough that settling the queue (a snapshot, a clone, a read of a pending block) waits
    /// for a few milliseconds of mapping, not hundreds; large enough to keep the mapper busy.
    /// </summary>
    private const int MaxDeferred = 512;

    /// <summary>Write-back mappings queued or being applied now (the mapping-queue depth).</summary>
    internal int PendingMappings => Volatile.Read(ref Queue.Deferred);

    /// <summary>Most requests one mapping transaction takes, so that it holds the writer lock briefly.</summary>
    private const int MaxBatch = 512;

    /// <summary>
    /// How long one mapping batch should take: a writer waiting for room in a full queue waits for
    /// about one batch, so batches are sized by time (from the measured cost of a mapping), not
    /// only by count.
    /// </summary>
    private const double BatchBudgetMs = 2.0;

    /// <summary>Longest the mapper lets a write-back write wait for a fuller batch when nobody waits for it.</summary>
    private const double LazyMs = 5.0;

    /// <summary>
    /// Maps a request, batched with whatever other writers queued meanwhile: one caller at a time
    /// leads, taking every queued request into one transaction, so concurrent writes share a
    /// commit (group mapping, the way group commit shares a flush). Returns when the request's
    /// transaction has committed.
    /// </summary>
    private void Map(MapRequest request)
    {
        using var phase = PhaseRecorder.Enter(Phase.Map);
        var q = Queue;
        lock (q.Gate)
        {
            q.Queue.Add(request);
            request.Queued = true;
            request.QueuedAt = System.Diagnostics.Stopwatch.GetTimestamp();
            q.Urgent++;
            Monitor.PulseAll(q.Gate);
            try { while (!request.Done && q.Mapping) Monitor.Wait(q.Gate); }
            finally { q.Urgent--; }
            if (request.Done)
            {
                if (request.Error is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(request.Error);
                return;
            }
            q.Mapping = true;
        }
        RunBatches(request);
        if (request.Error is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(request.Error);
    }

    /// <summary>
    /// Write-back: queues the mapping of data already written to its new blocks and returns at once.
    /// The background mapper applies queued requests in order, many per transaction. Until then,
    /// readers of the file's affected blocks wait for it (<see cref="WaitForDeferred"/>), and every
    /// other operation settles the queue first (<see cref="SettleWrites"/>), so the write is visible
    /// to everything that runs after it returns. It is durable after the next flush, as any write.
    /// </summary>
    private void MapLater(MapRequest request)
    {
        using var phase = PhaseRecorder.Enter(Phase.Map);
        var q = Queue;
        // Writers are admitted in arrival order: when the queue is full, a writer that waits is not
        // overtaken by later ones (which would starve it for many batches), and it waits on a slot
        // of its own rather than on the queue's gate, which the mapper needs.
        q.Slots.Acquire();
        try { Pool.ThrowIfUnusable(); }
        catch
        {
            q.Slots.Release();
            throw;
        }
        lock (q.Gate)
        {
            q.Queue.Add(request);
            request.Queued = true;
            request.QueuedAt = System.Diagnostics.Stopwatch.GetTimestamp();
            q.Deferred++;
            q.Enqueued++;
            ulong tree = request.Rec.Tree.Value;
            foreach (var (b, e) in request.Fresh)
                for (uint i = 0; i < e.Count; i++) q.Pending[(tree, request.Ino, b + i)] = (request, e.DiskBlock(i), e.Crcs[i]);
            System.Diagnostics.Debug.Assert(request.Size is null, "a deferred request that is not a write");
            if (!q.Growth.TryGetValue((tree, request.Ino), out ulong g) || g < request.GrowTo) q.Growth[(tree, request.Ino)] = request.GrowTo;
            if (q.Mapping) return;
            q.Mapping = true;
        }
        StartMapper();
    }

    /// <summary>
    /// Hands the lead to the pool's mapper thread (the caller has set <c>Mapping</c> for it). A
    /// dedicated thread rather than the thread pool: callers block waiting for mappings, and a
    /// starved thread pool would leave the mapper queued behind them.
    /// </summary>
    private void StartMapper()
    {
        var q = Queue;
        lock (q.Gate)
        {
            q.MapperWanted = true;
            if (q.MapperThread is null)
            {
                q.MapperThread = new Thread(MapperLoop) { IsBackground = true, Name = "cowfish-mapper" };
                q.MapperThread.Start();
            }
            else Monitor.PulseAll(q.Gate);
        }
    }

    private void MapperLoop()
    {
        var q = Queue;
        while (true)
        {
            lock (q.Gate)
            {
                while (!q.MapperWanted)
                {
                    // An idle mapper ends after a while; the next deferred write starts another.
                    if (!Monitor.Wait(q.Gate, TimeSpan.FromSeconds(10)) && !q.MapperWanted)
                    {
                        q.MapperThread = null;
                        return;
                    }
                }
                q.MapperWanted = false;
            }
            RunBatches(null);
        }
    }

    /// <summary>
    /// Applies queued batches while this thread leads: until <paramref name="until"/> is done, or, for
    /// the background mapper, until the queue is empty. A writer that leaves work behind hands it
    /// to the background mapper, so deferred requests never wait for another writer.
    /// </summary>
    private void RunBatches(MapRequest? until)
    {
        var q = Queue;
        while (true)
        {
            List<MapRequest> batch;
            lock (q.Gate)
            {
                if (q.Queue.Count == 0 || until is { Done: true })
                {
                    if (q.Queue.Count > 0) StartMapper(); // keeps q.Mapping: the mapper leads now
                    else q.Mapping = false;
                    Monitor.PulseAll(q.Gate);
                    return;
                }
                int limit = Math.Clamp((int)(BatchBudgetMs / q.MsPerRequest), 16, MaxBatch);
                if (until is null && q.Queue.Count < limit && q.Urgent == 0 && q.Deferred < MaxDeferred / 2)
                {
                    // Nobody waits for these mappings (readers read pending blocks where they are):
                    // let a fuller batch gather, so that a commit's fixed cost is shared by more
                    // writes, but never hold the oldest one back for more than LazyMs.
                    double waited = System.Diagnostics.Stopwatch.GetElapsedTime(q.Queue[0].QueuedAt).TotalMilliseconds;
                    if (waited < LazyMs)
                    {
                        Monitor.Wait(q.Gate, TimeSpan.FromMilliseconds(LazyMs - waited));
                        continue;
                    }
                }
                int take = Math.Min(q.Queue.Count, limit);
                batch = q.Queue.GetRange(0, take);
                q.Queue.RemoveRange(0, take);
                q.Applying = batch;
            }
            long started = System.Diagnostics.Stopwatch.GetTimestamp();
            try { ApplyBatch(batch); }
            finally
            {
                double ms = System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds / batch.Count;
                lock (q.Gate)
                {
                    q.MsPerRequest = 0.8 * q.MsPerRequest + 0.2 * Math.Clamp(ms, 0.001, 10);
                    foreach (var r in batch)
                    {
                        r.Done = true;
                        if (r.Deferred) FinishDeferred(r);
                    }
                    q.Applying = [];
                    Monitor.PulseAll(q.Gate);
                }
            }
        }
    }

    /// <summary>
    /// A deferred request nobody waits for: on failure its reservations go back, and unless its file
    /// simply went away, the pool fails, since a write was acknowledged and then lost; the next flush
    /// reports it. Called under the queue's gate.
    /// </summary>
    private void FinishDeferred(MapRequest r)
    {
        var q = Queue;
        q.Deferred--;
        q.Finished++;
        q.Slots.Release();
        ulong tree = r.Rec.Tree.Value;
        foreach (var (b, e) in r.Fresh)
            for (uint i = 0; i < e.Count; i++)
                if (q.Pending.TryGetValue((tree, r.Ino, b + i), out var p) && ReferenceEquals(p.Request, r)) q.Pending.Remove((tree, r.Ino, b + i));
        if (q.Deferred == 0) q.Growth.Clear();
        if (r.Error is null) return;
        if (!r.Claimed) foreach (var (disk, n) in r.Reserved) Pool.Space.Unreserve(disk, n);
        if (r.Error is not (NotFoundException or ReadOnlyVolumeException)) Pool.Fail(r.Error);
    }

    /// <summary>Waits until no deferred mapping of the file's blocks [from, to) is pending.</summary>
    internal void WaitForDeferred(VolumeRecord rec, ulong ino, ulong from, ulong to)
    {
        using var phase = PhaseRecorder.Enter(Phase.Map);
        var q = Queue;
        lock (q.Gate)
        {
            if (!(q.Deferred > 0 && (Overlaps(q.Queue) || Overlaps(q.Applying)))) return;
            q.Urgent++;
            Monitor.PulseAll(q.Gate);
            try { while (q.Deferred > 0 && (Overlaps(q.Queue) || Overlaps(q.Applying))) Monitor.Wait(q.Gate); }
            finally { q.Urgent--; }
        }

        bool Overlaps(List<MapRequest> list)
        {
            foreach (var r in list)
                if (r.Deferred && !r.Done && r.Ino == ino && r.Rec.Tree == rec.Tree && r.From < to && from < r.To) return true;
            return false;
        }
    }

    /// <summary>
    /// Waits until every deferred write queued so far is mapped (not those queued later, so a
    /// steady stream of writes cannot starve it). Operations that look at, share or change data
    /// (reads by path, stat, clone, snapshot, flush, every namespace change) call it first, so they
    /// see every write that returned before them, and a durable change covers those writes too.
    /// </summary>
    internal void SettleWrites()
    {
        using var phase = PhaseRecorder.Enter(Phase.Map);
        var q = Queue;
        lock (q.Gate)
        {
            long target = q.Enqueued;
            if (q.Finished >= target) return;
            q.Urgent++;
            Monitor.PulseAll(q.Gate);
            try { while (q.Finished < target) Monitor.Wait(q.Gate); }
            finally { q.Urgent--; }
        }
    }

    /// <summary>A write transaction for a change other than a data mapping: deferred writes settle first.</summary>
    private WriteTransaction BeginChange()
    {
        SettleWrites();
        return Pool.BeginWrite();
    }

    private void ApplyBatch(List<MapRequest> batch)
    {
        try
        {
            using var tx = Pool.BeginWrite();
            // Requests for one file are applied together: its extent tree is opened and written once.
            foreach (var group in batch.GroupBy(r => (r.Rec.Tree, r.Ino)))
            {
                var first = group.First();
                // A request whose volume or file went away fails alone, before it changes anything.
                VolumeWriter v;
                Inode inode;
                try
                {
                    v = OpenForWrite(tx, first.Rec);
                    if (!v.TryGetInode(first.Ino, out inode)) throw new NotFoundException($"inode {first.Ino} of volume '{first.Rec.Name}' was removed");
                }
                catch (Exception e) when (e is NotFoundException or ReadOnlyVolumeException)
                {
                    foreach (var r in group) r.Error = e;
                    continue;
                }
                foreach (var r in group)
                {
                    foreach (var (disk, n) in r.Reserved) Pool.Space.Claim(disk, n);
                    r.Claimed = true;
                }
                v.ChangeData(first.Ino, inode, tree =>
                {
                    // In queue order, as if one after the other; each size rule sees the size before it.
                    ulong size = inode.Size;
                    foreach (var r in group)
                    {
                        if (r.Unmap is { } u) ExtentMap.Replace(tree, v.Space, u.From, u.To, []);
                        foreach (var (b, e) in r.Fresh) ExtentMap.Replace(tree, v.Space, b, b + e.Count, [(b, e)]);
                        size = r.Size is null ? Math.Max(size, r.GrowTo) : r.Size(inode with { Size = size });
                    }
                    return size;
                });
            }
            tx.Commit(batch.Any(r => r.Durable));
        }
        catch (Exception e)
        {
            // The whole transaction is gone; its abort freed every claimed reservation.
            foreach (var r in batch) r.Error ??= e;
        }
    }

    private void WriteDevice(ulong block, ReadOnlySpan<byte> data)
    {
        try { Pool.Device.Write(Layout.ByteOffset(block), data); }
        catch (DeviceIOException e)
        {
            Pool.Fail(e);
            throw new EngineFailedException(e);
        }
    }

    /// <summary>The writer for a volume that must still exist, under the same tree, and be writable.</summary>
    private static VolumeWriter OpenForWrite(WriteTransaction tx, VolumeRecord expected)
    {
        var rec = GetVolume(tx, VolumeDirectory(tx), expected.Name);
        if (rec.Tree != expected.Tree) throw new NotFoundException($"volume '{expected.Name}' was replaced");
        if (rec.ReadOnly) throw new ReadOnlyVolumeException(expected.Name);
        return new VolumeWriter(rec, tx);
    }

    /// <summary>Sets the size: shrinking drops the data past it (zeroing the rest of the last block), growing adds a hole.</summary>
    public void Truncate(string path, long size)
    {
        if (size < 0 || size > MaxFileSize) throw new InvalidRequestException($"size {size} is outside 0..{MaxFileSize}");
        var (rec, ino) = ResolveFile(PoolPath.Parse(path));
        using var lease = Locks.Acquire(rec.Tree.Value, ino, 0, ulong.MaxValue);
        WaitForDeferred(rec, ino, 0, ulong.MaxValue);
        ulong newSize = (ulong)size;
        ulong keep = (newSize + BlockSize - 1) / BlockSize;
        ulong oldSize = ReadVolumeByRecord(rec, v => v.GetInode(ino).Size);
        var runs = new List<(ulong, ReadOnlyMemory<byte>)>();
        if (newSize < oldSize && newSize % BlockSize != 0)
        {
            // The kept part of the last block is rewritten with zeros after the end, so that growing
            // the file later reads zeros there.
            var block = new byte[BlockSize];
            ReadBlockInto(rec, ino, keep - 1, block);
            block.AsSpan((int)(newSize % BlockSize)).Clear();
            runs.Add((keep - 1, block));
        }
        MapChanges(rec, ino, runs, newSize < oldSize ? (keep, ulong.MaxValue) : null, _ => newSize, durable: true);
    }

    /// <summary>Deallocates a range; it reads as zeros afterwards and the size does not change.</summary>
    public void PunchHole(string path, long offset, long length)
    {
        CheckRange(offset, length);
        var (rec, ino) = ResolveFile(PoolPath.Parse(path));
        Zero(rec, ino, offset, length, keepSize: true, durable: true);
    }

    /// <summary>Zeroes a range, growing the file if the range ends past it (fallocate ZERO_RANGE).</summary>
    public void ZeroRange(string path, long offset, long length)
    {
        CheckRange(offset, length);
        var (rec, ino) = ResolveFile(PoolPath.Parse(path));
        Zero(rec, ino, offset, length, keepSize: false, durable: true);
    }

    private static void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset + length > MaxFileSize) throw new InvalidRequestException($"range {offset}+{length} is outside 0..{MaxFileSize}");
    }

    internal void Zero(VolumeRecord rec, ulong ino, long offset, long length, bool keepSize, bool durable)
    {
        CheckRange(offset, length);
        if (length == 0) return;
        ulong start = (ulong)offset, end = (ulong)(offset + length);
        ulong first = start / BlockSize, last = (end + BlockSize - 1) / BlockSize; // every block touched
        using var lease = Locks.Acquire(rec.Tree.Value, ino, first, last);
        WaitForDeferred(rec, ino, 0, ulong.MaxValue); // the size may still grow by a queued write
        ulong size = ReadVolumeByRecord(rec, v => v.GetInode(ino).Size);
        // Only bytes inside the file are zeroed when the size stays; ZERO_RANGE may grow the file.
        ulong zeroEnd = keepSize ? Math.Min(end, size) : end;
        if (zeroEnd <= start && keepSize)
        {
            if (durable) Pool.Flush(); // nothing to change, but a durable call returns durable
            return;
        }
        // Whole blocks are unmapped; a partial block at either edge is rewritten with its range zeroed.
        var runs = new List<(ulong, ReadOnlyMemory<byte>)>();
        void Edge(ulong block)
        {
            ulong bs = block * BlockSize, be = bs + BlockSize;
            ulong zs = Math.Max(bs, start), ze = Math.Min(be, zeroEnd);
            if (ze <= zs || (zs == bs && ze == be) || bs >= size) return;
            var content = new byte[BlockSize];
            ReadBlockInto(rec, ino, block, content);
            content.AsSpan((int)(zs - bs), (int)(ze - zs)).Clear();
            runs.Add((block, content));
        }
        ulong lastZeroed = (zeroEnd + BlockSize - 1) / BlockSize;
        if (zeroEnd > start)
        {
            Edge(first);
            if (lastZeroed - 1 != first) Edge(lastZeroed - 1);
        }
        ulong wholeFrom = (start + BlockSize - 1) / BlockSize, wholeTo = zeroEnd / BlockSize;
        // A whole block past the old end of file (ZERO_RANGE growing the file) is already a hole.
        MapChanges(rec, ino, runs, wholeTo > wholeFrom ? (wholeFrom, wholeTo) : null,
            i => keepSize ? i.Size : Math.Max(i.Size, end), durable);
    }

    private T ReadVolumeByRecord<T>(VolumeRecord rec, Func<VolumeReader, T> read)
    {
        using var rt = Pool.BeginRead();
        return read(new VolumeReader(rec, rt.Tree(rec.Tree), Pool.Store));
    }

    /// <summary>
    /// Reserves space for [offset, offset + length) as unwritten extents (they read as zeros) and
    /// grows the file to cover it (fallocate mode 0). Blocks already mapped are left alone.
    /// </summary>
    public void Preallocate(string path, long offset, long length)
    {
        if (offset < 0 || length <= 0 || offset + length > MaxFileSize) throw new InvalidRequestException($"range {offset}+{length} is outside 0..{MaxFileSize}");
        var (rec, ino) = ResolveFile(PoolPath.Parse(path));
        Preallocate(rec, ino, offset, length, durable: true);
    }

    internal void Preallocate(VolumeRecord rec, ulong ino, long offset, long length, bool durable)
    {
        ulong b0 = (ulong)offset / BlockSize, b1 = ((ulong)(offset + length) + BlockSize - 1) / BlockSize;
        using var lease = Locks.Acquire(rec.Tree.Value, ino, b0, b1);
        WaitForDeferred(rec, ino, 0, ulong.MaxValue);
        using var tx = BeginChange();
        var v = OpenForWrite(tx, rec);
        var inode = v.GetInode(ino);
        var tree = v.OpenExtents(ino, inode);
        ulong cur = b0;
        var holes = new List<(ulong From, ulong To)>();
        foreach (var (start, e) in ExtentMap.Overlapping(tree, b0, b1))
        {
            if (start > cur) holes.Add((cur, start));
            cur = Math.Max(cur, start + e.Count);
        }
        if (cur < b1) holes.Add((cur, b1));
        foreach (var (from, to) in holes)
            for (ulong b = from; b < to;)
            {
                uint n = (uint)Math.Min(Extent.MaxBlocks, to - b);
                ulong disk = Pool.Space.Allocate(n);
                ExtentMap.Replace(tree, v.Space, b, b + n, [(b, new Extent(disk, n, 0, n, true, []))]);
                b += n;
            }
        ulong size = Math.Max(inode.Size, (ulong)(offset + length));
        long now = Inode.NowNs();
        v.PutInode(ino, VolumeWriter.SaveExtents(tree, inode) with { Size = size, CtimeNs = now, MtimeNs = now, DataVersion = inode.DataVersion + 1 });
        tx.Commit(durable);
    }
}
