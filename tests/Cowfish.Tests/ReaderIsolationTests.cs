using System.Buffers.Binary;
using Cowfish.Devices;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// Readers scan while the writer commits thousands of transactions. Each reader must see exactly
/// the state of the generation it pinned, however long it lives: if any block it can reach were
/// reused, its scans would fail a checksum or return other data.
/// </summary>
public sealed class ReaderIsolationTests(ITestOutputHelper output)
{
    private const int Keys = 400;

    private static byte[] BE(long n) { var k = new byte[8]; BinaryPrimitives.WriteInt64BigEndian(k, n); return k; }

    /// <summary>The deterministic content after commit <paramref name="c"/>: key k holds the last commit that wrote it, and commit c deletes key (c*7 % Keys) when c % 5 == 0.</summary>
    private static SortedDictionary<byte[], byte[]> Expected(long commits)
    {
        var m = new SortedDictionary<byte[], byte[]>(BytesComparer.Instance);
        for (long c = 1; c <= commits; c++) Apply(c, (k, v) => m[k] = v, k => m.Remove(k));
        m[BE(-1)] = BE(commits);
        return m;
    }

    private static void Apply(long c, Action<byte[], byte[]> put, Action<byte[]> delete)
    {
        for (int j = 0; j < 3; j++) put(BE((c * 13 + j * 101) % Keys), BE(c));
        if (c % 5 == 0) delete(BE(c * 7 % Keys));
    }

    [Fact]
    public async Task LongLivedReadersKeepTheirSnapshotWhileTheWriterCommitsThousands()
    {
        int commits = 3000;
        using var pool = Pool.Create(new MemoryDevice(), new PoolOptions { CacheNodes = 64 });
        TreeId t;
        using (var tx = pool.BeginWrite())
        {
            t = tx.CreateTree();
            tx.Put(t, BE(-1), BE(0));
            tx.Commit();
        }
        var errors = new List<string>();
        long verified = 0;
        var done = new CancellationTokenSource();
        var readers = Enumerable.Range(0, 3).Select(r => Task.Factory.StartNew(() =>
        {
            var rng = new Random(r);
            try
            {
                while (!done.IsCancellationRequested)
                {
                    using var rt = pool.BeginRead();
                    Assert.True(rt.TryGet(t, BE(-1), out var cv));
                    long c = BinaryPrimitives.ReadInt64BigEndian(cv);
                    var want = Expected(c).ToList();
                    // Scan the same snapshot again and again while the writer moves on.
                    int rounds = 1 + rng.Next(6);
                    for (int round = 0; round < rounds; round++)
                    {
                        var got = rt.Scan(t).ToList();
                        if (got.Count != want.Count || !got.Zip(want).All(p => BytesComparer.Instance.Equals(p.First.Key, p.Second.Key) && BytesComparer.Instance.Equals(p.First.Value, p.Second.Value)))
                            throw new Exception($"reader {r} at commit {c}, round {round}: {got.Count} entries, expected {want.Count}");
                        Thread.Sleep(rng.Next(3));
                    }
                    Interlocked.Increment(ref verified);
                }
            }
            catch (Exception e)
            {
                lock (errors) errors.Add(e.ToString());
            }
        }, TaskCreationOptions.LongRunning)).ToArray();

        // At least `commits` commits, and on until the readers have verified enough snapshots.
        for (long c = 1; c <= commits || (Interlocked.Read(ref verified) < 100 && c < 100_000 && errors.Count == 0); c++)
        {
            using var tx = pool.BeginWrite();
            Apply(c, (k, v) => tx.Put(t, k, v), k => tx.Delete(t, k));
            tx.Put(t, BE(-1), BE(c));
            tx.Commit();
        }
        done.Cancel();
        await Task.WhenAll(readers);
        output.WriteLine($"{verified} snapshots verified during {commits} commits");
        Assert.Empty(errors);
        Assert.True(verified > 10, $"only {verified} snapshots verified");
        TreeModel.AssertClean(pool, "after the run");
    }

    [Fact]
    public void ABlockFreedWhileAReaderPinsItIsNotReused()
    {
        using var pool = Pool.Create(new MemoryDevice());
        TreeId t;
        using (var tx = pool.BeginWrite())
        {
            t = tx.CreateTree();
            for (int i = 0; i < 2000; i++) tx.Put(t, BE(i), new byte[50]);
            tx.Commit();
        }
        var rt = pool.BeginRead();
        var before = rt.Scan(t).Select(kv => kv.Key).ToList();
        // Rewrite every leaf many times: without the pin, the old leaves would be reused.
        for (int round = 0; round < 50; round++)
        {
            using var tx = pool.BeginWrite();
            for (int i = 0; i < 2000; i += 10) tx.Put(t, BE(i), BE(round));
            tx.Commit();
        }
        Assert.True(pool.Space.PendingBlocks > 0, "blocks freed under the reader should still be waiting");
        Assert.Equal(before, rt.Scan(t).Select(kv => kv.Key).ToList());
        Assert.All(rt.Scan(t), kv => Assert.Equal(50, kv.Value.Length));
        rt.Dispose();
        using (var tx = pool.BeginWrite()) { tx.Put(t, BE(0), BE(0)); tx.Commit(); }
        using (var tx = pool.BeginWrite()) { tx.Put(t, BE(0), BE(1)); tx.Commit(); }
        Assert.True(pool.Space.PendingBlocks < 20, $"{pool.Space.PendingBlocks} blocks still pending after the reader left");
        TreeModel.AssertClean(pool, "after the reader left");
    }
}
