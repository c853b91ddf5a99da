using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Relocation;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// Relocation: shrinking a pool moves every live block out of the tail, keeps every byte and all
/// sharing (clones, snapshots, range clones), and leaves a pool that check finds clean.
/// </summary>
public sealed class RelocationTests(ITestOutputHelper output)
{
    internal static readonly PoolOptions Small = new() { GrowthBlocks = 256, CacheNodes = 512, DropBudgetPerCommit = 64 };

    /// <summary>
    /// Builds a pool whose live data sits at its tail and whose head is free: files, a whole-file
    /// clone, a range clone, a read-only snapshot and a writable one, then deletes the first files
    /// written (at the head). Returns the model: path → bytes.
    /// </summary>
    internal static Dictionary<string, byte[]> Populate(FileSystem fs, Random rng, int files = 6)
    {
        var model = new Dictionary<string, byte[]>();
        fs.CreateVolume("v");
        fs.CreateFile("v/head");
        var head = new byte[16 << 20];
        rng.NextBytes(head);
        fs.Write("v/head", 0, head);
        for (int i = 0; i < files; i++)
        {
            string p = $"v/f{i}";
            fs.CreateFile(p);
            var data = new byte[rng.Next(1, 400_000)];
            rng.NextBytes(data);
            // Many small writes: many extents and extent-tree nodes.
            for (int off = 0; off < data.Length; off += 8192)
                fs.Write(p, off, data.AsSpan(off, Math.Min(8192, data.Length - off)));
            model[p] = data;
        }
        fs.Remove("v/head");
        fs.Reclaim();
        fs.Clone("v/f0", "v/clone0");
        model["v/clone0"] = model["v/f0"].ToArray();
        fs.CreateFile("v/ranged");
        fs.CloneRange("v/f1", 0, 0, "v/ranged", 8192);
        var ranged = new byte[8192 + model["v/f1"].Length];
        model["v/f1"].CopyTo(ranged, 8192);
        model["v/ranged"] = ranged;
        fs.Snapshot("v", "snap", readOnly: true);
        fs.Snapshot("v", "wsnap");
        foreach (var (p, d) in model.ToList()) { model["snap" + p[1..]] = d.ToArray(); model["wsnap" + p[1..]] = d.ToArray(); }
        // Diverge the writable snapshot a little, so that it shares part of each tree only.
        var patch = new byte[5000];
        rng.NextBytes(patch);
        string last = $"wsnap/f{files - 1}";
        fs.Write(last, 100, patch);
        if (model[last].Length < 5100) Array.Resize(ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(model, last), 5100);
        patch.CopyTo(model[last], 100);
        fs.Flush();
        return model;
    }

    internal static void AssertContents(FileSystem fs, Dictionary<string, byte[]> model, string ctx)
    {
        foreach (var (p, want) in model)
        {
            var got = fs.ReadAll(p);
            Assert.True(got.AsSpan().SequenceEqual(want), $"{ctx}: {p} differs at byte {got.AsSpan().CommonPrefixLength(want)} ({got.Length} vs {want.Length} bytes)");
        }
    }

    [Theory]
    [MemberData(nameof(SeedCases))]
    public void ShrinkMovesTheTailAndKeepsBytesAndSharing(int seed)
    {
        Seeds.Announce(output, nameof(ShrinkMovesTheTailAndKeepsBytesAndSharing), seed);
        var dev = new MemoryDevice();
        using var fs = new FileSystem(Pool.Create(dev, Small), ownsPool: true);
        var model = Populate(fs, new Random(seed));
        var before = PoolChecker.Check(fs.Pool);
        Assert.True(before.IsClean, string.Join("\n", before.Faults.Take(10)));
        var usage = fs.Usage();
        long length = dev.Length;
        ulong target = PoolRelocator.CompactTarget(fs);
        Assert.True(target < fs.Pool.Info().TotalBlocks, $"the test pool has nothing to shrink ({target} of {fs.Pool.Info().TotalBlocks})");

        var result = PoolRelocator.Relocate(fs, target);
        output.WriteLine(result.ToString());

        Assert.True(result.Shrunk);
        Assert.Equal(target, fs.Pool.Info().TotalBlocks);
        Assert.True(dev.Length < length, $"device {dev.Length} bytes, was {length}");
        Assert.Equal((long)target * 4096, dev.Length);
        Assert.True(result.DataBlocksMoved > 0, "nothing lay in the tail");
        var after = PoolChecker.Check(fs.Pool);
        Assert.True(after.IsClean, string.Join("\n", after.Faults.Take(20)));
        Assert.Equal(before.SharedBlocks, after.SharedBlocks);
        Assert.Equal(usage, fs.Usage());
        AssertContents(fs, model, "after relocation");

        // The shrunk pool reopens clean, with the same bytes, and takes new work.
        fs.Dispose();
        using var again = new FileSystem(Pool.Open(MemoryDevice.FromImage(dev.ToArray()), Small), ownsPool: true);
        AssertContents(again, model, "after reopen");
        again.CreateFile("v/new");
        again.Write("v/new", 0, new byte[1 << 20], durable: true);
        TreeModel.AssertClean(again.Pool, "after new work");
    }

    [Fact]
    public void UsedBlocksAndSharedBytesAreUnchanged()
    {
        var dev = new MemoryDevice();
        using var fs = new FileSystem(Pool.Create(dev, Small), ownsPool: true);
        var model = Populate(fs, new Random(7), files: 10);
        var before = PoolChecker.Check(fs.Pool);
        var usage = fs.Usage();
        var snapUsage = fs.Usage("snap");
        PoolRelocator.Relocate(fs, PoolRelocator.CompactTarget(fs));
        var after = PoolChecker.Check(fs.Pool);
        Assert.True(after.IsClean, string.Join("\n", after.Faults.Take(20)));
        output.WriteLine($"used {before.UsedBlocks} → {after.UsedBlocks}, shared {before.SharedBlocks} → {after.SharedBlocks}");
        Assert.Equal(before.SharedBlocks, after.SharedBlocks);
        Assert.Equal(before.UsedBlocks, after.UsedBlocks);
        Assert.Equal(usage, fs.Usage());
        Assert.Equal(snapUsage, fs.Usage("snap"));
        AssertContents(fs, model, "after relocation");
    }

    [Fact]
    public void ATargetTooSmallIsRefused()
    {
        using var fs = new FileSystem(Pool.Create(new MemoryDevice(), Small), ownsPool: true);
        Populate(fs, new Random(3), files: 2);
        Assert.Throws<InvalidRequestException>(() => PoolRelocator.Relocate(fs, 64));
        TreeModel.AssertClean(fs.Pool, "after a refused relocation");
    }

    public static IEnumerable<object[]> SeedCases() => Seeds.For(2).Select(s => new object[] { s });

}

/// <summary>Defrag rewrites a fragmented, exclusively held file contiguously, and leaves shared files alone.</summary>
public sealed class RelocationDefragTests(ITestOutputHelper output)
{
    [Fact]
    public void AFragmentedFileBecomesContiguousWithTheSameBytes()
    {
        using var fs = new FileSystem(Pool.Create(new MemoryDevice(), RelocationTests.Small), ownsPool: true);
        fs.CreateVolume("v");
        fs.CreateFile("v/a");
        fs.CreateFile("v/b");
        var rng = new Random(11);
        var a = new byte[2 << 20];
        rng.NextBytes(a);
        // Interleaved writes of two files, in a shuffled order: a's blocks end up scattered.
        var order = Enumerable.Range(0, a.Length / 4096).OrderBy(_ => rng.Next()).ToList();
        foreach (int blk in order)
        {
            fs.Write("v/a", blk * 4096L, a.AsSpan(blk * 4096, 4096));
            fs.Write("v/b", blk * 4096L, new byte[4096]);
        }
        fs.PunchHole("v/a", 40 * 4096, 8 * 4096);
        a.AsSpan(40 * 4096, 8 * 4096).Clear();
        int before = fs.Fragments("v/a");
        var r = Defragmenter.Defragment(fs, "v/a");
        output.WriteLine(r.ToString());
        Assert.Equal(before, r.FragmentsBefore);
        Assert.True(before > 50, $"the file was not fragmented ({before})");
        Assert.True(r.FragmentsAfter <= 4, $"{r.FragmentsAfter} fragments after defrag");
        Assert.Equal(a, fs.ReadAll("v/a"));
        Assert.Equal(2, fs.DataRanges("v/a").Count); // the hole stays a hole
        TreeModel.AssertClean(fs.Pool, "after defrag");
    }

    [Fact]
    public void ASharedFileIsLeftAlone()
    {
        using var fs = new FileSystem(Pool.Create(new MemoryDevice(), RelocationTests.Small), ownsPool: true);
        fs.CreateVolume("v");
        fs.CreateFile("v/a");
        for (int i = 0; i < 64; i += 2) { fs.Write("v/a", i * 4096L, new byte[4096]); fs.Write("v/a", (i + 1) * 4096L, new byte[4096]); fs.CreateFile($"v/x{i}"); fs.Write($"v/x{i}", 0, new byte[4096]); }
        fs.Write("v/a", 0, Enumerable.Range(0, 4096 * 64).Select(i => (byte)i).Where((_, i) => i % 3 == 0).ToArray());
        fs.Clone("v/a", "v/c");
        var usage = fs.Usage();
        var r = Defragmenter.Defragment(fs, "v/a");
        Assert.Equal(0, r.BytesRewritten);
        Assert.True(r.SharedBytes > 0);
        Assert.Equal(usage, fs.Usage());
        Assert.Equal(fs.ReadAll("v/c"), fs.ReadAll("v/a"));
        TreeModel.AssertClean(fs.Pool, "after defrag of a shared file");
    }
}
