using System.Buffers.Binary;
using Cowfish.Devices;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>Many small commits from many threads share flushes, and every acknowledged one survives.</summary>
public sealed class GroupCommitTests(ITestOutputHelper output)
{
    /// <summary>A device whose flush takes a while, as a real disk's does, so that commits queue up.</summary>
    private sealed class SlowFlushDevice : IBlockDevice
    {
        private readonly MemoryDevice _inner = new();
        public int Flushes;
        public long Length => _inner.Length;
        public void Read(long offset, Span<byte> buffer) => _inner.Read(offset, buffer);
        public void Write(long offset, ReadOnlySpan<byte> buffer) => _inner.Write(offset, buffer);
        public void Flush() { Interlocked.Increment(ref Flushes); Thread.Sleep(2); }
        public void SetLength(long length) => _inner.SetLength(length);
        public void Dispose() { }
    }

    [Fact]
    public void ConcurrentCommitsShareFlushesAndAllSurvive()
    {
        var dev = new SlowFlushDevice();
        const int threads = 8, each = 40;
        TreeId t;
        using (var pool = Pool.Create(dev))
        {
            using (var tx = pool.BeginWrite()) { t = tx.CreateTree(); tx.Commit(); }
            long groupsBefore = pool.DurableFlushes;
            var failures = new List<Exception>();
            var workers = Enumerable.Range(0, threads).Select(th => new Thread(() =>
            {
                try
                {
                    for (int i = 0; i < each; i++)
                    {
                        using var tx = pool.BeginWrite();
                        var k = new byte[8];
                        BinaryPrimitives.WriteInt32BigEndian(k, th);
                        BinaryPrimitives.WriteInt32BigEndian(k.AsSpan(4), i);
                        tx.Put(t, k, k);
                        tx.Commit();
                        // Durable on return: a reader started now sees it.
                        using var rt = pool.BeginRead();
                        if (!rt.TryGet(t, k, out _)) throw new Exception($"thread {th} commit {i} not visible after Commit returned");
                    }
                }
                catch (Exception e) { lock (failures) failures.Add(e); }
            })).ToList();
            workers.ForEach(w => w.Start());
            workers.ForEach(w => w.Join());
            Assert.Empty(failures);
            long groups = pool.DurableFlushes - groupsBefore;
            output.WriteLine($"{threads * each} commits in {groups} durable flush groups");
            Assert.True(groups < threads * each * 3 / 4, $"{groups} flush groups for {threads * each} commits: no grouping happened");
            TreeModel.AssertClean(pool, "after concurrent commits");
        }
        using var reopened = Pool.Open(dev);
        using var r = reopened.BeginRead();
        Assert.Equal(threads * each, r.Scan(t).Count());
    }
}
