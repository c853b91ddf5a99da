using Cowfish.Allocation;
using Cowfish.Format;
using Xunit;

namespace Cowfish.Tests;

public sealed class SpaceMapTests
{
    [Fact]
    public void MultiBlockRequestsAreContiguousAndThePoolGrowsOnDemand()
    {
        var map = new SpaceMap(64) { GrowthIncrement = 32 };
        ulong a = map.Allocate(10);
        ulong b = map.Allocate(30);
        Assert.Equal(Layout.FirstDataBlock, a);
        Assert.Equal(a + 10, b);
        ulong c = map.Allocate(40); // does not fit in 64 blocks: the map grows
        Assert.True(map.TotalBlocks >= c + 40);
        for (ulong x = c; x < c + 40; x++) Assert.True(map.IsAllocated(x));
        Assert.Equal(80UL + Layout.FirstDataBlock, map.CountAllocated());
    }

    [Fact]
    public void FreedBlocksWaitForDurabilityAndReaders()
    {
        var map = new SpaceMap(40);
        ulong a = map.Allocate(4);
        map.CommitTransaction(1);
        map.Free(a, 4);                 // freed by generation 2
        map.CommitTransaction(2);
        Assert.False(map.IsAllocated(a));
        Assert.Equal(4UL, map.PendingBlocks);
        map.Release(durableGeneration: 1, oldestPinnedGeneration: 5);
        Assert.NotEqual(a, map.Allocate(4)); // generation 2 not durable yet
        map.Release(durableGeneration: 2, oldestPinnedGeneration: 1);
        Assert.Equal(4UL, map.PendingBlocks); // a reader still pins generation 1
        map.Release(durableGeneration: 2, oldestPinnedGeneration: 2);
        Assert.Equal(0UL, map.PendingBlocks);
        Assert.Equal(a, map.Allocate(4));
    }

    [Fact]
    public void BlocksAllocatedAndFreedInOneTransactionAreReusableAtOnce()
    {
        var map = new SpaceMap(40);
        ulong a = map.Allocate(3);
        map.Free(a, 3);
        Assert.Equal(0UL, map.PendingBlocks);
        Assert.Equal(a, map.Allocate(3));
    }

    [Fact]
    public void AbortPutsBothBitmapsBack()
    {
        var map = new SpaceMap(40);
        ulong kept = map.Allocate(2);
        map.CommitTransaction(1);
        ulong before = map.CountAllocated();
        ulong n = map.Allocate(5);
        map.Free(kept, 2);
        map.AbortTransaction();
        Assert.Equal(before, map.CountAllocated());
        Assert.True(map.IsAllocated(kept));
        Assert.Equal(n, map.Allocate(5)); // the aborted run is free again
    }

    [Fact]
    public void DoubleFreeIsReportedAsCorruption()
    {
        var map = new SpaceMap(40);
        ulong a = map.Allocate(1);
        map.CommitTransaction(1);
        map.Free(a, 1);
        var e = Assert.Throws<CorruptionException>(() => map.Free(a, 1));
        Assert.Equal(a, e.Address);
        Assert.Throws<CorruptionException>(() => map.Free(1000, 1));
    }

    [Fact]
    public void PagesRoundTrip()
    {
        var map = new SpaceMap(Layout.BitsPerPage * 2 + 100);
        var rng = new Random(4);
        for (int i = 0; i < 200; i++) map.Allocate((uint)rng.Next(1, 50));
        var copy = new SpaceMap(map.TotalBlocks);
        var block = new byte[Layout.BlockSize];
        for (ulong p = 0; p < map.PageCount; p++)
        {
            map.EncodePage(p, block);
            copy.LoadPage(p, block);
        }
        Assert.Equal(map.CountAllocated(), copy.CountAllocated());
        for (ulong b = 0; b < map.TotalBlocks; b++) Assert.Equal(map.IsAllocated(b), copy.IsAllocated(b));
    }
}
