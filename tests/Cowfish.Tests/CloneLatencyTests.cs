using System.Diagnostics;
using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Format;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// While a file of 10^5 extents is cloned, reads and writes of its source keep going: no single
/// operation waits for the whole clone. The latency figures themselves are the benchmark's job.
/// </summary>
public sealed class CloneLatencyTests(ITestOutputHelper output)
{
    private const int Extents = 100_000;

    /// <summary>Builds a file of <see cref="Extents"/> one-block extents, every other block, in one transaction.</summary>
    private static void Fragmented(FileSystem fs, string volume, string name)
    {
        fs.CreateFile($"{volume}/{name}");
        var (rec, ino) = fs.ResolveFile(PoolPath.Parse($"{volume}/{name}"));
        var block = new byte[Layout.BlockSize];
        using var tx = fs.Pool.BeginWrite();
        var v = new VolumeWriter(FileSystem.GetVolume(tx, FileSystem.VolumeDirectory(tx), volume), tx);
        v.ChangeData(ino, v.GetInode(ino), tree =>
        {
            for (ulong i = 0; i < Extents; i++)
            {
                // The blocks hold whatever they held: record their checksums as they are.
                ulong disk = fs.Pool.Space.Allocate(1);
                fs.Pool.Device.Read(Layout.ByteOffset(disk), block);
                tree.Put(FileKeys.ExtentKey(2 * i), new Extent(disk, 1, 0, 1, false, [Crc32C.Compute(block)]).Encode());
            }
        }, 2UL * Extents * Layout.BlockSize);
        tx.Commit();
    }

    [Fact]
    public async Task ReadsAndWritesOfTheSourceNeverWaitForTheWholeClone()
    {
        using var fs = new FileSystem(Pool.Create(new MemoryDevice(), new PoolOptions { CacheNodes = 100_000 }), ownsPool: true);
        fs.CreateVolume("v");
        Fragmented(fs, "v", "src");
        long size = 2L * Extents * Layout.BlockSize;

        // Whole-file clone: O(1), it reads a handful of nodes whatever the extent count.
        long reads = fs.Pool.Store.Reads;
        fs.Clone("v/src", "v/whole");
        Assert.True(fs.Pool.Store.Reads - reads < 100, $"a whole-file clone read {fs.Pool.Store.Reads - reads} nodes");

        // Range clone of everything, in slices, with a reader and a writer on the source meanwhile.
        fs.CreateFile("v/dst");
        var done = new CancellationTokenSource();
        var readLat = new List<double>();
        var writeLat = new List<double>();
        Task Loop(bool write, List<double> lat) => Task.Factory.StartNew(() =>
        {
            var rng = new Random(write ? 1 : 2);
            var buf = new byte[Layout.BlockSize];
            while (!done.IsCancellationRequested)
            {
                long off = rng.NextInt64(size / Layout.BlockSize) * Layout.BlockSize;
                var t = Stopwatch.StartNew();
                if (write) fs.Write("v/src", off, buf); else fs.Read("v/src", off, buf);
                lat.Add(t.Elapsed.TotalMilliseconds);
            }
        }, TaskCreationOptions.LongRunning);
        var reader = Loop(false, readLat);
        var writer = Loop(true, writeLat);
        await Task.Delay(50);
        var sw = Stopwatch.StartNew();
        int gen2 = GC.CollectionCount(2);
        await Task.Run(() => fs.CloneRange("v/src", 0, 0, "v/dst", 0));
        gen2 = GC.CollectionCount(2) - gen2;
        double cloneMs = sw.Elapsed.TotalMilliseconds;
        done.Cancel();
        await Task.WhenAll(reader, writer);

        output.WriteLine($"range clone of {Extents} extents: {cloneMs:F0} ms, {gen2} gen2 collections; reads: {readLat.Count}, worst {readLat.Max():F1} ms; writes: {writeLat.Count}, worst {writeLat.Max():F1} ms");
        Assert.True(readLat.Count > 10 && writeLat.Count > 10, "the source was hardly used during the clone");
        Assert.True(readLat.Max() < cloneMs / 2, $"a read waited {readLat.Max():F1} ms of a {cloneMs:F0} ms clone");
        Assert.True(writeLat.Max() < cloneMs / 2, $"a write waited {writeLat.Max():F1} ms of a {cloneMs:F0} ms clone");
        // The writer filled some holes of the source before the clone froze it, so the copy has
        // at most as many separate data ranges as the untouched whole-file clone, and most of them.
        Assert.Equal(fs.Stat("v/src").Size, fs.Stat("v/dst").Size);
        Assert.InRange(fs.DataRanges("v/dst").Count, Extents * 9 / 10, Extents);
        fs.Remove("v/src");
        fs.Remove("v/whole");
        fs.Remove("v/dst");
        fs.Reclaim();
        TreeModel.AssertClean(fs.Pool, "after the clones");
    }
}
