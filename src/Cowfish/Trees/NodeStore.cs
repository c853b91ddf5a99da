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

    public NodeStore(IBlockDevice device, int cacheNodes)
    {
        _device = device;
        _capacity = Math.Max(64, cacheNodes);
        Pages = new PagePool(_capacity / 4);
    }

    /// <summary>The pages of every node this store reads or a writer builds.</summary>
    public PagePool Pages { get; }

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

    /// <summary>Reads a node, validating its checksum, address and layout.</summary>
    public Node Read(ulong address)
    {
        Interlocked.Increment(ref _reads);
        if (Instruments.NodeCacheLookup(_cache, address, out var e))
        {
            e.Referenced = true;
            return e.Node;
        }
        var node = Pages.Rent();
        try
        {
            ReadBlock(address, node.Page);
            node.Load(address);
        }
        catch
        {
            Pages.Retire(node);
            throw;
        }
        Insert(address, node);
        return node;
    }

    /// <summary>Reads a node without caching it (check walks the whole pool and must not flush the cache).</summary>
    public Node ReadUncached(ulong address)
    {
        if (_cache.TryGetValue(address, out var e)) return e.Node;
        var page = GC.AllocateUninitializedArray<byte>(Layout.BlockSize);
        ReadBlock(address, page);
        return Node.Decode(page, address);
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
        DeviceWrite(node.Address, node.Seal());
        Insert(node.Address, node);
    }

    /// <summary>
    /// Writes clean nodes at their addresses and caches them, one gathered write per run of
    /// consecutive addresses (a spill's nodes come from a next-fit allocator, so most of one spill
    /// is a single run). Sorts <paramref name="nodes"/> by address.
    /// </summary>
    public void WriteAll(List<Node> nodes)
    {
        nodes.Sort(static (a, b) => a.Address.CompareTo(b.Address));
        var run = new List<ReadOnlyMemory<byte>>(Math.Min(nodes.Count, MaxGather));
        for (int i = 0; i < nodes.Count;)
        {
            int j = i;
            run.Clear();
            do
            {
                System.Diagnostics.Debug.Assert(!nodes[j].Dirty && nodes[j].Address >= Layout.FirstDataBlock, "writing a dirty or unplaced node");
                run.Add(nodes[j].SealPage());
                j++;
            }
            while (j < nodes.Count && run.Count < MaxGather && nodes[j].Address == nodes[j - 1].Address + 1);
            try { _device.WriteGather(Layout.ByteOffset(nodes[i].Address), run); }
            catch (DeviceIOException e)
            {
                WriteFailed?.Invoke(e);
                throw new EngineFailedException(e);
            }
            for (; i < j; i++) Insert(nodes[i].Address, nodes[i]);
        }
    }

    /// <summary>Most blocks in one gathered write (the kernel takes at most 1024 buffers).</summary>
    private const int MaxGather = 256;

    /// <summary>Writes a non-node metadata block and drops any cached node at that address.</summary>
    public void WriteBlock(ulong address, ReadOnlySpan<byte> block)
    {
        Forget(address);
        DeviceWrite(address, block);
    }

    public void Forget(ulong address)
    {
        if (_cache.TryRemove(address, out var gone))
        {
            Interlocked.Decrement(ref _count);
            gone.Node.Retire(Pages);
        }
    }

    public void Clear()
    {
        foreach (var address in _cache.Keys) Forget(address);
    }

    private void Insert(ulong address, Node node)
    {
        var e = new Entry(node);
        while (true)
        {
            if (_cache.TryAdd(address, e)) { Interlocked.Increment(ref _count); break; }
            // A node replaced at its address (rewritten in place, or read twice by racing readers):
            // the one that loses its place is retired, unless it is the same node.
            if (_cache.TryGetValue(address, out var old) && _cache.TryUpdate(address, e, old))
            {
                if (!ReferenceEquals(old.Node, node)) old.Node.Retire(Pages);
                break;
            }
        }
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
