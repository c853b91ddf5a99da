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
/// Power cuts during a relocation: at every flush it makes, in every crash mode, the pool reopens
/// clean with every file's bytes unchanged (relocation never changes content), and a second
/// relocation on the recovered pool finishes the job.
/// </summary>
public sealed class RelocationCrashTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> SeedCases() => Seeds.For(1).Select(s => new object[] { s });

    [Theory]
    [MemberData(nameof(SeedCases))]
    public void EveryFlushOfARelocationRecovers(int seed)
    {
        Seeds.Announce(output, nameof(EveryFlushOfARelocationRecovers), seed);
        var setup = new FaultInjectingDevice();
        Dictionary<string, byte[]> model;
        using (var fs = new FileSystem(Pool.Create(setup, RelocationTests.Small), ownsPool: true))
            model = RelocationTests.Populate(fs, new Random(seed), files: 4);
        var image = setup.LiveImage();

        var probe = new FaultInjectingDevice(image);
        ulong target;
        using (var fs = new FileSystem(Pool.Open(probe, RelocationTests.Small), ownsPool: true))
        {
            target = PoolRelocator.CompactTarget(fs);
            var r = PoolRelocator.Relocate(fs, target);
            Assert.True(r.Shrunk && r.DataBlocksMoved > 0, r.ToString());
        }
        long flushes = probe.FlushCount;
        output.WriteLine($"{flushes} flushes, target {target} blocks");
        Assert.True(flushes >= 4, $"only {flushes} flushes");
        var rng = new Random(seed);
        int shrunk = 0;
        for (long cut = 0; cut < flushes; cut++)
        {
            var dev = new FaultInjectingDevice(image);
            dev.CutAtFlush(cut);
            try
            {
                using var fs = new FileSystem(Pool.Open(dev, RelocationTests.Small), ownsPool: true);
                PoolRelocator.Relocate(fs, target);
            }
            catch (CowfishException) { }
            Assert.True(dev.IsDead, $"cut at flush {cut} never happened");
            foreach (var mode in Enum.GetValues<CrashMode>())
            {
                string ctx = $"seed {seed}, cut at flush {cut}, {mode}";
                using var fs = new FileSystem(Pool.Open(MemoryDevice.FromImage(dev.CrashImage(mode, rng)), RelocationTests.Small), ownsPool: true);
                var report = PoolChecker.Check(fs.Pool);
                Assert.True(report.IsClean, $"{ctx}: check found faults:\n{string.Join("\n", report.Faults.Take(20))}");
                RelocationTests.AssertContents(fs, model, ctx);
                if (fs.Pool.Info().TotalBlocks == target) shrunk++;
                // Relocating again finishes the job.
                var r = PoolRelocator.Relocate(fs, target);
                Assert.Equal(target, fs.Pool.Info().TotalBlocks);
                TreeModel.AssertClean(fs.Pool, ctx + " after relocating again");
                RelocationTests.AssertContents(fs, model, ctx + " after relocating again");
            }
        }
        output.WriteLine($"{shrunk} crash images were already shrunk");
    }

    /// <summary>
    /// One-block slices, each made durable: a power cut between any two slices (sampled to about
    /// 40 cuts) finds a pool in which the walk stopped midway, shared blocks copied for some of
    /// their referrers only and the forwarding tree holding the copies. It reopens clean with
    /// every byte in place, and a new relocation drops the leftover tree and finishes.
    /// </summary>
    [Theory]
    [MemberData(nameof(SeedCases))]
    public void APowerCutBetweenSlicesRecovers(int seed)
    {
        Seeds.Announce(output, nameof(APowerCutBetweenSlicesRecovers), seed);
        var setup = new FaultInjectingDevice();
        Dictionary<string, byte[]> model;
        using (var fs = new FileSystem(Pool.Create(setup, RelocationTests.Small), ownsPool: true))
            model = RelocationTests.Populate(fs, new Random(seed), files: 4);
        var image = setup.LiveImage();
        RelocationOptions Sliced(Pool pool) => new() { SliceBudget = TimeSpan.Zero, AfterSlice = pool.Flush };

        var probe = new FaultInjectingDevice(image);
        ulong target;
        using (var fs = new FileSystem(Pool.Open(probe, RelocationTests.Small), ownsPool: true))
        {
            target = PoolRelocator.CompactTarget(fs);
            var r = PoolRelocator.Relocate(fs, target, Sliced(fs.Pool));
            output.WriteLine(r.ToString());
            Assert.True(r.Slices > 20, r.ToString());
        }
        long flushes = probe.FlushCount;
        long step = Math.Max(1, flushes / 40);
        var rng = new Random(seed);
        int leftovers = 0;
        for (long cut = rng.Next((int)step); cut < flushes; cut += step)
        {
            var dev = new FaultInjectingDevice(image);
            dev.CutAtFlush(cut);
            try
            {
                using var fs = new FileSystem(Pool.Open(dev, RelocationTests.Small), ownsPool: true);
                PoolRelocator.Relocate(fs, target, Sliced(fs.Pool));
            }
            catch (CowfishException) { }
            Assert.True(dev.IsDead, $"cut at flush {cut} never happened");
            var mode = CrashMode.RandomSubset;
            string ctx = $"seed {seed}, cut at flush {cut} of {flushes}";
            using (var fs = new FileSystem(Pool.Open(MemoryDevice.FromImage(dev.CrashImage(mode, rng)), RelocationTests.Small), ownsPool: true))
            {
                var report = PoolChecker.Check(fs.Pool);
                Assert.True(report.IsClean, $"{ctx}: check found faults:\n{string.Join("\n", report.Faults.Take(20))}");
                RelocationTests.AssertContents(fs, model, ctx);
                using (var rt = fs.Pool.BeginRead())
                    if (rt.ListTrees().Any(id => rt.Tree(id).Kind == Trees.TreeKind.Relocation)) leftovers++;
                // What the crashed pass copied but had not yet shared stays unshared (the leftover
                // forwarding tree is dropped), so the first target may no longer fit: relocate as
                // `cowfish relocate` does, from the compact target, raising it if need be.
                ulong atCrash = fs.Pool.Info().TotalBlocks;
                var again = PoolRelocator.Relocate(fs, PoolRelocator.CompactTarget(fs), new RelocationOptions { GrowTarget = true });
                Assert.Equal(again.Target, fs.Pool.Info().TotalBlocks);
                Assert.True(fs.Pool.Info().TotalBlocks <= atCrash, $"{ctx}: the pool grew ({atCrash} → {fs.Pool.Info().TotalBlocks} blocks)");
                TreeModel.AssertClean(fs.Pool, ctx + " after relocating again");
                RelocationTests.AssertContents(fs, model, ctx + " after relocating again");
                using var rt2 = fs.Pool.BeginRead();
                Assert.DoesNotContain(rt2.ListTrees(), id => rt2.Tree(id).Kind == Trees.TreeKind.Relocation);
            }
        }
        output.WriteLine($"{flushes} flushes; {leftovers} crash images held a forwarding tree");
        Assert.True(leftovers > 0, "no cut landed inside a pass");
    }
}
