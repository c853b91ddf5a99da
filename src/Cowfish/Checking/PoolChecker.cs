using System.Buffers.Binary;
using Cowfish.Format;
using Cowfish.Transactions;
using Cowfish.Trees;

namespace Cowfish.Checking;

/// <summary>
/// Check (fsck): walks every tree of a committed state, rebuilds every reference count and the
/// set of used blocks from scratch, and compares them with what the pool recorded. It reports every
/// fault it finds, and never trusts a pointer it has not bounded: levels must fall by one at each
/// step, depth is capped, and every address must lie inside the pool.
/// </summary>
public static class PoolChecker
{
    /// <summary>Checks the newest committed state of an open pool. Runs alongside readers and the writer.</summary>
    public static CheckReport Check(Pool pool)
    {
        using var rt = pool.BeginRead();
        return Check(rt);
    }

    /// <summary>Options that run a full check after every commit and fail the commit on a fault.</summary>
    public static PoolOptions Strict(PoolOptions? options = null)
        => (options ?? new PoolOptions()) with { AfterCommit = p => Check(p).ThrowIfFaults() };

    public static CheckReport Check(ReadTransaction rt) => new Walker(rt).Run();

    private sealed class Walker
    {
        private readonly ReadTransaction _rt;
        private readonly NodeStore _store;
        private readonly Superblock _sb;
        private readonly ulong _total;
        private readonly CheckReport _report;
        private readonly Dictionary<ulong, uint> _refs = new();
        private readonly Dictionary<ulong, uint> _runs = new();
        private readonly HashSet<ulong> _visited = new();
        private readonly ulong[] _used;
        private readonly List<ValueRef> _scratch = new();

        public Walker(ReadTransaction rt)
        {
            _rt = rt;
            _store = rt.Pool.Store;
            _sb = rt.State;
            _total = _sb.TotalBlocks;
            _used = new ulong[(_total + 63) / 64];
            _report = new CheckReport { Generation = _sb.Generation, TotalBlocks = _total };
        }

        private void Fault(string kind, ulong addr, string msg) => _report.Faults.Add(new CheckFault(kind, addr, msg));

        public CheckReport Run()
        {
            for (ulong b = 0; b < Layout.FirstDataBlock; b++) MarkUsed(b, 1, "superblock slot");
            NoteOtherSlot();

            // Bookkeeping trees: each node has exactly one reference.
            var treeRoots = new List<(ulong Id, BlockRef Root, TreeKind Kind)>();
            var dropRefs = new List<BlockRef>();
            var namedTrees = new List<(string Name, ulong Id)>();
            Walk(_sb.CatalogRoot, TreeKind.Catalog, (node, i) =>
            {
                var k = node.KeyArray(i);
                var v = node.ValueArray(i);
                if (CatalogKeys.TryParseTree(k, v, out ulong id, out var root, out var kind)) treeRoots.Add((id, root, kind));
                else if (CatalogKeys.TryParseDrop(k, v, out _, out var node2)) dropRefs.Add(node2);
                else if (k.Length > 1 && k[0] == CatalogKeys.NamedPrefix && v.Length == 8) namedTrees.Add((System.Text.Encoding.UTF8.GetString(k, 1, k.Length - 1), BinaryPrimitives.ReadUInt64LittleEndian(v)));
                else Fault("catalog", node.Address, $"entry {i} is neither a tree nor a drop-queue entry");
            });

            var stored = new Dictionary<ulong, ulong>();
            Walk(_sb.RefCountRoot, TreeKind.RefCount, (node, i) =>
            {
                var k = node.KeyArray(i);
                var v = node.ValueArray(i);
                if (k.Length != 8 || v.Length != 8) { Fault("refcount tree", node.Address, $"entry {i} has a {k.Length}-byte key and {v.Length}-byte value, expected 8 and 8"); return; }
                stored[BinaryPrimitives.ReadUInt64BigEndian(k)] = BinaryPrimitives.ReadUInt64LittleEndian(v);
            });

            var pages = new List<(ulong Page, BlockRef At)>();
            Walk(_sb.SpaceMapRoot, TreeKind.SpaceMap, (node, i) =>
            {
                var k = node.KeyArray(i);
                var v = node.ValueArray(i);
                if (k.Length != 8 || v.Length != 16) { Fault("space map", node.Address, $"entry {i} has a {k.Length}-byte key and {v.Length}-byte value, expected 8 and 16"); return; }
                pages.Add((BinaryPrimitives.ReadUInt64BigEndian(k), CatalogKeys.ParseRefValue(v, node.Address)));
            });
            var allocated = LoadBitmap(pages);

            // User trees, which clones share: count every reference.
            _report.Trees = treeRoots.Count;
            foreach (var (id, root, kind) in treeRoots)
            {
                if (kind is TreeKind.Catalog or TreeKind.RefCount or TreeKind.SpaceMap)
                    Fault("catalog", root.Address, $"tree {id} has the bookkeeping kind {kind}");
                else Walk(root, kind, ValueRefsVisitor(kind));
            }
            foreach (var (name, id) in namedTrees)
                if (!treeRoots.Any(t => t.Id == id)) Fault("catalog", _sb.CatalogRoot.Address, $"named tree '{name}' refers to tree {id}, which does not exist");
            _report.PendingDrops = dropRefs.Count;
            foreach (var r in dropRefs) Walk(r, null, null);

            CompareCounts(stored);
            if (_report.Faults.Count == 0)
            {
                // The namespace on top: only once the blocks hold together, so that it reads sound trees.
                try { Cowfish.Files.VolumeChecker.Check(_rt, _store, Fault); }
                catch (CorruptionException e) { Fault("volume", e.Address, e.Message); }
            }
            if (allocated is not null) CompareSpace(allocated);
            return _report;
        }

        private Action<Node, int>? ValueRefsVisitor(TreeKind kind)
        {
            if (ValueReferences.For(kind) is not { } vr) return null;
            return (node, i) =>
            {
                _scratch.Clear();
                vr.Collect(node.Key(i), node.Value(i), _scratch);
                foreach (var r in _scratch.ToArray())
                {
                    if (r.IsSubtree)
                    {
                        // A tree held in a value (a file's extent map): one more reference to its root.
                        if (r.Address < Layout.FirstDataBlock || r.Address >= _total) { Fault("pointer", node.Address, $"entry {i} points to a subtree outside the pool"); continue; }
                        Walk(r.Subtree, r.SubtreeKind, ValueRefsVisitor(r.SubtreeKind));
                        continue;
                    }
                    var (a, n) = (r.Address, r.Blocks);
                    if (n == 0 || a < Layout.FirstDataBlock || a + n > _total) { Fault("extent", node.Address, $"entry {i} references blocks {a}+{n} outside the pool"); continue; }
                    _refs[a] = _refs.GetValueOrDefault(a) + 1;
                    if (_runs.TryGetValue(a, out uint seen))
                    {
                        if (seen != n) Fault("extent", a, $"referenced with lengths {seen} and {n}");
                    }
                    else
                    {
                        _runs[a] = n;
                        MarkUsed(a, n, "data extent");
                    }
                }
            };
        }

        /// <summary>Walks a tree from one reference to <paramref name="root"/>, descending into nodes not seen before.</summary>
        private void Walk(BlockRef root, TreeKind? kind, Action<Node, int>? onEntry)
        {
            var stack = new Stack<(BlockRef At, int Level, byte[]? Lo, byte[]? Hi, int Depth, TreeKind? Kind)>();
            stack.Push((root, -1, null, null, 0, kind));
            while (stack.Count > 0)
            {
                var (at, level, lo, hi, depth, k) = stack.Pop();
                ulong addr = at.Address;
                if (addr < Layout.FirstDataBlock || addr >= _total) { Fault("pointer", addr, $"node pointer outside the pool ({Layout.FirstDataBlock}..{_total - 1})"); continue; }
                _refs[addr] = _refs.GetValueOrDefault(addr) + 1;
                if (!_visited.Add(addr)) continue;
                MarkUsed(addr, 1, "tree node");
                Node node;
                try { node = _store.ReadUncached(addr); }
                catch (CorruptionException e) { Fault("node", addr, e.Message); continue; }
                catch (DeviceIOException e) { Fault("read", addr, e.Message); continue; }
                _report.Nodes++;
                if (node.Generation != at.Generation) Fault("node", addr, $"generation {node.Generation}, but its parent expects {at.Generation} (a lost or misdirected write)");
                if (k is { } want && node.Kind != want) Fault("node", addr, $"kind {node.Kind}, expected {want}");
                if (level >= 0 && node.Level != level) { Fault("node", addr, $"level {node.Level}, expected {level}"); continue; }
                if (depth + node.Level >= Layout.MaxTreeDepth) { Fault("node", addr, $"tree deeper than {Layout.MaxTreeDepth}"); continue; }
                for (int i = node.IsLeaf ? 0 : 1; i < node.Count; i++)
                {
                    var key = node.Key(i);
                    if ((lo is not null && key.SequenceCompareTo(lo) < 0) || (hi is not null && key.SequenceCompareTo(hi) >= 0))
                        Fault("key order", addr, $"entry {i} lies outside the range its parent gives");
                }
                if (node.IsLeaf)
                {
                    // A drop-queue walk has no visitor of its own: the node's kind says how to read its values.
                    var visitor = onEntry ?? ValueRefsVisitor(node.Kind);
                    if (visitor is not null) for (int i = 0; i < node.Count; i++) visitor(node, i);
                    continue;
                }
                for (int i = node.Count - 1; i >= 0; i--)
                {
                    byte[]? clo = i == 0 ? lo : node.KeyArray(i);
                    byte[]? chi = i + 1 < node.Count ? node.KeyArray(i + 1) : hi;
                    stack.Push((node.ChildRef(i), node.Level - 1, clo, chi, depth + 1, node.Kind));
                }
            }
        }

        private ulong[]? LoadBitmap(List<(ulong Page, BlockRef At)> pages)
        {
            ulong want = (_total + Layout.BitsPerPage - 1) / Layout.BitsPerPage;
            var bits = new ulong[want * Layout.BitsPerPage / 64];
            var block = new byte[Layout.BlockSize];
            var seen = new HashSet<ulong>();
            bool ok = true;
            foreach (var (page, at) in pages)
            {
                ulong addr = at.Address;
                if (page >= want) { Fault("space map", addr, $"page {page} is past the last page {want - 1}"); ok = false; continue; }
                if (addr < Layout.FirstDataBlock || addr >= _total) { Fault("space map", addr, $"page {page} is placed outside the pool"); ok = false; continue; }
                seen.Add(page);
                _refs[addr] = _refs.GetValueOrDefault(addr) + 1;
                MarkUsed(addr, 1, "space-map page");
                try { SpaceMapStore.ReadPage(_store, page, at, block); }
                catch (CorruptionException e) { Fault("space map", addr, e.Message); ok = false; continue; }
                for (int w = 0; w < Layout.BitmapBytesPerPage / 8; w++)
                    bits[page * Layout.BitsPerPage / 64 + (ulong)w] = BinaryPrimitives.ReadUInt64LittleEndian(block.AsSpan(Layout.BlockHeaderSize + w * 8));
            }
            if ((ulong)seen.Count != want) { Fault("space map", _sb.SpaceMapRoot.Address, $"{seen.Count} bitmap pages, expected {want}"); ok = false; }
            return ok ? bits : null;
        }

        private void CompareCounts(Dictionary<ulong, ulong> stored)
        {
            foreach (var (addr, expected) in _refs)
            {
                ulong have = stored.GetValueOrDefault(addr, 1UL);
                if (have != expected) Fault("refcount", addr, $"recorded {have} reference(s), found {expected}");
                if (expected > 1) _report.SharedBlocks += _runs.GetValueOrDefault(addr, 1u);
            }
            foreach (var (addr, n) in stored)
            {
                if (!_refs.ContainsKey(addr)) Fault("refcount", addr, $"count {n} recorded for a block nothing references");
                else if (n < 2) Fault("refcount", addr, $"count {n} recorded; counts below 2 must not be stored");
            }
        }

        private void CompareSpace(ulong[] allocated)
        {
            ulong used = 0;
            for (ulong b = 0; b < _total; b++)
            {
                bool u = Get(_used, b), a = Get(allocated, b);
                if (u) used++;
                if (u && !a) Fault("space", b, "block in use but marked free");
                else if (!u && a) Fault("space", b, "block marked in use but nothing references it (leak)");
            }
            for (ulong b = _total; b < (ulong)allocated.Length * 64; b++)
                if (Get(allocated, b)) { Fault("space", b, $"block past the end of the pool ({_total} blocks) marked in use"); break; }
            _report.UsedBlocks = used;
        }

        private void MarkUsed(ulong addr, uint n, string what)
        {
            for (ulong b = addr; b < addr + n && b < _total; b++)
            {
                if (Get(_used, b)) Fault("space", b, $"{what} overlaps another user of the block");
                _used[b >> 6] |= 1UL << (int)(b & 63);
            }
        }

        private void NoteOtherSlot()
        {
            var buf = new byte[Superblock.EncodedSize];
            for (ulong slot = 0; slot < Layout.SuperblockSlots; slot++)
            {
                _store.Device.Read(Layout.ByteOffset(slot), buf);
                var st = Superblock.TryDecode(buf, out var s, out string why);
                // An empty slot is normal right after mkfs; a damaged one is what a torn superblock write leaves.
                if (st is not Superblock.SlotState.Valid and not Superblock.SlotState.NotAPool)
                    _report.Notes.Add($"superblock slot {slot} holds no valid copy ({st}: {why})");
                else if (st == Superblock.SlotState.Valid && s!.PoolId != _sb.PoolId)
                    Fault("superblock", slot, $"slot belongs to pool {s.PoolId}, not {_sb.PoolId}");
            }
        }

        private static bool Get(ulong[] bits, ulong b) => (b >> 6) < (ulong)bits.Length && (bits[b >> 6] & (1UL << (int)(b & 63))) != 0;
    }
}
