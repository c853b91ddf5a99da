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

    /// <summary>
    /// Slices of (at least) one block each: hundreds of commits, each of which must stand on its
    /// own. Every committed state in between checks clean with every byte in place, and at the end
    /// the sharing is exactly what it was (shared nodes and runs were copied once, through the
    /// forwarding tree, though their referrers were reached in different slices).
    /// </summary>
    [Theory]
    [MemberData(nameof(SeedCases))]
    public void OneBlockSlicesKeepEveryCommitCleanAndAllSharing(int seed)
    {
        Seeds.Announce(output, nameof(OneBlockSlicesKeepEveryCommitCleanAndAllSharing), seed);
        using var fs = new FileSystem(Pool.Create(new MemoryDevice(), Small), ownsPool: true);
        var model = Populate(fs, new Random(seed));
        var before = PoolChecker.Check(fs.Pool);
        var usage = fs.Usage();
        int slices = 0;
        var result = PoolRelocator.Relocate(fs, PoolRelocator.CompactTarget(fs), new RelocationOptions
        {
            SliceBudget = TimeSpan.Zero,
            AfterSlice = () =>
            {
                if (++slices % 5 != 0) return;
                var mid = PoolChecker.Check(fs.Pool);
                Assert.True(mid.IsClean, $"after slice {slices}:\n" + string.Join("\n", mid.Faults.Take(20)));
                AssertContents(fs, model, $"after slice {slices}");
            },
        });
        output.WriteLine(result.ToString());
        Assert.True(result.Slices > 20, $"only {result.Slices} slices");
        Assert.Equal(result.Slices, slices);
        var after = PoolChecker.Check(fs.Pool);
        Assert.True(after.IsClean, string.Join("\n", after.Faults.Take(20)));
        output.WriteLine($"used {before.UsedBlocks} → {after.UsedBlocks}, shared {before.SharedBlocks} → {after.SharedBlocks}");
        Assert.Equal(before.SharedBlocks, after.SharedBlocks);
        Assert.Equal(before.UsedBlocks, after.UsedBlocks);
        Assert.Equal(usage, fs.Usage());
        AssertContents(fs, model, "after relocation");
    }

    /// <summary>
    /// Free space below the compact target in single-block holes (random 4 KiB overwrites), while
    /// the tail holds 1 MiB extents: an explicit target is refused with a message that says so
    /// (and leaves the pool clean); without one (GrowTarget, what `cowfish relocate` does), the
    /// target moves up until the extents fit, and the pool still shrinks.
    /// </summary>
    [Fact]
    public void FragmentedFreeSpaceRaisesTheCompactTarget()
    {
        var dev = new MemoryDevice();
        using var fs = new FileSystem(Pool.Create(dev, Small), ownsPool: true);
        var rng = new Random(5);
        fs.CreateVolume("v");
        var model = new Dictionary<string, byte[]>();
        foreach (var (name, mib) in new[] { ("filler", 64), ("big", 64), ("small", 16) })
        {
            fs.CreateFile("v/" + name);
            var data = new byte[mib << 20];
            rng.NextBytes(data);
            fs.Write("v/" + name, 0, data);
            model["v/" + name] = data;
        }
        fs.Remove("v/filler");
        model.Remove("v/filler");
        fs.Reclaim();
        fs.Flush();
        var small = model["v/small"];
        var block = new byte[4096];
        for (int i = 0; i < 3000; i++)
        {
            rng.NextBytes(block);
            int at = rng.Next(small.Length / 4096) * 4096;
            fs.Write("v/small", at, block);
            block.CopyTo(small, at);
        }
        fs.Flush();
        ulong compact = PoolRelocator.CompactTarget(fs);
        ulong before = fs.Pool.Info().TotalBlocks;

        var e = Assert.Throws<InvalidRequestException>(() => PoolRelocator.Relocate(fs, compact));
        output.WriteLine(e.Message);
        Assert.Contains("too fragmented", e.Message);
        TreeModel.AssertClean(fs.Pool, "after the refusal");
        AssertContents(fs, model, "after the refusal");

        var r = PoolRelocator.Relocate(fs, compact, new RelocationOptions { GrowTarget = true });
        output.WriteLine($"{r}, compact target {compact}");
        Assert.True(r.Shrunk, r.ToString());
        Assert.True(r.Target > compact && r.Target < before, r.ToString());
        Assert.Equal(r.Target, fs.Pool.Info().TotalBlocks);
        Assert.Equal((long)r.Target * 4096, dev.Length);
        TreeModel.AssertClean(fs.Pool, "after the relocation");
        AssertContents(fs, model, "after the relocation");
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
