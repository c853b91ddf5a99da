using System.Buffers.Binary;
using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Format;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;

namespace Cowfish.Tests;

/// <summary>Deep trees, splits and merges at scale, limits, clones, drops and diffs.</summary>
public sealed class TreeStructureTests
{
    private static byte[] BE(ulong n) { var k = new byte[8]; BinaryPrimitives.WriteUInt64BigEndian(k, n); return k; }

    private static Pool NewPool(MemoryDevice? dev = null) => Pool.Create(dev ?? new MemoryDevice(), new PoolOptions { CacheNodes = 512 });

    [Fact]
    public void LongKeysBuildDeepTreesThatShrinkBackWhenEmptied()
    {
        using var pool = NewPool();
        var model = TreeModel.NewTree();
        TreeId t;
        var rng = new Random(7);
        using (var tx = pool.BeginWrite())
        {
            t = tx.CreateTree();
            // 480-byte keys: 8 per internal node, so 3000 keys need four levels.
            for (int i = 0; i < 3000; i++)
            {
                var k = new byte[480];
                BinaryPrimitives.WriteInt32BigEndian(k, rng.Next());
                var v = BE((ulong)i);
                tx.Put(t, k, v);
                model[k] = v;
            }
            tx.Commit();
        }
        var report = PoolChecker.Check(pool);
        Assert.True(report.IsClean, string.Join("\n", report.Faults));
        Assert.True(report.Nodes > 400, $"only {report.Nodes} nodes");
        var full = new TreeModel();
        full.Trees[t.Value] = model;
        full.AssertMatches(pool, "after filling");

        using (var tx = pool.BeginWrite())
        {
            foreach (var k in model.Keys.ToList())
            {
                if (rng.Next(10) == 0) continue;
                Assert.True(tx.Delete(t, k));
                model.Remove(k);
            }
            tx.Commit();
        }
        full.AssertMatches(pool, "after deleting 90%");
        var after = PoolChecker.Check(pool);
        Assert.True(after.IsClean, string.Join("\n", after.Faults));
        Assert.True(after.Nodes < report.Nodes / 3, $"merges should shrink the tree: {report.Nodes} → {after.Nodes} nodes");

        using (var tx = pool.BeginWrite())
        {
            foreach (var k in model.Keys.ToList()) tx.Delete(t, k);
            model.Clear();
            tx.Commit();
        }
        full.AssertMatches(pool, "after deleting everything");
        var empty = PoolChecker.Check(pool);
        Assert.True(empty.IsClean);
        Assert.Equal(3 + 1, empty.Nodes); // catalog, refcount and space-map roots, and one empty leaf
    }

    [Fact]
    public void SequentialAndReverseInsertsAndLookups()
    {
        using var pool = NewPool();
        TreeId a, b;
        using (var tx = pool.BeginWrite())
        {
            a = tx.CreateTree();
            b = tx.CreateTree();
            for (ulong i = 0; i < 20_000; i++) tx.Put(a, BE(i), BE(i * 3));
            for (ulong i = 20_000; i-- > 0;) tx.Put(b, BE(i), BE(i * 5));
            tx.Commit();
        }
        using var rt = pool.BeginRead();
        for (ulong i = 0; i < 20_000; i += 7)
        {
            Assert.True(rt.TryGet(a, BE(i), out var v));
            Assert.Equal(i * 3, BinaryPrimitives.ReadUInt64BigEndian(v));
            Assert.True(rt.TryGet(b, BE(i), out v));
            Assert.Equal(i * 5, BinaryPrimitives.ReadUInt64BigEndian(v));
        }
        Assert.False(rt.TryGet(a, BE(20_000), out _));
        Assert.Equal(20_000, rt.Scan(a).Count());
        Assert.Equal(Enumerable.Range(100, 50).Select(i => (ulong)i), rt.Scan(a, BE(100), BE(150)).Select(kv => BinaryPrimitives.ReadUInt64BigEndian(kv.Key)));
        Assert.Equal(Enumerable.Range(100, 50).Reverse().Select(i => (ulong)i), rt.Scan(b, BE(100), BE(150), reverse: true).Select(kv => BinaryPrimitives.ReadUInt64BigEndian(kv.Key)));
        TreeModel.AssertClean(pool, "after sequential inserts");
    }

    [Fact]
    public void OversizedKeysAndValuesAreRefused()
    {
        using var pool = NewPool();
        using var tx = pool.BeginWrite();
        var t = tx.CreateTree();
        Assert.Throws<InvalidRequestException>(() => tx.Put(t, new byte[Layout.MaxKeySize + 1], []));
        Assert.Throws<InvalidRequestException>(() => tx.Put(t, [1], new byte[Layout.MaxValueSize + 1]));
        tx.Put(t, new byte[Layout.MaxKeySize], new byte[Layout.MaxValueSize]);
        Assert.Throws<NotFoundException>(() => tx.Put(new TreeId(999), [1], [1]));
        tx.Commit();
        TreeModel.AssertClean(pool, "after refusals");
    }

    [Fact]
    public void CloneIsConstantAndIndependent()
    {
        using var pool = NewPool();
        TreeId src, clone;
        using (var tx = pool.BeginWrite())
        {
            src = tx.CreateTree();
            for (ulong i = 0; i < 50_000; i++) tx.Put(src, BE(i), BE(i));
            tx.Commit();
        }
        long readsBefore = pool.Store.Reads;
        ulong usedBefore = pool.Info().UsedBlocks;
        using (var tx = pool.BeginWrite())
        {
            clone = tx.CloneTree(src);
            tx.Commit();
        }
        // O(1): the clone reads no tree nodes and adds only bookkeeping blocks.
        Assert.True(pool.Store.Reads - readsBefore < 20, $"clone read {pool.Store.Reads - readsBefore} nodes");
        Assert.True(pool.Info().UsedBlocks - usedBefore < 10);
        using (var tx = pool.BeginWrite())
        {
            tx.Put(clone, BE(7), [9]);
            tx.Delete(clone, BE(8));
            tx.Put(src, BE(1_000_000), [1]);
            tx.Commit();
        }
        using (var rt = pool.BeginRead())
        {
            Assert.True(rt.TryGet(src, BE(7), out var v) && v.AsSpan().SequenceEqual(BE(7)));
            Assert.True(rt.TryGet(src, BE(8), out _));
            Assert.False(rt.TryGet(clone, BE(1_000_000), out _));
            Assert.True(rt.TryGet(clone, BE(7), out v) && v.SequenceEqual(new byte[] { 9 }));
            Assert.False(rt.TryGet(clone, BE(8), out _));

            // The diff skips shared subtrees: it reads a handful of nodes, not the whole tree.
            long r0 = pool.Store.Reads;
            var changes = rt.Diff(src, clone).ToList();
            long diffReads = pool.Store.Reads - r0;
            Assert.Equal(3, changes.Count);
            Assert.Equal(BE(7), changes[0].Key);
            Assert.Equal(BE(8), changes[1].Key);
            Assert.Null(changes[1].New);
            Assert.Equal(BE(1_000_000), changes[2].Key);
            Assert.Null(changes[2].New);
            var report = PoolChecker.Check(pool);
            Assert.True(report.IsClean, string.Join("\n", report.Faults));
            Assert.True(diffReads < 30, $"diff read {diffReads} nodes of {report.Nodes}");
        }
    }

    [Fact]
    public void DiffMatchesTheModelAfterRandomChanges()
    {
        var rng = new Random(11);
        using var pool = NewPool();
        TreeId a, b;
        var ma = TreeModel.NewTree();
        using (var tx = pool.BeginWrite())
        {
            a = tx.CreateTree();
            for (int i = 0; i < 5000; i++) { var k = BE((ulong)rng.Next(100_000)); ma[k] = BE((ulong)i); tx.Put(a, k, ma[k]); }
            b = tx.CloneTree(a);
            tx.Commit();
        }
        var mb = new SortedDictionary<byte[], byte[]>(ma, BytesComparer.Instance);
        using (var tx = pool.BeginWrite())
        {
            for (int i = 0; i < 300; i++)
            {
                var k = BE((ulong)rng.Next(100_000));
                if (rng.Next(3) == 0) { tx.Delete(b, k); mb.Remove(k); }
                else { var v = BE((ulong)rng.Next()); tx.Put(b, k, v); mb[k] = v; }
            }
            tx.Commit();
        }
        var want = ma.Keys.Union(mb.Keys, BytesComparer.Instance).OrderBy(k => k, BytesComparer.Instance)
            .Where(k => !(ma.TryGetValue(k, out var x) && mb.TryGetValue(k, out var y) && x.AsSpan().SequenceEqual(y)))
            .ToList();
        using var rt = pool.BeginRead();
        var got = rt.Diff(a, b).ToList();
        Assert.Equal(want.Count, got.Count);
        for (int i = 0; i < want.Count; i++)
        {
            Assert.Equal(want[i], got[i].Key);
            Assert.Equal(ma.GetValueOrDefault(want[i]), got[i].Old);
            Assert.Equal(mb.GetValueOrDefault(want[i]), got[i].New);
        }
        Assert.Empty(rt.Diff(a, a));
        TreeModel.AssertClean(pool, "after diff");
    }

    [Fact]
    public void DroppedCloneSpaceComesBackInBoundedSlices()
    {
        using var pool = Pool.Create(new MemoryDevice(), new PoolOptions { DropBudgetPerCommit = 16 });
        TreeId src;
        using (var tx = pool.BeginWrite())
        {
            src = tx.CreateTree();
            for (ulong i = 0; i < 30_000; i++) tx.Put(src, BE(i), new byte[40]);
            tx.Commit();
        }
        ulong baseline = pool.Info().UsedBlocks;
        TreeId clone;
        using (var tx = pool.BeginWrite())
        {
            clone = tx.CloneTree(src);
            tx.Commit();
        }
        using (var tx = pool.BeginWrite())
        {
            // Touch every leaf of the clone so that it owns a full copy.
            for (ulong i = 0; i < 30_000; i += 20) tx.Put(clone, BE(i), new byte[41]);
            tx.Commit();
        }
        ulong withClone = pool.Info().UsedBlocks;
        Assert.True(withClone > baseline + 50);
        using (var tx = pool.BeginWrite())
        {
            tx.DropTree(clone);
            tx.Commit();
        }
        int commits = 0;
        while (true)
        {
            var r = PoolChecker.Check(pool);
            Assert.True(r.IsClean, string.Join("\n", r.Faults));
            using var tx = pool.BeginWrite();
            int pending = tx.PendingDrops;
            if (pending == 0) break;
            tx.Commit();
            commits++;
        }
        Assert.True(commits > 3, $"reclaim should take several bounded commits, took {commits}");
        // Every block the clone owned is free again (bookkeeping may differ by a block or two).
        Assert.InRange(pool.Info().UsedBlocks, baseline - 2, baseline + 2);
        using var rt = pool.BeginRead();
        Assert.Equal(30_000, rt.Scan(src).Count());
    }
}

/// <summary>Regression: a root that collapses onto a clean child must still be recorded in the catalog.</summary>
public sealed class RootCollapseTests
{
    [Theory]
    [InlineData(3, false)]
    [InlineData(5, true)]
    [InlineData(9, false)]
    [InlineData(17, true)]
    public void DeletingLargeEntriesOneCommitAtATimeKeepsTheCatalogRight(int entries, bool fromTheEnd)
    {
        using var pool = Pool.Create(new MemoryDevice(), PoolChecker.Strict());
        TreeId t;
        var keys = Enumerable.Range(0, entries).Select(i => new[] { (byte)i }).ToList();
        using (var tx = pool.BeginWrite())
        {
            t = tx.CreateTree();
            foreach (var k in keys) tx.Put(t, k, new byte[Layout.MaxValueSize]);
            tx.Commit();
        }
        if (fromTheEnd) keys.Reverse();
        var left = keys.Count;
        foreach (var k in keys)
        {
            using (var tx = pool.BeginWrite())
            {
                Assert.True(tx.Delete(t, k));
                tx.Commit();
            }
            left--;
            using var rt = pool.BeginRead();
            Assert.Equal(left, rt.Scan(t).Count());
        }
    }
}
