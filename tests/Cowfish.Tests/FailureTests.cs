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
