using Cowfish.Devices;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;

namespace Cowfish.Tests;

/// <summary>The first failed write or flush is sticky: the pool refuses work until it is reopened, and nothing committed is lost.</summary>
public sealed class FailureTests
{
    private static (FaultInjectingDevice Dev, TreeId Tree) PoolWithData()
    {
        var dev = new FaultInjectingDevice();
        TreeId t;
        using var pool = Pool.Create(dev);
        using (var tx = pool.BeginWrite())
        {
            t = tx.CreateTree();
            for (int i = 0; i < 500; i++) tx.Put(t, BitConverter.GetBytes(i), new byte[20]);
            tx.Commit();
        }
        return (dev, t);
    }

    [Theory]
    [InlineData("write", 1)]
    [InlineData("write", 3)]
    [InlineData("flush", 1)]
    [InlineData("flush", 2)]
    public void AFailedWriteOrFlushIsStickyAndLosesNothing(string what, int n)
    {
        var (dev, t) = PoolWithData();
        var pool = Pool.Open(dev);
        if (what == "write") dev.FailWriteIn(n); else dev.FailFlushIn(n);
        var tx = pool.BeginWrite();
        for (int i = 0; i < 500; i++) tx.Put(t, BitConverter.GetBytes(i), new byte[30]);
        Assert.Throws<EngineFailedException>(() => tx.Commit());
        Assert.True(pool.IsFailed);
        var again = Assert.Throws<EngineFailedException>(() => pool.BeginWrite());
        Assert.Contains("previous I/O failed", again.Message);
        Assert.Throws<EngineFailedException>(() => pool.BeginRead());
        pool.Dispose();

        // What the disk holds is the last commit, or the failed one if its superblock made it.
        using var reopened = Pool.Open(MemoryDevice.FromImage(dev.LiveImage()));
        TreeModel.AssertClean(reopened, "after reopening");
        using var rt = reopened.BeginRead();
        var sizes = rt.Scan(t).Select(kv => kv.Value.Length).Distinct().ToList();
        Assert.Single(sizes);
        Assert.Equal(500, rt.Scan(t).Count());
    }

    [Fact]
    public void AFailedReadDoesNotPoisonThePool()
    {
        var (dev, t) = PoolWithData();
        using var pool = Pool.Open(dev, new PoolOptions { CacheNodes = 64 });
        pool.Store.Clear();
        dev.FailReadIn(1);
        using (var rt = pool.BeginRead())
            Assert.Throws<DeviceIOException>(() => rt.Scan(t).Count());
        Assert.False(pool.IsFailed);
        using (var rt = pool.BeginRead()) Assert.Equal(500, rt.Scan(t).Count());
    }

    [Fact]
    public void AbortLeavesNothingBehind()
    {
        using var pool = Pool.Create(new MemoryDevice());
        TreeId t;
        using (var tx = pool.BeginWrite()) { t = tx.CreateTree(); tx.Put(t, [1], [1]); tx.Commit(); }
        ulong used = pool.Info().UsedBlocks;
        using (var tx = pool.BeginWrite())
        {
            for (int i = 0; i < 5000; i++) tx.Put(t, BitConverter.GetBytes(i), new byte[100]);
            var c = tx.CloneTree(t); // spills mid-transaction
            tx.Put(c, [2], [2]);
            tx.DropTree(t);
            tx.Abort();
        }
        using (var tx = pool.BeginWrite()) { tx.Put(t, [3], [3]); tx.Commit(); }
        TreeModel.AssertClean(pool, "after abort");
        Assert.InRange(pool.Info().UsedBlocks, used - 2, used + 2);
        using var rt = pool.BeginRead();
        Assert.Equal(2, rt.Scan(t).Count());
        Assert.Single(rt.ListTrees());
    }

    [Fact]
    public void APoolIsOpenInOneProcessAtATime()
    {
        string path = Path.Combine(Path.GetTempPath(), $"cowfish-lock-{Guid.NewGuid():N}.pool");
        try
        {
            using var pool = Pool.Create(path);
            Assert.Throws<PoolBusyException>(() => Pool.Open(path));
        }
        finally { File.Delete(path); }
    }
}

/// <summary>A copy-on-write write that fails part-way leaks nothing, and the old data stays readable.</summary>
public sealed class FileFailureTests
{
    [Theory]
    [InlineData("write", 1)]   // the data write itself
    [InlineData("write", 2)]   // a node write of the mapping transaction
    [InlineData("flush", 1)]
    public void AFailedCopyOnWriteWriteLeaksNothing(string what, int n)
    {
        var dev = new FaultInjectingDevice();
        var old = new byte[300_000];
        new Random(1).NextBytes(old);
        using (var fs = new Cowfish.Files.FileSystem(Pool.Create(dev), ownsPool: true))
        {
            fs.CreateVolume("v");
            fs.CreateFile("v/f");
            fs.Write("v/f", 0, old, durable: true);
            fs.Snapshot("v", "s", readOnly: true);
            if (what == "write") dev.FailWriteIn(n); else dev.FailFlushIn(n);
            Assert.ThrowsAny<CowfishException>(() => fs.Write("v/f", 5000, new byte[100_000], durable: true));
            Assert.True(fs.Pool.IsFailed);
            Assert.Throws<EngineFailedException>(() => fs.Write("v/f", 0, new byte[10]));
        }
        foreach (var image in new[] { dev.LiveImage(), dev.CrashImage(CrashMode.DropUnflushed) })
        {
            using var fs = new Cowfish.Files.FileSystem(Pool.Open(MemoryDevice.FromImage(image)), ownsPool: true);
            TreeModel.AssertClean(fs.Pool, $"after a failed {what}");
            Assert.Equal(old, fs.ReadAll("s/f"));
            var now = fs.ReadAll("v/f");
            bool unchanged = now.AsSpan().SequenceEqual(old);
            var expectNew = old.ToArray();
            Array.Clear(expectNew, 5000, 100_000);
            Assert.True(unchanged || now.AsSpan().SequenceEqual(expectNew), "the file is neither the old nor the new content");
        }
    }
}

public sealed class SpaceMapCascadeTests
{
    /// <summary>A device that counts the bytes written to it.</summary>
    private sealed class CountingDevice : IBlockDevice
    {
        private readonly MemoryDevice _inner = new();
        public long BytesWritten;
        public long Length => _inner.Length;
        public void Read(long offset, Span<byte> buffer) => _inner.Read(offset, buffer);
        public void Write(long offset, ReadOnlySpan<byte> buffer) { BytesWritten += buffer.Length; _inner.Write(offset, buffer); }
        public void Flush() { }
        public void SetLength(long length) => _inner.SetLength(length);
        public void Dispose() { }
    }

    [Fact]
    public void ASmallCommitInABigPoolRewritesFewBitmapPages()
    {
        var dev = new CountingDevice();
        // Grow the pool to many bitmap pages (32,512 blocks each) so that a cascade would show.
        using var pool = Pool.Create(dev, new PoolOptions { GrowthBlocks = 400_000 });
        // Grow the pool: a large reservation that cannot fit makes it add 400,000 blocks.
        pool.Space.Unreserve(pool.Space.Reserve(1000), 1000);
        TreeId t;
        using (var tx = pool.BeginWrite()) { t = tx.CreateTree(); tx.Commit(); }
        Assert.True(pool.Space.PageCount >= 10, $"only {pool.Space.PageCount} pages");
        for (int i = 0; i < 20; i++)
        {
            using var tx = pool.BeginWrite();
            tx.Put(t, BitConverter.GetBytes(i), new byte[100]);
            tx.Commit();
        }
        long before = dev.BytesWritten;
        for (int i = 0; i < 20; i++)
        {
            using var tx = pool.BeginWrite();
            tx.Put(t, BitConverter.GetBytes(i), new byte[100]);
            tx.Commit();
        }
        long perCommit = (dev.BytesWritten - before) / 20;
        Assert.True(perCommit <= 12 * 4096, $"a one-key commit wrote {perCommit / 4096} blocks in a pool of {pool.Space.PageCount} bitmap pages");
        // The mechanism: every bitmap page lives inside the range of blocks it describes, so moving
        // it only touches its own bits and never dirties another page.
        using (var rt = pool.BeginRead())
        {
            var tree = new Cowfish.Trees.TreeReader(pool.Store, rt.State.SpaceMapRoot, Cowfish.Trees.TreeKind.SpaceMap);
            foreach (var (page, at) in Cowfish.Transactions.SpaceMapStore.Pages(tree, rt.State.TotalBlocks))
                Assert.True(at.Address / Cowfish.Format.Layout.BitsPerPage == page, $"bitmap page {page} is stored at block {at.Address}, outside its range");
        }
        TreeModel.AssertClean(pool, "after small commits");
    }
}
