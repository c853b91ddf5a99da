using System.Collections.Concurrent;
using Cowfish.Devices;
using Cowfish.Format;

namespace Cowfish.Trees;

/// <summary>
/// Reads and writes metadata blocks, with a cache of decoded nodes. Clean nodes are immutable,
/// so readers on any thread share them without locks. The cache is bounded by a CLOCK sweep.
/// </summary>
internal sealed class NodeStore
{
    private sealed class Entry(Node node)
    {
        public readonly Node Node = node;
        public volatile bool Referenced = true;
    }

    private readonly IBlockDevice _device;
    private readonly ConcurrentDictionary<ulong, Entry> _cache = new();
    private readonly int _capacity;
    // Serialises eviction sweeps only; lookups and inserts never take it.
    private readonly object _sweepGate = new();
    private long _reads;
    // Entries in _cache, kept by hand: ConcurrentDictionary.Count takes every lock of the table.
    private long _count;

    [ThreadStatic] private static byte[]? t_buffer;

    public NodeStore(IBlockDevice device, int cacheNodes)
    {
        _device = device;
        _capacity = Math.Max(64, cacheNodes);
    }

    public IBlockDevice Device => _device;

    /// <summary>Called with the first failed write, before it is thrown: the pool then refuses all work.</summary>
    public Action<Exception>? WriteFailed { get; set; }

    private void DeviceWrite(ulong address, ReadOnlySpan<byte> block)
    {
        try { _device.Write(Layout.ByteOffset(address), block); }
        catch (DeviceIOException e)
        {
            WriteFailed?.Invoke(e);
            throw new EngineFailedException(e);
        }
    }
    public long Reads => Interlocked.Read(ref _reads);

    private static byte[] Buffer => t_buffer ??= GC.AllocateUninitializedArray<byte>(Layout.BlockSize, pinned: true);

    /// <summary>Reads a node, validating its checksum, address and layout.</summary>
    public Node Read(ulong address)
    {
        Interlocked.Increment(ref _reads);
        if (Instruments.NodeCacheLookup(_cache, address, out var e))
        {
            e.Referenced = true;
            return e.Node;
        }
        var buf = Buffer;
        ReadBlock(address, buf);
        var node = Node.Decode(buf, address);
        Insert(address, node);
        return node;
    }

    /// <summary>Reads a node without caching it (check walks the whole pool and must not flush the cache).</summary>
    public Node ReadUncached(ulong address)
    {
        if (_cache.TryGetValue(address, out var e)) return e.Node;
        var buf = Buffer;
        ReadBlock(address, buf);
        return Node.Decode(buf, address);
    }

    public void ReadBlock(ulong address, Span<byte> block)
    {
        if (address < Layout.FirstDataBlock)
            throw new CorruptionException(address, "block pointer", $">= {Layout.FirstDataBlock}", address.ToString());
        _device.Read(Layout.ByteOffset(address), block[..Layout.BlockSize]);
    }

    /// <summary>Writes a clean node at its address and caches it.</summary>
    public void Write(Node node)
    {
        System.Diagnostics.Debug.Assert(!node.Dirty && node.Address >= Layout.FirstDataBlock, "writing a dirty or unplaced node");
        var buf = Buffer;
        node.Encode(buf);
        DeviceWrite(node.Address, buf);
        Insert(node.Address, node);
    }

    /// <summary>Writes a non-node metadata block and drops any cached node at that address.</summary>
    public void WriteBlock(ulong address, ReadOnlySpan<byte> block)
    {
        Forget(address);
        DeviceWrite(address, block);
    }

    public void Forget(ulong address)
    {
        if (_cache.TryRemove(address, out _)) Interlocked.Decrement(ref _count);
    }

    public void Clear()
    {
        _cache.Clear();
        Interlocked.Exchange(ref _count, 0);
    }

    private void Insert(ulong address, Node node)
    {
        var e = new Entry(node);
        if (_cache.TryAdd(address, e)) Interlocked.Increment(ref _count);
        else _cache[address] = e;
        if (Interlocked.Read(ref _count) > _capacity) Sweep();
    }

    private void Sweep()
    {
        if (!Monitor.TryEnter(_sweepGate)) return;
        try
        {
            // CLOCK: a referenced entry gets a second chance, an unreferenced one goes. Two passes
            // always reach the target, since the first clears every bit it passes.
            int target = _capacity * 3 / 4;
            for (int pass = 0; pass < 2 && Interlocked.Read(ref _count) > target; pass++)
                foreach (var kv in _cache)
                {
                    if (Interlocked.Read(ref _count) <= target) break;
                    if (kv.Value.Referenced) kv.Value.Referenced = false;
                    else Forget(kv.Key);
                }
        }
        finally { Monitor.Exit(_sweepGate); }
    }
}
