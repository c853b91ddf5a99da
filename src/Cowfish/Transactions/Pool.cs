using Cowfish.Allocation;
using Cowfish.Devices;
using Cowfish.Format;
using Cowfish.Trees;

namespace Cowfish.Transactions;

/// <summary>
/// An open pool: one writer at a time, any number of readers, each pinned to a committed state.
/// </summary>
/// <remarks>
/// Lock order: <c>_writer</c> → <c>_stateGate</c>; no I/O happens under <c>_stateGate</c>. A commit
/// stages its state under the writer lock, lets the next writer in, and then waits until a flush
/// covers it; one flush pair covers every commit staged so far (group commit).
/// </remarks>
public sealed class Pool : IDisposable
{
    private readonly IBlockDevice _device;
    private readonly bool _ownsDevice;
    private readonly FairLock _writer = new();
    // Guards _durable, _durableSlot, _flushing, _readers and _failure; waiters for durability wait on it.
    private readonly object _stateGate = new();
    private readonly SortedDictionary<ulong, int> _readers = new();
    private Superblock _durable;
    private int _durableSlot;
    private Superblock _staged; // written only under _writer; read anywhere with Volatile.Read
    private ulong _nextGeneration; // under _writer
    private Exception? _failure;
    private bool _flushing;
    private long _superblockWrites;
    private bool _disposed;

    internal Pool(IBlockDevice device, bool ownsDevice, PoolOptions options, Superblock sb, int slot, SpaceMap map)
    {
        _device = device;
        _ownsDevice = ownsDevice;
        Options = options;
        Store = new NodeStore(device, options.CacheNodes) { WriteFailed = e => Fail(e) };
        Space = map;
        _durable = _staged = sb;
        _durableSlot = slot;
        _nextGeneration = sb.Generation + 1;
        map.GrowthIncrement = options.GrowthBlocks;
    }

    public PoolOptions Options { get; }
    internal NodeStore Store { get; }
    internal SpaceMap Space { get; }
    internal IBlockDevice Device => _device;

    /// <summary>Superblock writes so far; each is one durable group of commits.</summary>
    public long DurableFlushes => Interlocked.Read(ref _superblockWrites);

    /// <summary>Generation of the newest durable commit.</summary>
    public Generation DurableGeneration { get { lock (_stateGate) return new Generation(_durable.Generation); } }

    // --- opening --------------------------------------------------------------------------

    /// <summary>Creates a new pool file; fails if the file exists.</summary>
    public static Pool Create(string path, PoolOptions? options = null)
    {
        var dev = FileDevice.Open(path, create: true);
        try { return Create(dev, options, ownsDevice: true); }
        catch { dev.Dispose(); File.Delete(path); throw; }
    }

    /// <summary>Opens an existing pool file, locking it against other processes.</summary>
    public static Pool Open(string path, PoolOptions? options = null)
    {
        if (!File.Exists(path)) throw new InvalidRequestException($"pool {path} does not exist");
        var dev = FileDevice.Open(path);
        try { return Open(dev, options, ownsDevice: true); }
        catch { dev.Dispose(); throw; }
    }

    /// <summary>Formats <paramref name="device"/> as an empty pool and opens it.</summary>
    public static Pool Create(IBlockDevice device, PoolOptions? options = null, bool ownsDevice = false)
        => PoolFormatter.Format(device, options ?? new PoolOptions(), ownsDevice);

    /// <summary>Opens the pool on <paramref name="device"/> at its newest valid superblock.</summary>
    public static Pool Open(IBlockDevice device, PoolOptions? options = null, bool ownsDevice = false)
        => PoolLoader.Load(device, options ?? new PoolOptions(), ownsDevice);

    // --- transactions ---------------------------------------------------------------------

    /// <summary>
    /// Pins the newest committed state (a commit made without waiting for durability is included).
    /// Never blocks on the writer.
    /// </summary>
    public ReadTransaction BeginRead()
    {
        lock (_stateGate)
        {
            ThrowIfUnusable();
            var sb = Volatile.Read(ref _staged);
            _readers[sb.Generation] = _readers.GetValueOrDefault(sb.Generation) + 1;
            return new ReadTransaction(this, sb);
        }
    }

    /// <summary>Starts the one write transaction, waiting for the current writer to finish.</summary>
    public WriteTransaction BeginWrite()
    {
        ThrowIfUnusable();
        _writer.Enter();
        try
        {
            ThrowIfUnusable();
            ReleaseFreedBlocks();
            ulong gen = _nextGeneration++;
            return new WriteTransaction(this, _staged, gen);
        }
        catch
        {
            _writer.Exit();
            throw;
        }
    }

    internal void Unpin(ulong generation)
    {
        lock (_stateGate)
        {
            int n = _readers[generation] - 1;
            if (n == 0) _readers.Remove(generation); else _readers[generation] = n;
        }
    }

    /// <summary>Oldest generation a live reader pins, or the newest durable one when there is none.</summary>
    internal ulong OldestPinned()
    {
        lock (_stateGate)
        {
            foreach (var kv in _readers) return kv.Key;
            return _durable.Generation;
        }
    }

    private void ReleaseFreedBlocks()
    {
        ulong durable, oldest;
        lock (_stateGate)
        {
            durable = _durable.Generation;
            oldest = durable;
            foreach (var kv in _readers) { oldest = kv.Key; break; }
        }
        Space.Release(durable, oldest);
    }

    /// <summary>Called by a committing writer, under the writer lock: the state becomes the base of the next writer.</summary>
    internal void Stage(Superblock sb)
    {
        _staged = sb;
        long needed = Layout.ByteOffset(sb.TotalBlocks);
        if (_device.Length < needed) _device.SetLength(needed);
    }

    internal void EndWrite() => _writer.Exit();

    /// <summary>
    /// Cuts the device back to the largest of the durable, the staged and the space map's pool
    /// sizes (after a relocation shrank the pool). Under the writer lock, so that no commit grows
    /// the device meanwhile; never below the durable size, so that a power cut finds every block
    /// it needs; never below the map's size, since a reservation may have grown the pool and
    /// written its data there before any commit records it (a cut would lose that data).
    /// </summary>
    internal void TrimDevice()
    {
        ThrowIfUnusable();
        _writer.Enter();
        try
        {
            ulong keep;
            lock (_stateGate) keep = Math.Max(_durable.TotalBlocks, _staged.TotalBlocks);
            Space.WithSizeHeld(total =>
            {
                long bytes = Layout.ByteOffset(Math.Max(keep, total));
                if (_device.Length > bytes) _device.SetLength(bytes);
            });
        }
        catch (DeviceIOException e)
        {
            Fail(e);
            throw new EngineFailedException(e);
        }
        finally { _writer.Exit(); }
    }

    /// <summary>Makes every commit so far durable (for commits made without waiting).</summary>
    public void Flush() => MakeDurable(Volatile.Read(ref _staged).Generation);

    /// <summary>Generation of the newest commit, durable or not.</summary>
    public Generation CommittedGeneration => new(Volatile.Read(ref _staged).Generation);

    /// <summary>
    /// Makes every staged commit up to <paramref name="generation"/> durable: flush the nodes, write
    /// the superblock to the slot that does not hold the newest durable one, flush again.
    /// </summary>
    /// <remarks>
    /// Group commit: one caller at a time leads a flush, for the newest staged state at that moment.
    /// Everyone else waits on <c>_stateGate</c> and is woken when a flush completes, so a commit
    /// that a flush covered returns at once instead of queueing behind the next flush.
    /// </remarks>
    internal void MakeDurable(ulong generation)
    {
        using var phase = PhaseRecorder.Enter(Phase.Flush);
        while (true)
        {
            Superblock target;
            int slot;
            lock (_stateGate)
            {
                while (true)
                {
                    ObjectDisposedException.ThrowIf(_disposed, this);
                    if (_failure is not null) throw new EngineFailedException(_failure);
                    if (_durable.Generation >= generation) return;
                    if (!_flushing) break;
                    Monitor.Wait(_stateGate);
                }
                _flushing = true;
                slot = 1 - _durableSlot;
                // A staged state is fully written before it is published, so any of them will do.
                target = Volatile.Read(ref _staged);
            }
            long flushStarted = System.Diagnostics.Stopwatch.GetTimestamp();
            try
            {
                _device.Flush();
                var buf = new byte[Layout.BlockSize];
                target.Encode(buf);
                _device.Write(Layout.ByteOffset((ulong)slot), buf);
                _device.Flush();
            }
            catch (Exception e)
            {
                lock (_stateGate)
                {
                    _failure ??= e;
                    _flushing = false;
                    Monitor.PulseAll(_stateGate);
                }
                throw new EngineFailedException(e);
            }
            Interlocked.Increment(ref _superblockWrites);
            Instruments.Flushed(flushStarted);
            lock (_stateGate)
            {
                _durable = target;
                _durableSlot = slot;
                _flushing = false;
                Monitor.PulseAll(_stateGate);
            }
        }
    }

    /// <summary>Marks the pool unusable after a failed write or flush; every later call refuses.</summary>
    internal void Fail(Exception cause)
    {
        lock (_stateGate)
        {
            _failure ??= cause;
            Monitor.PulseAll(_stateGate);
        }
    }

    internal void ThrowIfUnusable()
    {
        lock (_stateGate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_failure is not null) throw new EngineFailedException(_failure);
        }
    }

    public bool IsFailed { get { lock (_stateGate) return _failure is not null; } }

    /// <summary>Facts about the newest committed state.</summary>
    public PoolInfo Info()
    {
        using var rt = BeginRead();
        return rt.Info();
    }

    /// <summary>Makes commits made without waiting durable (best effort), then closes the pool.</summary>
    public void Dispose()
    {
        lock (_stateGate)
        {
            if (_disposed) return;
        }
        try
        {
            if (!IsFailed) Flush();
        }
        catch (CowfishException)
        {
            // Nothing that was promised durable is lost: only commits made without waiting can be.
        }
        lock (_stateGate)
        {
            if (_disposed) return;
            _disposed = true;
            Monitor.PulseAll(_stateGate);
        }
        if (_ownsDevice) _device.Dispose();
    }
}

/// <summary>What <c>cowfish info</c> shows.</summary>
public sealed record PoolInfo(
    uint FormatVersion,
    Guid PoolId,
    ulong Generation,
    int BlockSize,
    ulong TotalBlocks,
    ulong UsedBlocks,
    ulong FreeBlocks,
    int Trees,
    DateTimeOffset Created)
{
    public ulong SizeBytes => TotalBlocks * (ulong)BlockSize;
}
