using Cowfish.Devices;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Cowfish.Trees;
using Xunit;

namespace Cowfish.Tests;

/// <summary>Nodes are their pages, and pages are recycled: a page is never reused while a reader holds its node.</summary>
public sealed class PageTests
{
    private static byte[] Key(int i) => BitConverter.GetBytes(System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(i));

    [Fact]
    public void AReaderKeepsItsPageAcrossCachePressureEvictionAndCommits()
    {
        using var pool = Pool.Create(new MemoryDevice(), new PoolOptions { CacheNodes = 64 }, ownsDevice: true);
        TreeId t;
        using (var tx = pool.BeginWrite())
        {
            t = tx.CreateTree();
            for (int i = 0; i < 3000; i++) tx.Put(t, Key(i), new byte[40 + i % 50]);
            tx.Commit();
        }
        var held = pool.BeginRead();
        var cursor = held.Tree(t).Cursor();
        cursor.Seek(Key(1500));
        byte[] key = cursor.KeySpan.ToArray(), value = cursor.ValueSpan.ToArray();
        Assert.Equal(Key(1500), key);

        long handedOut = pool.Store.Pages.Created + pool.Store.Pages.Reused;
        var rng = new Random(5);
        Churn(pool, t, rng);
        Assert.True(pool.Store.Pages.Created + pool.Store.Pages.Reused > handedOut + 5000, "the cache did not turn over");
        Assert.True(key.AsSpan().SequenceEqual(cursor.KeySpan), "the held key changed under its reader");
        Assert.True(value.AsSpan().SequenceEqual(cursor.ValueSpan), "the held value changed under its reader");
        // The held state still reads whole, key by key, as it was.
        int n = 0;
        foreach (var kv in held.Scan(t)) { Assert.Equal(Key(n), kv.Key); Assert.Equal(40 + n % 50, kv.Value.Length); n++; }
        Assert.Equal(3000, n);

        // Once the long reader is gone, pages are recycled again.
        held.Dispose();
        long reused = pool.Store.Pages.Reused;
        Churn(pool, t, rng);
        Assert.True(pool.Store.Pages.Reused > reused + 1000, $"pages reused after the reader left: {pool.Store.Pages.Reused - reused}");
        TreeModel.AssertClean(pool, "after page churn");
    }

    private static void Churn(Pool pool, TreeId t, Random rng)
    {
        for (int round = 0; round < 30; round++)
        {
            using (var tx = pool.BeginWrite())
            {
                // Overwrite every key the held leaf holds, and others, with other bytes.
                for (int j = 0; j < 300; j++)
                {
                    int k = j < 40 ? 1480 + j : rng.Next(3000);
                    var v = new byte[40 + rng.Next(60)];
                    rng.NextBytes(v);
                    tx.Put(t, Key(k), v);
                }
                tx.Commit();
            }
            using var other = pool.BeginRead();
            Assert.Equal(3000, other.Scan(t).Count()); // reads every node: the cache of 64 turns over
        }
    }

    [Fact]
    public void EpochsHoldPagesBackOnlyWhileSomeoneIsInside()
    {
        var pages = new PagePool(64);
        long e = pages.Enter();
        var page = pages.Rent();
        pages.Retire(page);
        for (int i = 0; i < 10; i++) Assert.NotSame(page, pages.Rent()); // its reader is still inside
        pages.Exit(e);
        bool back = false;
        for (int i = 0; i < 10 && !back; i++) back = ReferenceEquals(page, pages.Rent());
        Assert.True(back, "a retired page came back once nobody could hold it");
    }
}
